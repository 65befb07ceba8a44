"""The access log of ``geoweb serve``: combined-format lines, written in batches (a request costs
an append, not a write), complete after a stop, and none at all with ``--no-access-log``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from resolver.http.serving import LineBuffer

REPO = Path(__file__).resolve().parent.parent
#: remote - - [time] "request line" status bytes "referer" "user agent" seconds
COMBINED = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET (\S+) HTTP/1\.1" '
    r'(\d{3}) (\d+) "-" "([^"]*)" (\d+\.\d{6})$'
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "resolver", "serve", "--db", str(tmp_path / "a.sqlite")]
    command += ["--port", str(port), "--workers", "1", *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stderr=out)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                return process, base, log
        except OSError:
            assert time.monotonic() < deadline, "geoweb serve did not answer within 90 s"
            time.sleep(0.1)


def _ask(base: str, path: str) -> int:
    request = urllib.request.Request(base + path, headers={"User-Agent": "probe/1"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _lines(log: Path) -> list[re.Match[str]]:
    return [m for line in log.read_text().splitlines() if (m := COMBINED.match(line))]


def test_lines_are_combined_format_written_while_serving_and_at_stop(tmp_path: Path) -> None:
    process, base, log = _serve(tmp_path)
    try:
        assert _ask(base, "/service?lat=37.7793&long=-122.4193") == 200
        assert _ask(base, "/service?lat=x&long=0") == 400
        deadline = time.monotonic() + 5  # written within half a second, not at exit only
        while len([m for m in _lines(log) if m[1].startswith("/service")]) < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert _ask(base, "/healthz?last=1") == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    lines = [m for m in _lines(log) if m[4] == "probe/1"]
    assert [(m[1], m[2]) for m in lines] == [
        ("/service?lat=37.7793&long=-122.4193", "200"),
        ("/service?lat=x&long=0", "400"),
        ("/healthz?last=1", "200"),  # still in the buffer when the stop came
    ]
    assert all(int(m[3]) > 0 and float(m[5]) >= 0 for m in lines)


def test_no_access_log_writes_none(tmp_path: Path) -> None:
    process, base, log = _serve(tmp_path, "--no-access-log")
    try:
        assert _ask(base, "/service?lat=37.7793&long=-122.4193") == 200
        time.sleep(1.0)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert _lines(log) == []
    assert "listening on" in log.read_text()  # the rest of the log is still there


@pytest.mark.parametrize("size", [10, 150])  # under a pipe buffer: nothing reads meanwhile
def test_the_buffer_writes_whole_lines_of_at_most_a_pipe_buffer(size: int) -> None:
    read, write = os.pipe()
    try:
        buffer = LineBuffer(fd=write, limit=1 << 30)
        lines = [f"{k:05d} " + "x" * (k % 700) + "\n" for k in range(size)]
        for line in lines:
            buffer.add(line)  # no running loop: written at once
        buffer.flush()
        os.close(write)
        write = -1
        got = b""
        while chunk := os.read(read, 65536):
            got += chunk
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    assert got.decode() == "".join(lines)


def test_chunks_end_on_line_boundaries() -> None:
    # a packet socket keeps each write apart, so the reader sees the chunks as written
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with reader, writer:
        buffer = LineBuffer(fd=writer.fileno())
        lines = [f"{k} " + "y" * 300 + "\n" for k in range(100)]
        buffer.lines = list(lines)
        buffer.flush()
        writer.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := reader.recv(1 << 16):
            chunks.append(chunk)
    assert b"".join(chunks).decode() == "".join(lines)
    assert len(chunks) > 1 and all(len(c) <= LineBuffer.CHUNK for c in chunks)
    assert all(c.endswith(b"\n") for c in chunks)
