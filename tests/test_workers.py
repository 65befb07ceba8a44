"""``geoweb serve --workers 2``: real processes on one loopback port, loaded the way users run it.

Each test starts the command itself, asks over fresh connections until both workers have answered
(``worker.pid`` in ``/healthz``), changes the store from another process, and stops the server
with a signal, checking that no worker outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import box, mapping

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        body: dict[str, Any] = json.loads(response.read())
        return body


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _import(db: Path, tmp: Path, name: str, where: tuple[float, float, float, float]) -> None:
    """``geoweb import`` in a process of its own, as an operator would."""
    feature = {
        "type": "Feature",
        "geometry": mapping(box(*where)),
        "properties": {"id": name, "name": name.title()},
    }
    source = tmp / f"{name}.geojson"
    source.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    command = [sys.executable, "-m", "resolver", "import", str(source), "--db", str(db)]
    command += ["--id-field", "id", "--name-field", "name"]
    command += ["--endpoint-url", f"https://{name}.example/open311/v2/"]
    subprocess.run(command, check=True, capture_output=True, timeout=120, cwd=REPO)


class Served:
    def __init__(self, process: subprocess.Popen[bytes], base: str, log: Path) -> None:
        self.process, self.base, self.log = process, base, log

    def workers(self, want: int = 2, tries: int = 400) -> dict[int, dict[str, Any]]:
        """The latest /healthz of each worker, asking until ``want`` of them have answered."""
        seen: dict[int, dict[str, Any]] = {}
        for _ in range(tries):
            health = _get(f"{self.base}/healthz")  # a new connection each time
            seen[health["worker"]["pid"]] = health
            if len(seen) >= want:
                break
        return seen


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    db = tmp_path / "w.sqlite"
    _import(db, tmp_path, "alpha", (10.0, 10.0, 11.0, 11.0))
    port = _free_port()
    command = [sys.executable, "-m", "resolver", "serve", "--db", str(db), "--port", str(port)]
    command += ["--workers", "2", "--registry-poll", "0.2", "--no-embedded"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()
            try:
                _get(f"{base}/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "geoweb serve did not answer within 90 s"
                time.sleep(0.1)
        yield Served(process, base, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_both_workers_answer_and_follow_an_import(served: Served, tmp_path: Path) -> None:
    workers = served.workers()
    assert len(workers) == 2, "one worker answered every one of 400 connections"
    assert {w["worker"]["number"] for w in workers.values()} == {0, 1}
    assert all(w["worker"]["of"] == 2 for w in workers.values())
    # The refresh, mirror syncs and forwarding run once, in worker 0.
    assert {w["worker"]["number"]: w["worker"]["background"] for w in workers.values()} == {
        0: True,
        1: False,
    }
    assert served.process.pid not in workers  # the parent only supervises
    point = "lat=10.5&long=10.5&type=http%3A%2F%2Fns.geowebdns.org%2F311%2Fjurisdiction"
    assert _get(f"{served.base}/service?{point}")["results"][0]["jurisdiction"] == "alpha"

    _import(tmp_path / "w.sqlite", tmp_path, "beta", (20.0, 20.0, 21.0, 21.0))
    deadline = time.monotonic() + 30
    while True:
        counts = {pid: h["jurisdictions"] for pid, h in served.workers().items()}
        if len(counts) == 2 and set(counts.values()) == {2}:
            break
        assert time.monotonic() < deadline, f"the import did not reach both workers: {counts}"
        time.sleep(0.2)
    # and each answers from it
    answered = set()
    for _ in range(400):
        health = _get(f"{served.base}/healthz")
        body = _get(f"{served.base}/service?{point.replace('10.5', '20.5')}")
        assert body["results"][0]["jurisdiction"] == "beta"
        answered.add(health["worker"]["pid"])
        if len(answered) == 2:
            break
    assert answered == set(workers)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_worker(served: Served, stop: signal.Signals) -> None:
    pids = set(served.workers())
    assert len(pids) == 2
    served.process.send_signal(stop)
    assert served.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a worker outlived geoweb serve"
        time.sleep(0.05)


def test_a_worker_that_dies_stops_the_service(served: Served) -> None:
    pids = set(served.workers())
    assert len(pids) == 2
    os.kill(min(pids), signal.SIGKILL)
    assert served.process.wait(timeout=30) == 1
    assert not any(_alive(pid) for pid in pids)
    assert "stopping the others" in served.log.read_text()
