"""Real servers for the DNS tests: Knot DNS (``knotd``, Debian package ``knot``), Unbound
(``unbound``, Debian package ``unbound``) as a validating resolver, BIND 9 (``named``, Debian
package ``bind9``) as a second primary for publishing, and a small aiohttp server where
jurisdictions "publish" their boundaries.

:class:`KnotServer` writes a configuration into a temporary directory, starts ``knotd`` as an
ordinary process listening on a free loopback port (UDP and TCP), serving one zone from a master
file (the one ``geoweb zone export`` wrote) and accepting RFC 2136 updates and zone transfers
signed with one TSIG key. :meth:`KnotServer.stop` and :meth:`KnotServer.start` let a test take the
server away mid-run; the zone's current contents (updates included) survive a restart through
Knot's journal.

With ``signed=True`` Knot signs its zones itself (automatic DNSSEC signing, one ECDSA P-256
key per zone); :meth:`KnotServer.trust_anchor` gives the DS record a validating resolver is told to
trust. :class:`UnboundServer` is that resolver: its own configuration in a temporary directory, run
in the foreground (``-d``) on a free loopback port, with a stub zone pointing at Knot for each test
zone. An authoritative server never sets the AD flag; Unbound does when it validated the answer.

Every server runs with its package's default timeouts and limits: what the tests pass against is
what a stock installation does.

When ``knotd``, ``named`` or ``unbound`` is not installed, :func:`require_knotd` /
:func:`require_named` / :func:`require_unbound` skip the test with a one-line reason, or fail it
when ``CI=true`` (CI installs them: see ``.ci/run``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsigkeyring
import dns.zone
import pytest
from aiohttp import web

from discovery.dns_lookup import DnsLookup
from discovery.dns_records import UrlPolicy
from discovery.fetch import Fetcher, make_session
from resolver.sources.dns_registry import DnsDiscovery

KNOTD_CANDIDATES = ("knotd", "/usr/sbin/knotd")
NAMED_CANDIDATES = ("named", "/usr/sbin/named")
UNBOUND_CANDIDATES = ("unbound", "/usr/sbin/unbound")

TSIG_NAME = "geoweb-test-key."
TSIG_ALGORITHM = "hmac-sha256"
TSIG_SECRET = base64.b64encode(b"geoweb test secret, 32 bytes...!").decode()
#: Boundary servers in these tests listen on loopback, which the fetcher refuses by default.
LOOPBACK = ["127.0.0.0/8"]


def _binary(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def knotd_path() -> str | None:
    return _binary(KNOTD_CANDIDATES)


def _require(path: str | None, reason: str) -> str:
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def require_knotd() -> str:
    """The ``knotd`` binary, or skip (locally) / fail (CI) with one line saying why."""
    return _require(
        knotd_path(),
        "knotd not found: install Knot DNS (apt-get install knot) to run the DNS tests",
    )


def require_named() -> str:
    """The ``named`` binary (BIND 9), or skip (locally) / fail (CI) with one line saying why."""
    return _require(
        _binary(NAMED_CANDIDATES),
        "named not found: install BIND 9 (apt-get install bind9) to run the BIND tests",
    )


def require_named_checkzone() -> str:
    """BIND's ``named-checkzone``, or skip (locally) / fail (CI)."""
    return _require(
        _binary(("named-checkzone", "/usr/sbin/named-checkzone")),
        "named-checkzone not found: install BIND 9 (apt-get install bind9) to check zone files",
    )


def require_unbound() -> str:
    """The ``unbound`` binary, or skip (locally) / fail (CI) with one line saying why."""
    return _require(
        _binary(UNBOUND_CANDIDATES),
        "unbound not found: install Unbound (apt-get install unbound) to run the DNSSEC tests",
    )


