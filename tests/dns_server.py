"""Real servers for the DNS tests: Knot DNS (``knotd``, Debian package ``knot``) and a small
aiohttp server where jurisdictions "publish" their boundaries.

:class:`KnotServer` writes a configuration into a temporary directory, starts ``knotd`` as an
ordinary process listening on a free loopback port (UDP and TCP), serving one zone from a master
file (the one ``geoweb zone export`` wrote) and accepting RFC 2136 updates and zone transfers
signed with one TSIG key. :meth:`KnotServer.stop` and :meth:`KnotServer.start` let a test take the
server away mid-run; the zone's current contents (updates included) survive a restart through
Knot's journal.

When ``knotd`` is not installed, :func:`require_knotd` skips the test with a one-line reason, or
fails it when ``CI=true`` (CI installs the package: see ``.ci/run``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from aiohttp import web

KNOTD_CANDIDATES = ("knotd", "/usr/sbin/knotd")

TSIG_NAME = "geoweb-test-key."
TSIG_ALGORITHM = "hmac-sha256"
TSIG_SECRET = base64.b64encode(b"geoweb test secret, 32 bytes...!").decode()


def knotd_path() -> str | None:
    for candidate in KNOTD_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def require_knotd() -> str:
    """The ``knotd`` binary, or skip (locally) / fail (CI) with one line saying why."""
    path = knotd_path()
    if path is None:
        reason = "knotd not found: install Knot DNS (apt-get install knot) to run the DNS tests"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port for both UDP and TCP")


class KnotServer:
    """One ``knotd`` process serving ``zone`` from ``zone_file`` on ``127.0.0.1:port``."""

    def __init__(self, workdir: Path, zone: str, zone_file: Path) -> None:
        self.binary = require_knotd()
        self.workdir = workdir
        self.zone = zone.strip(".") + "."
        self.port = free_port()
        self.address = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        (workdir / "db").mkdir(parents=True, exist_ok=True)
        self.zone_file = workdir / "zone.db"
        shutil.copyfile(zone_file, self.zone_file)
        self.config = workdir / "knot.conf"
        self.log = workdir / "knotd.log"
        self._write_config()

    def _write_config(self) -> None:
        self.config.write_text(
            f"""server:
    rundir: "{self.workdir}"
    listen: 127.0.0.1@{self.port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    tcp-io-timeout: 10000
    tcp-remote-io-timeout: 10000
database:
    storage: "{self.workdir / "db"}"
log:
  - target: stderr
    any: info
key:
  - id: {TSIG_NAME}
    algorithm: {TSIG_ALGORITHM}
    secret: {TSIG_SECRET}
acl:
  - id: publisher
    key: {TSIG_NAME}
    action: [transfer, update]
template:
  - id: default
    storage: "{self.workdir}"
    zonefile-sync: -1
    zonefile-load: difference-no-serial
    journal-content: all
zone:
  - domain: {self.zone}
    file: "{self.zone_file}"
    acl: publisher
""",
            encoding="utf-8",
        )

    def start(self, timeout: float = 20.0) -> None:
        """Start ``knotd`` and wait until it answers the zone's SOA."""
        if self.process is not None:
            return
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        query = dns.message.make_query(self.zone, "SOA")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"knotd exited with {self.process.returncode}: {self.tail()}")
            try:
                response = dns.query.udp(query, self.address, timeout=0.2, port=self.port)
                if response.rcode() == dns.rcode.NOERROR and response.answer:
                    return
            except (OSError, dns.exception.DNSException):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"knotd did not serve {self.zone} within {timeout} s: {self.tail()}")

    def stop(self) -> None:
        """Stop the server (the test's own process: by its id)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        """A direct query (for assertions): over TCP, no cache in between."""
        return dns.query.tcp(
            dns.message.make_query(name, rdtype), self.address, timeout=5, port=self.port
        )

    def serial(self) -> int:
        return int(self.query(self.zone, "SOA").answer[0][0].serial)


class DocumentServer:
    """A real aiohttp server on ``127.0.0.1`` (port 0), in a thread of its own so that fixtures of
    any scope can share it: the stand-in for the web servers where jurisdictions publish their
    boundaries. ``documents`` maps a path to ``(content type, body)``; change it at will."""

    def __init__(self) -> None:
        self.documents: dict[str, tuple[str, bytes]] = {}
        self.requests = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        found = self.documents.get(request.path)
        if found is None:
            return web.Response(status=404, text="not found")
        content_type, body = found
        return web.Response(
            body=body, content_type=content_type, headers={"Cache-Control": "max-age=60"}
        )

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def start(self) -> DocumentServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the document server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
