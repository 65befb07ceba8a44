"""``geoweb serve`` from exec to its first 200 on ``/healthz``, and its memory once answering
(and its peak until then): once without the index snapshot beside the store, then from it.

``python -m bench.serve_start DB [--workers N] [--runs R] [--keep-snapshot]`` prints one JSON
object. The server is polled every 5 ms over a fresh connection; the time runs from just before
the exec. Each start also says when the server's log said the registry was loaded and indexed
(``loaded_s``) and that it listens (``listening_s``): the rest to ``first_200_s`` is the first
``/healthz`` itself.

``geoweb serve`` binds its port before it loads the registry, so a connection made during the
load is accepted by the kernel into the listen backlog and waits there until the app is ready.
A poll that gave up on such a connection after a short timeout and tried again would report the
first 200 up to that timeout late, and worse: every abandoned connection stays in the backlog
with its request, and the server answers each of them (a ``/healthz`` over a million entries is
not free) before the one still waiting. So a poll, once connected, waits for the answer (up to
the start's whole time limit), and the time taken is when that answer arrives.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import memory
from .common import REPO
from .httpbench import HOST, free_port


def _healthz(port: int, wait: float) -> bool:
    """Whether ``/healthz`` answers 200 on a new connection: refused at once while the port is not
    bound yet; once connected, waits up to ``wait`` seconds for the answer (see above)."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.settimeout(wait)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = b""
            while len(head) < 12:
                chunk = sock.recv(16)
                if not chunk:  # closed: the server exited, or refused this request
                    break
                head += chunk
            return head.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _memory_mib(pid: int) -> tuple[float, float, float]:
    """(RSS, PSS, peak) of a process and its children (the workers), MiB. RSS counts a page
    shared copy-on-write once per process; PSS splits it between them, so its sum is what they
    take. The peak is the highest any one of them had resident (``VmHWM``): where the index
    build held its temporaries, which a machine must have room for."""
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
    peak = max(memory.peak_rss_kib(p) for p in pids)
    return totals["Rss:"] / 1024, totals["Pss:"] / 1024, peak / 1024


#: Lines of the server's log that mark how far a start got: the registry loaded and indexed (by
#: the first worker to log it), and the socket served.
_MARKS = {"loaded_s": " INFO serving ", "listening_s": " INFO listening on "}


def _marks(log: str, exec_time: float) -> dict[str, float]:
    """Seconds from the exec to each of :data:`_MARKS` (the log's stamps are to the ms)."""
    found: dict[str, float] = {}
    for line in log.splitlines():
        for key, mark in _MARKS.items():
            if key not in found and mark in line:
                second = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
                found[key] = second + int(line[20:23]) / 1000 - exec_time
    return found


def once(db: Path, workers: int, timeout: float = 600.0) -> dict[str, Any]:
    """One start: seconds to the first 200 (and to the marks of the server's log), the RSS
    then."""
    port = free_port()
    command = [sys.executable, "-m", "resolver", "serve", "--db", str(db), "--host", HOST]
    command += ["--port", str(port), "--workers", str(workers), "--no-access-log"]
    with tempfile.TemporaryFile() as log:
        exec_time = time.time()
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
        try:
            while not _healthz(port, max(1.0, timeout - (time.perf_counter() - start))):
                if process.poll() is not None:
                    raise RuntimeError(f"geoweb serve exited with {process.returncode}")
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"geoweb serve did not answer in {timeout} s")
                time.sleep(0.005)
            seconds = time.perf_counter() - start
            rss, pss, peak = _memory_mib(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.seek(0)
        marks = _marks(log.read().decode("utf-8", "replace"), exec_time)
    return {"first_200_s": seconds, **marks, "rss_mib": rss, "pss_mib": pss, "peak_mib": peak}


def run(db: Path, workers: int, runs: int, *, keep_snapshot: bool = False) -> dict[str, Any]:
    """One start without the index snapshot (it is removed first; this start writes it), then
    ``runs`` starts from it: min, median and max of those. ``keep_snapshot``: no start without
    it, when it is there (a snapshot of other boundaries or code is replaced by the first run)."""
    snapshot = Path(f"{db}.index")
    first = None
    if not (keep_snapshot and snapshot.exists()):
        snapshot.unlink(missing_ok=True)
        first = once(db, workers)
    samples = [once(db, workers) for _ in range(runs)]
    times = [s["first_200_s"] for s in samples]
    return {
        "workers": workers,
        "runs": runs,
        **({"without_snapshot": first} if first is not None else {}),
        "min_s": min(times),
        "median_s": statistics.median(times),
        "max_s": max(times),
        "rss_mib": statistics.median(s["rss_mib"] for s in samples),
        "pss_mib": statistics.median(s["pss_mib"] for s in samples),
        "peak_mib": statistics.median(s["peak_mib"] for s in samples),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--keep-snapshot", action="store_true", help="no start without the snapshot when it exists"
    )
    args = parser.parse_args()
    json.dump(run(args.db, args.workers, args.runs, keep_snapshot=args.keep_snapshot), sys.stdout)
    print()


if __name__ == "__main__":
    main()