def _wait_for(
    process: subprocess.Popen[bytes],
    what: str,
    query: dns.message.Message,
    port: int,
    ready: Callable[[dns.message.Message], bool],
    tail: Callable[[], str],
    timeout: float,
) -> None:
    """Poll until ``ready(response)`` is true; raise with the log's tail when the process dies
    or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {tail()}")
        try:
            response = dns.query.udp(query, "127.0.0.1", timeout=0.2, port=port)
            if ready(response):
                return
        except (OSError, dns.exception.DNSException):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer within {timeout} s: {tail()}")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a process this test started (by its id): SIGTERM, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


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


class _ServerProcess:
    """What every DNS server process started here shares: its own process, stopped by its id,
    and its log file."""

    process: subprocess.Popen[bytes] | None
    log: Path

    def stop(self) -> None:
        """Stop the server (the test's own process: by its id)."""
        process, self.process = self.process, None
        _stop(process)

    def tail(self, lines: int = 15) -> str:
        return _tail(self.log, lines)


class _Authoritative(_ServerProcess):
    """An authoritative server of ``zone`` on ``address:port``."""

    zone: str
    address: str
    port: int

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        """A direct query (for assertions): over TCP, no cache in between."""
        return dns.query.tcp(
            dns.message.make_query(name, rdtype), self.address, timeout=5, port=self.port
        )

    def serial(self) -> int:
        return int(self.query(self.zone, "SOA").answer[0][0].serial)


class KnotServer(_Authoritative):
    """One ``knotd`` process serving ``zone`` from ``zone_file`` on ``127.0.0.1:port``.

    ``more_zones`` (name -> master file) are served too. ``signed``: Knot signs every zone it
    serves (automatic DNSSEC signing); :meth:`start` waits until the signed zones are published.
    """

    def __init__(
        self,
        workdir: Path,
        zone: str,
        zone_file: Path,
        *,
        signed: bool = False,
        more_zones: Mapping[str, Path] | None = None,
    ) -> None:
        self.binary = require_knotd()
        self.workdir = workdir
        self.zone = zone.strip(".") + "."
        self.signed = signed
        self.port = free_port()
        self.address = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        (workdir / "db").mkdir(parents=True, exist_ok=True)
        self.zone_files: dict[str, Path] = {}
        for name, source in {zone: zone_file, **(more_zones or {})}.items():
            absolute = name.strip(".") + "."
            self.zone_files[absolute] = workdir / f"{absolute}db"
            shutil.copyfile(source, self.zone_files[absolute])
        self.zone_file = self.zone_files[self.zone]
        self.config = workdir / "knot.conf"
        self.log = workdir / "knotd.log"
        self._write_config()

    def _write_config(self) -> None:
        signing = "    dnssec-signing: on\n    dnssec-policy: geoweb-test\n" if self.signed else ""
        zones = "".join(
            f'  - domain: {name}\n    file: "{path}"\n    acl: publisher\n{signing}'
            for name, path in self.zone_files.items()
        )
        self.config.write_text(
            f"""server:
    rundir: "{self.workdir}"
    listen: 127.0.0.1@{self.port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{self.workdir / "db"}"
    # no fsync per update: a throwaway server; thousands of UPDATEs stay fast
    journal-db-mode: asynchronous
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
policy:
  - id: geoweb-test
    algorithm: ecdsap256sha256
    single-type-signing: on
template:
  - id: default
    storage: "{self.workdir}"
    zonefile-sync: -1
    # by serial: a restart keeps the updates in the journal (difference-no-serial would
    # re-apply the master file over them)
    zonefile-load: difference
    journal-content: all
    journal-max-usage: 512M
zone:
{zones}""",
            encoding="utf-8",
        )

    def start(self, timeout: float = 20.0) -> None:
        """Start ``knotd`` and wait until it answers each zone's SOA (and, signed, its DNSKEY)."""
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
        rdtype = "DNSKEY" if self.signed else "SOA"
        try:
            for zone in self.zone_files:
                _wait_for(
                    self.process,
                    f"knotd ({zone} {rdtype})",
                    dns.message.make_query(zone, rdtype),
                    self.port,
                    lambda r: r.rcode() == dns.rcode.NOERROR and bool(r.answer),
                    self.tail,
                    timeout,
                )
        except RuntimeError:
            self.stop()
            raise

    def trust_anchor(self, zone: str | None = None) -> str:
        """The DS record (SHA-256) of a signed zone's key, as a resolver's trust anchor."""
        name = dns.name.from_text(zone or self.zone)
        keys = self.query(name.to_text(), "DNSKEY").find_rrset(
            dns.message.ANSWER, name, dns.rdataclass.IN, dns.rdatatype.DNSKEY
        )
        entry = next(key for key in keys if key.flags & 0x0001)  # the secure entry point
        return f"{name} DS {dns.dnssec.make_ds(name, entry, 'SHA256')}"

    def transfer(self, zone: str | None = None) -> dns.zone.Zone:
        """The zone as served (signatures included), by a TSIG-signed AXFR."""
        keyring = dns.tsigkeyring.from_text({TSIG_NAME: (TSIG_ALGORITHM, TSIG_SECRET)})
        return dns.zone.from_xfr(
            dns.query.xfr(
                self.address,
                dns.name.from_text(zone or self.zone),
                port=self.port,
                keyring=keyring,
                keyname=TSIG_NAME,
                relativize=False,
                lifetime=30,
            ),
            relativize=False,
        )


class BindServer(_Authoritative):
    """One BIND 9 ``named`` process serving ``zone`` (a dynamic zone: TSIG-signed UPDATE and AXFR
    allowed) from a copy of ``zone_file`` on ``127.0.0.1:port``, in the foreground, with its own
    configuration in ``workdir`` and BIND's default timeouts and limits. No control channel."""

    def __init__(self, workdir: Path, zone: str, zone_file: Path) -> None:
        self.binary = require_named()
        self.workdir = workdir
        self.zone = zone.strip(".") + "."
        self.port = free_port()
        self.address = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.zone_file = workdir / f"{self.zone}db"
        shutil.copyfile(zone_file, self.zone_file)
        self.config = workdir / "named.conf"
        self.log = workdir / "named.log"
        self.config.write_text(
            f"""options {{
    directory "{workdir}";
    pid-file "{workdir / "named.pid"}";
    session-keyfile "{workdir / "session.key"}";
    managed-keys-directory "{workdir}";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
}};
controls {{ }};
key "{TSIG_NAME}" {{
    algorithm {TSIG_ALGORITHM};
    secret "{TSIG_SECRET}";
}};
zone "{self.zone}" {{
    type primary;
    file "{self.zone_file}";
    allow-update {{ key "{TSIG_NAME}"; }};
    allow-transfer {{ key "{TSIG_NAME}"; }};
}};
""",
            encoding="utf-8",
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start ``named -g`` (foreground, log to stderr) and wait until it answers the SOA."""
        if self.process is not None:
            return
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-g", "-n", "1", "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        try:
            _wait_for(
                self.process,
                f"named ({self.zone} SOA)",
                dns.message.make_query(self.zone, "SOA"),
                self.port,
                lambda r: r.rcode() == dns.rcode.NOERROR and bool(r.answer),
                self.tail,
                timeout,
            )
        except RuntimeError:
            self.stop()
            raise


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


class UnboundServer(_ServerProcess):
    """One ``unbound`` process, a validating recursive resolver on ``127.0.0.1:port``.

    ``stubs`` maps each zone to the (address, port) of its authoritative server; ``anchors`` are
    trust anchors (``"zone. DS ..."``). Zones without an anchor are insecure: answered, never
    authenticated. Runs in the foreground under the test's own user, with its configuration in
    ``workdir``; it never touches a system resolver's files.
    """

    def __init__(
        self,
        workdir: Path,
        stubs: Mapping[str, tuple[str, int]],
        anchors: tuple[str, ...] = (),
    ) -> None:
        self.binary = require_unbound()
        self.workdir = workdir
        self.port = free_port()
        self.address = "127.0.0.1"
        self.stubs = dict(stubs)
        self.anchors = anchors
        self.process: subprocess.Popen[bytes] | None = None
        self.config = workdir / "unbound.conf"
        self.log = workdir / "unbound.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()

    def _write_config(self) -> None:
        parents = sorted({zone.strip(".").split(".")[-1] + "." for zone in self.stubs})
        lines = [
            "server:",
            "    interface: 127.0.0.1",
            f"    port: {self.port}",
            "    do-ip6: no",
            "    do-daemonize: no",
            '    username: ""',
            '    chroot: ""',
            f'    directory: "{self.workdir}"',
            f'    pidfile: "{self.workdir / "unbound.pid"}"',
            "    use-syslog: no",
            '    logfile: ""',
            "    verbosity: 1",
            "    num-threads: 1",
            "    access-control: 127.0.0.0/8 allow",
            # Knot listens on loopback, which unbound does not ask by default.
            "    do-not-query-localhost: no",
            '    module-config: "validator iterator"',
            # test., example. etc. are RFC 6761 special names unbound answers itself otherwise.
            *(f'    local-zone: "{parent}" nodefault' for parent in parents),
            *(f'    trust-anchor: "{anchor}"' for anchor in self.anchors),
            "remote-control:",
            "    control-enable: no",
        ]
        for zone, (address, port) in self.stubs.items():
            lines += ["stub-zone:", f'    name: "{zone}"', f"    stub-addr: {address}@{port}"]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 20.0) -> None:
        """Start ``unbound -d`` and wait until it answers a query for the first stub zone."""
        if self.process is not None:
            return
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-d", "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        first = next(iter(self.stubs), ".")
        try:
            _wait_for(
                self.process,
                "unbound",
                dns.message.make_query(first, "SOA"),
                self.port,
                lambda r: True,
                self.tail,
                timeout,
            )
        except RuntimeError:
            self.stop()
            raise


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


@contextlib.asynccontextmanager
async def loopback_discovery(
    server: KnotServer, zone: str, *, timeout: float = 2.0
) -> AsyncIterator[DnsDiscovery]:
    """A resolver that knows nothing (empty DNS and HTTP caches), asking ``server`` for ``zone``
    and fetching boundaries from loopback servers."""
    session = make_session(allow_networks=LOOPBACK)
    try:
        yield DnsDiscovery(
            DnsLookup([server.address], port=server.port, timeout=timeout),
            Fetcher(session, allow_networks=LOOPBACK),
            zone=zone,
            url_policy=UrlPolicy(allow_http_loopback=True),
        )
    finally:
        await session.close()
