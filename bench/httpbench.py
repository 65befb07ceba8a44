"""HTTP benchmarks: ``geoweb serve`` and a trivial aiohttp server, each in its own process, loaded
by :mod:`bench.loadgen` in a third process. Everything on 127.0.0.1; every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .common import REPO

HOST = "127.0.0.1"
TYPE_OPEN311 = "http://ns.geowebdns.org/311/jurisdiction"


#: With GEOWEB_BENCH_PIN=1 on 2+ cores, the servers get CPU 0 and the load generator CPU 1. Off
#: by default: on a shared machine a busy neighbour on the pinned core halves one side.
PIN = (
    os.environ.get("GEOWEB_BENCH_PIN") == "1"
    and hasattr(os, "sched_setaffinity")
    and (os.cpu_count() or 1) >= 2
)
SERVER_CPUS = {0}
CLIENT_CPUS = {1}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _own_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process and its live children (``--workers``) have used
    (Linux /proc)."""
    total = _own_cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(OSError):  # a child that has just exited
            total += _own_cpu_seconds(int(child))
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready at {url} after {timeout} s")


@contextmanager
def server(args: list[str], port: int, log: Path):
    """Start a server subprocess (stderr, i.e. its access log, to ``log``); stop it afterwards."""
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            if PIN:
                os.sched_setaffinity(process.pid, SERVER_CPUS)
            _wait_ready(f"http://{HOST}:{port}/healthz", process)
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def geoweb_serve_args(db: Path, port: int, *extra: str) -> list[str]:
    """``geoweb serve`` with one worker unless ``extra`` says otherwise (the last
    ``--workers`` given wins)."""
    args = ["-m", "resolver", "serve", "--host", HOST, "--port", str(port), "--db", str(db)]
    return [*args, "--workers", "1", *extra]


def write_paths(workdir: Path, lats: list[float], longs: list[float]) -> dict[str, Path]:
    """One file of request paths per endpoint, the same points in the same order."""
    kinds = {
        "service": [
            f"/service?lat={lat:.6f}&long={long:.6f}&type={quote(TYPE_OPEN311, safe='')}"
            for lat, long in zip(lats, longs, strict=True)
        ],
        "v1_resolve": [
            f"/v1/resolve?lat={lat:.6f}&long={long:.6f}"
            for lat, long in zip(lats, longs, strict=True)
        ],
    }
    kinds["trivial"] = kinds["service"]  # the trivial server ignores the query
    files = {}
    for kind, paths in kinds.items():
        path = workdir / f"paths-{kind}.txt"
        path.write_text("\n".join(paths) + "\n", encoding="utf-8")
        files[kind] = path
    return files


def load(
    server_pid: int,
    port: int,
    paths: Path,
    concurrency: int,
    duration: float,
    max_requests: int,
) -> dict[str, Any]:
    """One load-generator run; adds the server's CPU time per request (load-generator-free).

    wrk (Debian's ``wrk``, C, event-driven) when it is installed, else bench.loadgen.
    """
    wrk = shutil.which("wrk")
    env = None
    if wrk:
        threads = str(min(concurrency, 2))
        command = [
            wrk,
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, round(duration))}s",
            "-T10s",
        ]
        command += ["-s", str(REPO / "bench" / "wrk_paths.lua"), f"http://{HOST}:{port}"]
        env = {**os.environ, "WRK_PATHS": str(paths)}
    else:
        command = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--base",
            f"http://{HOST}:{port}",
            "--paths",
            str(paths),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
            "--max-requests",
            str(max_requests),
        ]
    preexec = (lambda: os.sched_setaffinity(0, CLIENT_CPUS)) if PIN else None
    cpu_before = cpu_seconds(server_pid)
    done = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=duration + 60,
        preexec_fn=preexec,  # only sets the CPU affinity
        env=env,
    )
    cpu = cpu_seconds(server_pid) - cpu_before
    last_line = done.stdout.decode().strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(last_line)
    if wrk:
        ok = result["requests"] - result["non_2xx"]
        result["statuses"] = (
            {"2xx": ok, "other": result["non_2xx"]} if result["non_2xx"] else {"2xx": ok}
        )
    # Includes the warm-up requests (one per connection); negligible against thousands.
    total = result["requests"] + result["errors"] + concurrency
    result["server_cpu_s"] = cpu
    result["server_cpu_us_per_request"] = 1e6 * cpu / total if total else None
    return result


