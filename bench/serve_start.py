"""``geoweb serve`` from exec to its first 200 on ``/healthz``, and its memory once answering:
once without the index snapshot beside the store, then from it.

``python -m bench.serve_start DB [--workers N] [--runs R]`` prints one JSON object. The server
is polled every 5 ms over a fresh connection; the time runs from just before the exec.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import REPO
from .httpbench import HOST, free_port


def _healthz(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process and its children (the workers), MiB. RSS counts a page shared
    copy-on-write once per process; PSS splits it between them, so its sum is what they take."""
    totals = {"Rss:": 0, "Pss:": 0}
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line else ""
            if key in totals:
                totals[key] += int(line.split()[1])
    return totals["Rss:"] / 1024, totals["Pss:"] / 1024


def once(db: Path, workers: int, timeout: float = 600.0) -> dict[str, Any]:
    """One start: seconds to the first 200, the RSS then."""
    port = free_port()
    command = [sys.executable, "-m", "resolver", "serve", "--db", str(db), "--host", HOST]
    command += ["--port", str(port), "--workers", str(workers), "--no-access-log"]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not _healthz(port):
            if process.poll() is not None:
                raise RuntimeError(f"geoweb serve exited with {process.returncode}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"geoweb serve did not answer in {timeout} s")
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        rss, pss = _memory_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return {"first_200_s": seconds, "rss_mib": rss, "pss_mib": pss}


def run(db: Path, workers: int, runs: int) -> dict[str, Any]:
    """One start without the index snapshot (it is removed first; this start writes it), then
    ``runs`` starts from it: min, median and max of those."""
    Path(f"{db}.index").unlink(missing_ok=True)
    first = once(db, workers)
    samples = [once(db, workers) for _ in range(runs)]
    times = [s["first_200_s"] for s in samples]
    return {
        "workers": workers,
        "runs": runs,
        "without_snapshot": first,
        "min_s": min(times),
        "median_s": statistics.median(times),
        "max_s": max(times),
        "rss_mib": statistics.median(s["rss_mib"] for s in samples),
        "pss_mib": statistics.median(s["pss_mib"] for s in samples),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    json.dump(run(args.db, args.workers, args.runs), sys.stdout)
    print()


if __name__ == "__main__":
    main()
