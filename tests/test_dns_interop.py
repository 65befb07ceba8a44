"""Publishing to stock primaries: a Knot DNS and a BIND 9 with their packages' default timeouts
(Knot closes a zone transfer whose reader stalls a write for 500 ms), each serving a zone with
only its SOA and NS. The 3,231 US counties are published into it by UPDATE, read back by AXFR,
then one endpoint changes and only that record is sent. A transfer cut half-way is retried."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from dns_server import TSIG_ALGORITHM, TSIG_NAME, TSIG_SECRET, BindServer, KnotServer

from common.models import Endpoint, Jurisdiction
from discovery.dns_publish import Publisher, PublishError, TsigKey
from discovery.zone import ZoneOptions
from resolver.store import Store

ZONE = "interop.test"
KEY = TsigKey(TSIG_NAME, TSIG_SECRET, TSIG_ALGORITHM)
EMPTY_ZONE = f"""$ORIGIN {ZONE}.
$TTL 300
@   SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 1209600 300
@   NS  ns.{ZONE}.
ns  A   127.0.0.1
"""
OPTIONS = ZoneOptions(ZONE, ttl=300, boundary_url="http://127.0.0.1:9/boundaries/{id}.geojson")
SAN_FRANCISCO = "06075"


@pytest.fixture(scope="module")
def counties(counties_db: Path) -> list[Jurisdiction]:
    with Store(counties_db) as store:
        return [
            replace(
                j,
                domain=f"{j.id}.{ZONE}",
                discovery_url=f"https://{j.id}.{ZONE}/discovery.json",
                endpoints=(Endpoint(f"https://{j.id}.{ZONE}/open311/v2/"),),
            )
            for j in store.jurisdictions()
        ]


@pytest.fixture(params=["knot", "bind"])
def primary(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KnotServer | BindServer]:
    zone_file = tmp_path / "empty.zone"
    zone_file.write_text(EMPTY_ZONE, encoding="utf-8")
    server: KnotServer | BindServer
    if request.param == "knot":
        server = KnotServer(tmp_path / "knot", ZONE, zone_file)
    else:
        server = BindServer(tmp_path / "bind", ZONE, zone_file)
    server.start()
    yield server
    server.stop()


def test_counties_published_then_one_endpoint_changed_sends_only_that(
    primary: KnotServer | BindServer, counties: list[Jurisdiction]
) -> None:
    publisher = Publisher(primary.address, ZONE, KEY, port=primary.port)
    plan = publisher.plan(counties, OPTIONS)
    assert plan.switch_to == "g1" and plan.live is None  # an empty zone: the first generation
    assert len(plan.changes) > 10_000
    assert publisher.send(plan) > 10  # more than one UPDATE can hold
    started = time.perf_counter()
    held = publisher.read()
    read_seconds = time.perf_counter() - started
    assert len(held.domains) == len(counties)
    assert set(held.trees) == {"g1"}
    assert read_seconds < 10, read_seconds  # a stock Knot cuts a reader far slower than this
    assert publisher.plan(counties, OPTIONS).empty  # what was sent reads back the same

    moved = [
        replace(j, endpoints=(Endpoint("https://new.sf.example/open311/v2/"),))
        if j.id == SAN_FRANCISCO
        else j
        for j in counties
    ]
    serial = primary.serial()
    plan = publisher.plan(moved, OPTIONS)
    name = f"_open311.{SAN_FRANCISCO}.{ZONE}."
    assert [(c.action, c.name, c.rdtype) for c in plan.changes] == [
        ("delete", name, "TXT"),
        ("add", name, "TXT"),
    ]
    assert plan.changes[1].rdata is not None and "new.sf.example" in plan.changes[1].rdata
    assert publisher.send(plan) == 1
    assert primary.serial() != serial
    record = primary.query(name, "TXT").answer[0].to_text()
    assert "new.sf.example" in record and f"{SAN_FRANCISCO}.{ZONE}/open311" not in record
    assert publisher.plan(moved, OPTIONS).empty


class CuttingProxy:
    """A TCP relay on loopback in front of a DNS server that closes the first ``cuts``
    connections after relaying ``after`` bytes of the server's answer: a server giving up on a
    transfer half-way."""

    def __init__(self, upstream: tuple[str, int], cuts: int, after: int = 30_000) -> None:
        self.upstream = upstream
        self.cuts = cuts
        self.after = after
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            limit = self.after if self.connections <= self.cuts else None
            threading.Thread(target=self._relay, args=(client, limit), daemon=True).start()

    def _relay(self, client: socket.socket, limit: int | None) -> None:
        with client, socket.create_connection(self.upstream) as server:
            query = client.recv(65_536)
            server.sendall(query)
            relayed = 0
            while limit is None or relayed < limit:
                data = server.recv(65_536)
                if not data:
                    break
                if limit is not None:
                    data = data[: limit - relayed]
                client.sendall(data)
                relayed += len(data)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def knot_with_counties(tmp_path: Path, counties: list[Jurisdiction]) -> Iterator[KnotServer]:
    zone_file = tmp_path / "empty.zone"
    zone_file.write_text(EMPTY_ZONE, encoding="utf-8")
    server = KnotServer(tmp_path / "knot", ZONE, zone_file)
    server.start()
    publisher = Publisher(server.address, ZONE, KEY, port=server.port)
    publisher.send(publisher.plan(counties[:400], OPTIONS))
    yield server
    server.stop()


def test_a_transfer_cut_half_way_is_started_again(knot_with_counties: KnotServer) -> None:
    upstream = (knot_with_counties.address, knot_with_counties.port)
    with contextlib.closing(CuttingProxy(upstream, cuts=1)) as proxy:
        held = Publisher("127.0.0.1", ZONE, KEY, port=proxy.port).read()
        assert proxy.connections == 2
        assert len(held.domains) == 400
    with contextlib.closing(CuttingProxy(upstream, cuts=3)) as proxy:
        with pytest.raises(PublishError, match="closed the connection during the transfer, 3"):
            Publisher("127.0.0.1", ZONE, KEY, port=proxy.port).read()
        assert proxy.connections == 3