def run(
    db: Path,
    workdir: Path,
    lats: list[float],
    longs: list[float],
    concurrencies: tuple[int, ...],
    duration: float,
    max_requests: int,
    rounds: int,
) -> dict[str, Any]:
    """Requests/s and latency per endpoint and concurrency, with the /service : trivial ratios.

    Both servers run for the whole measurement; the cells are loaded one at a time, in rounds,
    with the endpoint order rotated, so a burst of other work on the machine does not land on
    one server only. Each cell reports its best round (highest req/s).
    """
    files = write_paths(workdir, lats, longs)
    out: dict[str, Any] = {
        "duration_s": duration,
        "max_requests": max_requests,
        "rounds": rounds,
        "concurrencies": list(concurrencies),
        "load_generator": "wrk (Debian, C, keep-alive, bench/wrk_paths.lua)"
        if shutil.which("wrk")
        else "bench.loadgen (aiohttp client, one process, keep-alive)",
        "pinned_cpus": {"server": sorted(SERVER_CPUS), "client": sorted(CLIENT_CPUS)}
        if PIN
        else None,
    }
    geoweb_port, trivial_port = free_port(), free_port()
    trivial = ["-m", "bench.trivial_server", "--host", HOST, "--port", str(trivial_port)]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        kind: {str(c): [] for c in concurrencies} for kind in ("service", "v1_resolve", "trivial")
    }
    with (
        server(
            geoweb_serve_args(db, geoweb_port), geoweb_port, workdir / "geoweb-serve.log"
        ) as geoweb,
        server(trivial, trivial_port, workdir / "trivial.log") as constant,
    ):
        targets = {
            "service": (geoweb.pid, geoweb_port),
            "v1_resolve": (geoweb.pid, geoweb_port),
            "trivial": (constant.pid, trivial_port),
        }
        kinds = list(targets)
        # Warm-up, not counted: one pass over every point per endpoint, so the rounds measure
        # servers in their steady state (decisions and bodies cached, as after a minute of use).
        for kind in kinds:
            pid, port = targets[kind]
            load(pid, port, files[kind], max(concurrencies), duration, max_requests)
        for round_ in range(rounds):
            for k, c in enumerate(concurrencies):
                shift = (round_ + k) % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    pid, port = targets[kind]
                    cell = load(pid, port, files[kind], c, duration, max_requests)
                    samples[kind][str(c)].append(cell)
    for kind, cells in samples.items():
        out[kind] = {}
        for c, runs in cells.items():
            best = dict(max(runs, key=lambda cell: cell["rps"]))
            best["rps_all_rounds"] = [cell["rps"] for cell in runs]
            best["server_cpu_us_per_request"] = min(
                cell["server_cpu_us_per_request"] for cell in runs
            )
            out[kind][c] = best
    cs = [str(c) for c in concurrencies]
    out["ratio_service_trivial"] = {
        c: out["service"][c]["rps"] / out["trivial"][c]["rps"] for c in cs
    }
    out["ratio_v1_resolve_trivial"] = {
        c: out["v1_resolve"][c]["rps"] / out["trivial"][c]["rps"] for c in cs
    }
    # Capacity ratio independent of the load generator: trivial CPU/request over ours.
    out["cpu_ratio_service_trivial"] = {
        c: out["trivial"][c]["server_cpu_us_per_request"]
        / out["service"][c]["server_cpu_us_per_request"]
        for c in cs
    }
    # Paired: within a round both servers are loaded back to back, so a burst of other work on
    # the machine tends to fall on both; the median over rounds of each round's ratio.
    service, trivial = samples["service"], samples["trivial"]
    out["paired_ratio_service_trivial"] = {
        c: statistics.median(
            s["rps"] / t["rps"] for s, t in zip(service[c], trivial[c], strict=True)
        )
        for c in cs
    }
    out["paired_cpu_ratio_service_trivial"] = {
        c: statistics.median(
            t["server_cpu_us_per_request"] / s["server_cpu_us_per_request"]
            for s, t in zip(service[c], trivial[c], strict=True)
        )
        for c in cs
    }
    return out


def run_peers(
    servers: dict[str, list[str]],
    paths: dict[str, Path],
    concurrencies: tuple[int, ...],
    duration: float,
    max_requests: int,
    rounds: int,
    workdir: Path,
) -> dict[str, Any]:
    """Requests/s and server CPU per request of several servers on the same request paths, all
    up throughout and loaded one at a time in rotated order. ``servers`` maps a name to the
    arguments of ``python`` with ``{port}`` where the port goes; ``paths`` the name to its paths.
    Each cell: the median round (rps and CPU per request), with every round kept."""
    ports = {name: free_port() for name in servers}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {str(c): [] for c in concurrencies} for name in servers
    }
    with contextlib.ExitStack() as stack:
        pids = {}
        for name, args in servers.items():
            port = ports[name]
            filled = [a.replace("{port}", str(port)) for a in args]
            process = stack.enter_context(server(filled, port, workdir / f"{name}.log"))
            pids[name] = process.pid
        names = list(servers)
        for name in names:  # warm-up, not counted
            load(pids[name], ports[name], paths[name], max(concurrencies), duration, max_requests)
        for round_ in range(rounds):
            for k, c in enumerate(concurrencies):
                shift = (round_ + k) % len(names)
                for name in names[shift:] + names[:shift]:
                    cell = load(pids[name], ports[name], paths[name], c, duration, max_requests)
                    samples[name][str(c)].append(cell)
    out: dict[str, Any] = {"rounds": rounds, "duration_s": duration, "servers": {}}
    for name, cells in samples.items():
        out["servers"][name] = {
            c: {
                "rps": statistics.median(r["rps"] for r in runs),
                "rps_all_rounds": [r["rps"] for r in runs],
                "p50_us": statistics.median(r["p50_us"] for r in runs),
                "p99_us": statistics.median(r["p99_us"] for r in runs),
                "server_cpu_us_per_request": statistics.median(
                    r["server_cpu_us_per_request"] for r in runs
                ),
                "non_2xx": sum(r.get("non_2xx", 0) for r in runs),
            }
            for c, runs in cells.items()
        }
    out["paired"] = samples
    return out


def paired_ratios(peers: dict[str, Any], top: str, bottom: str) -> dict[str, dict[str, float]]:
    """Per concurrency: min, median and max over rounds of ``top`` rps / ``bottom`` rps, each
    round's pair loaded back to back."""
    out = {}
    for c, runs in peers["paired"][top].items():
        ratios = [
            a["rps"] / b["rps"] for a, b in zip(runs, peers["paired"][bottom][c], strict=True)
        ]
        out[c] = {
            "min": min(ratios),
            "median": statistics.median(ratios),
            "max": max(ratios),
        }
    return out


def profile_service(
    db: Path, workdir: Path, lats: list[float], longs: list[float], duration: float
) -> Path:
    """``geoweb serve`` under cProfile while /service is loaded at concurrency 8."""
    files = write_paths(workdir, lats, longs)
    port = free_port()
    prof = workdir / "serve.prof"
    args = ["-m", "bench.profserve", str(prof), *geoweb_serve_args(db, port)[2:]]
    with server(args, port, workdir / "profserve.log") as process:
        process.send_signal(signal.SIGUSR1)  # the load alone: not the start, nor the stop
        load(process.pid, port, files["service"], 8, duration, 1_000_000)
        process.send_signal(signal.SIGUSR2)
        _wait_for(prof)
    return prof


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    """Until ``path`` exists and its size holds still (a profile being written), or ``timeout``."""
    deadline = time.monotonic() + timeout
    size = -1
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size == size > 0:
            return
        size = path.stat().st_size if path.exists() else -1
        time.sleep(0.05)
