"""``geoweb publish``: bring a live zone in line with the registry by RFC 2136 dynamic UPDATE,
signed with TSIG (RFC 8945), sending only the difference, and atomically for readers.

1. Read what the zone holds by AXFR (signed with the same key: a publisher may transfer), with
   :mod:`discovery.axfr`'s reader: fast enough for a stock server's I/O timeouts, and a transfer
   the server cuts is started again.
2. Compare the records this tool manages (``_open311.*`` TXT, PTR and TXT under ``_cells.<zone>``)
   with what the registry makes (``discovery.zone.zone_records``). Nothing else in the zone is
   touched (SOA, NS, other people's records).
3. Send the difference so that a reader sees the old registry or the new one, never a mix:

   - **in place**, when it fits in one UPDATE message (``batch`` records, ``MAX_MESSAGE_BYTES``)
     and the cell scheme is unchanged: RFC 2136 applies one UPDATE entirely or not at all;
   - otherwise **through a new cell generation**: the whole cell tree is staged under a fresh
     ``G'._cells.<zone>`` in as many messages as it takes (no reader is pointed there yet), then
     one small UPDATE switches the pointer ``_cells.<zone> TXT "... gen=G'"`` together with the
     changed ``_open311`` records. Readers take the depth and the generation from that one record,
     so every lookup reads one generation. Its prerequisites (the pointer still names the
     generation read, the new generation's marker is still the one written) refuse a switch over
     someone else's change.

   The first message requires the SOA that was read, so a zone changed since is refused, not
   clobbered. Run twice, the second run finds nothing to send (idempotent).
4. Collect garbage: a retired generation is deleted once readers can no longer hold the old
   pointer (``keep_retired``, twice the TTL by default), by the first publish after that; a staging
   left by a failed publish once it is older than ``staging_timeout``. ``_open311`` records of
   domains that left the registry are deleted with the last generation that names them.

A failure before the switch leaves the live generation served. A wrong key is refused by the
server before anything changes; :class:`PublishError` says so.

:class:`Planner` is steps 2 to 4 as a pure function of what the zone holds (:class:`Held`), what
the registry wants (:class:`Wanted`) and the time; :class:`Publisher` is the I/O around it: the
AXFR that reads, the UPDATEs that send.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from common.errors import GeoWebError, InvalidInput
from common.models import Jurisdiction

from .axfr import PTR, TXT, Malformed, Record, TransferCut, transfer
from .dns_records import RECORD_LABEL, txt_zone_text
from .zone import (
    CellsPointer,
    ZoneOptions,
    cells_root,
    generation_number,
    is_generation,
    marker_strings,
    parse_cells_pointer,
    parse_marker,
    zone_records,
)

#: Most records changed per UPDATE message.
DEFAULT_BATCH = 400
#: Most bytes of changes (as master-file text, which is never shorter than their wire form) per
#: UPDATE message: a DNS message over TCP holds 65,535 bytes, TSIG and prerequisites included.
MAX_MESSAGE_BYTES = 56_000
#: A staged generation older than this that never went live is a failed publish's: collected.
DEFAULT_STAGING_TIMEOUT = 3600.0

ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}


class PublishError(GeoWebError):
    """The zone could not be updated; what was not sent did not change."""

    status = 502
    code = "publish_failed"


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key: its name, base64 secret and algorithm (``hmac-sha256`` by default)."""

    name: str
    secret: str
    algorithm: str = "hmac-sha256"

    def __post_init__(self) -> None:
        if self.algorithm.lower().rstrip(".") not in ALGORITHMS:
            raise InvalidInput(
                f"unknown TSIG algorithm {self.algorithm!r}; use one of {', '.join(ALGORITHMS)}"
            )
        try:
            base64.b64decode(self.secret, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"the secret of TSIG key {self.name!r} is not base64") from None

    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, ALGORITHMS[self.algorithm.lower().rstrip(".")])


_BIND_KEY = re.compile(
    r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>[^}]*)\}', re.IGNORECASE | re.DOTALL
)


def read_key_file(path: str | Path) -> TsigKey:
    """A TSIG key from a BIND/nsupdate key file (``key "name" { algorithm ..; secret ".."; };``,
    as ``tsig-keygen`` writes) or a Knot one (``keymgr -t``: ``id:``, ``algorithm:``, ``secret:``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the TSIG key file {path}: {exc.strerror}") from None
    match = _BIND_KEY.search(text)
    if match:
        body = match.group("body")
        algorithm = re.search(r"algorithm\s+\"?([\w.-]+)\"?\s*;", body)
        secret = re.search(r"secret\s+\"([^\"]+)\"\s*;", body)
        if secret:
            return TsigKey(
                match.group("name"),
                secret.group(1),
                algorithm.group(1) if algorithm else "hmac-sha256",
            )
    fields = dict(re.findall(r"^\s*-?\s*(id|algorithm|secret)\s*:\s*(\S+)\s*$", text, re.M))
    if "id" in fields and "secret" in fields:
        return TsigKey(fields["id"], fields["secret"], fields.get("algorithm", "hmac-sha256"))
    raise InvalidInput(
        f"{path} is not a TSIG key file (BIND 'key \"name\" {{ ... }};' or Knot 'id:/secret:')"
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One record to delete or add (``rdata`` ``None``: the whole RRset)."""

    action: str  # "delete" or "add"
    name: str
    rdtype: str
    ttl: int
    rdata: str | None

    def text(self) -> str:
        return f"{self.action} {self.name} {self.ttl} IN {self.rdtype} {self.rdata or '(all)'}"

    def rdata_object(self) -> dns.rdata.Rdata:
        assert self.rdata is not None
        return _rdata(self.rdtype, self.rdata)

    @property
    def size(self) -> int:
        """An upper bound of its bytes in an UPDATE message."""
        return len(self.name) + len(self.rdata or "") + 16


def _rdata(rdtype: str, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(
        dns.rdataclass.IN, rdtype, text, origin=dns.name.root, relativize=False
    )


StepKind = Literal["update", "stage", "switch", "collect", "cleanup"]


@dataclass
class Step:
    """Changes sent together, for one purpose.

    ``update``: in place (one message when the planner made it); ``stage``: a new generation's
    records, in as many messages as needed; ``switch``: one message that makes the staged
    generation live, with ``requires`` (name, type, rdata texts; empty: the RRset must not exist)
    as prerequisites; ``collect``: deleting old generations; ``cleanup``: deleting ``_open311``
    records nothing names any more.
    """

    kind: StepKind
    changes: list[Change] = field(default_factory=list)
    requires: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)


@dataclass
class Plan:
    """The changes that bring the zone in line with the registry, and the SOA they start from.

    ``changes`` is everything, in sending order; ``steps`` groups it (a plan made by hand with no
    steps is sent as one ``update`` step, in batches).
    """

    zone: dns.name.Name
    soa: str | None
    changes: list[Change] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    live: str | None = None  #: the generation live when the zone was read
    switch_to: str | None = None  #: the generation staged and switched to
    collected: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  #: old generations kept for readers
    deferred: int = 0  #: _open311 records of departed domains kept while a generation names them
    outside_switch: int = 0  #: changed _open311 records that did not fit in the switch

    @property
    def empty(self) -> bool:
        return not self.changes

    def summary(self) -> str:
        adds = sum(c.action == "add" for c in self.changes)
        text = f"{adds} record(s) to add, {len(self.changes) - adds} to delete in {self.zone}"
        if self.switch_to:
            was = f" (from {self.live})" if self.live else ""
            text += (
                f"; cells staged as generation {self.switch_to} and switched to in one UPDATE{was}"
            )
        elif any(s.kind == "update" for s in self.steps):
            text += "; in place, in one UPDATE"
        if self.collected:
            text += f"; collecting old generation(s) {', '.join(self.collected)}"
        if self.kept:
            text += f"; kept for readers still using them: {', '.join(self.kept)}"
        if self.deferred:
            text += (
                f"; {self.deferred} _open311 record(s) of departed domains kept until the "
                "generation naming them is collected"
            )
        if self.outside_switch:
            text += (
                f"; {self.outside_switch} changed _open311 record(s) did not fit in the "
                "switching UPDATE and are sent before it"
            )
        return text


RRsets = dict[tuple[str, str], tuple[int, frozenset[str]]]


@dataclass
class Held:
    """What the zone holds of the records this tool manages.

    ``trees`` maps a generation (``""``: cells directly under ``_cells``, from before
    generations) to its cell RRsets keyed by the name *relative to its root* (``y.8.q.9``,
    ``*.q.9``), so two generations compare directly.
    """

    soa: str | None = None
    pointer: tuple[int, frozenset[str]] | None = None
    markers: dict[str, tuple[int, str]] = field(default_factory=dict)
    trees: dict[str, RRsets] = field(default_factory=dict)
    domains: RRsets = field(default_factory=dict)

    @property
    def live(self) -> CellsPointer | None:
        if self.pointer is None:
            return None
        for text in sorted(self.pointer[1]):
            pointer = parse_cells_pointer(_txt_strings(text))
            if pointer is not None:
                return pointer
        return None

    def generations(self) -> set[str]:
        return set(self.trees) | set(self.markers)


def _txt_strings(text: str) -> list[bytes]:
    return list(_rdata("TXT", text).strings)  # type: ignore[attr-defined]


def _canonical_text(text: str, rdtype: str) -> str:
    """Record data as comparable text: PTR targets absolute and lowercase; TXT as dnspython and
    ``dns_records.txt_zone_text`` both print it (quoted strings, ``\\DDD`` escapes)."""
    if rdtype == "PTR":
        return text.lower() if text.endswith(".") else text.lower() + "."
    return text


def _add_to(rrsets: RRsets, key: tuple[str, str], ttl: int, texts: frozenset[str]) -> None:
    old = rrsets.get(key)
    rrsets[key] = (ttl, texts | old[1] if old else texts)


@dataclass
class Wanted:
    """The records the registry makes, as :class:`Held` holds them: the cell pointer and its
    TTL, the ``_open311`` RRsets, and the cells relative to their generation's root."""

    pointer: CellsPointer
    ttl: int
    domains: RRsets
    cells: RRsets


class Planner:
    """The pure half of publishing: from what the zone holds, what the registry wants and the
    time, the plan of changes. No I/O, so every case is tested without a server.

    ``keep_retired``: seconds a retired generation is kept (default: twice the TTL of the
    pointer, the longest a reader caches it); ``staging_timeout``: age after which a staged
    generation that never went live is collected; ``batch``: most records per UPDATE.
    """

    def __init__(
        self,
        zone: str,
        *,
        batch: int = DEFAULT_BATCH,
        keep_retired: float | None = None,
        staging_timeout: float = DEFAULT_STAGING_TIMEOUT,
    ) -> None:
        self.zone = dns.name.from_text(zone)
        self.batch = batch
        self.keep_retired = keep_retired
        self.staging_timeout = staging_timeout
        self._zone_text = self.zone.to_text().lower()
        self._cells = f"_cells.{self._zone_text}"

    def held(self, soa: str | None, records: Iterable[Record]) -> Held:
        """What the zone holds of the records this tool manages, from a transfer's records."""
        cells, under, label = self._cells, "." + self._cells, RECORD_LABEL + "."
        grouped: dict[tuple[str, int], tuple[int, set[str]]] = {}
        for name, number, ttl, rdata in records:
            # what this tool manages: PTR and TXT under _cells, and _open311 TXT
            if rdata is None or (number != TXT and number != PTR):
                continue
            in_cells = name.endswith(under) or name == cells
            if not in_cells and (number != TXT or not name.startswith(label)):
                continue
            entry = grouped.get((name, number))
            if entry is None:
                grouped[name, number] = (ttl, {rdata})
            else:
                entry[1].add(rdata)
                if ttl < entry[0]:
                    grouped[name, number] = (ttl, entry[1])
        held = Held(soa=soa)
        for (name, number), (ttl, texts) in grouped.items():
            rdtype = "PTR" if number == PTR else "TXT"
            canonical = frozenset(_canonical_text(t, rdtype) for t in texts)
            self._file(held, name, rdtype, ttl, canonical)
        return held

    def _file(self, held: Held, name: str, rdtype: str, ttl: int, texts: frozenset[str]) -> None:
        """Put one managed RRset where it belongs: pointer, marker, a generation's tree, or the
        ``_open311`` records."""
        if name == self._cells:
            if rdtype == "TXT":
                held.pointer = (ttl, texts)
            return
        if not name.endswith("." + self._cells):
            _add_to(held.domains, (name, rdtype), ttl, texts)
            return
        labels = name[: -len(self._cells) - 1].split(".")
        generation = labels[-1] if is_generation(labels[-1]) else ""
        prefix = labels[:-1] if generation else labels
        if not prefix:
            if rdtype == "TXT":
                held.markers[generation] = (ttl, sorted(texts)[0])
            return
        _add_to(held.trees.setdefault(generation, {}), (".".join(prefix), rdtype), ttl, texts)

    def wanted(self, jurisdictions: Sequence[Jurisdiction], options: ZoneOptions) -> Wanted:
        """The registry's records, cells relative to their generation's root."""
        options = replace(options, origin=self._zone_text)
        root = "." + cells_root(self._zone_text, options.generation)
        domains: RRsets = {}
        cells: RRsets = {}
        for record in zone_records(jurisdictions, options):
            name = record.name.lower()
            text = _canonical_text(record.rdata, record.rdtype)
            if name == self._cells:
                continue
            if name.endswith(root):
                key = (name[: -len(root)], record.rdtype)
                _add_to(cells, key, record.ttl, frozenset({text}))
            else:
                _add_to(domains, (name, record.rdtype), record.ttl, frozenset({text}))
        return Wanted(options.pointer, options.ttl, domains, cells)

    def plan(self, held: Held, wanted: Wanted, now: float) -> Plan:
        """What to send to turn ``held`` into ``wanted`` at time ``now`` (see the module's
        docs): in place, or through a new generation; what to collect and what to keep."""
        plan = Plan(self.zone, held.soa)
        live = held.live
        plan.live = live.generation if live is not None else None
        live_key = (live.generation or "") if live is not None else None
        collect, kept = self._garbage(held, live_key, wanted.ttl, now)
        plan.kept = sorted((g for g in kept if g != live_key), key=_generation_order)
        in_place = (
            live is not None
            and live.generation is not None
            and (live.depth, live.split) == (wanted.pointer.depth, wanted.pointer.split)
        )
        if in_place:
            assert live is not None and live.generation is not None
            update = self._in_place(held, wanted, live.generation, kept, plan)
            if sum(c.size for c in update) <= MAX_MESSAGE_BYTES and len(update) <= self.batch:
                if update:
                    plan.steps.append(Step("update", update))
            else:
                in_place = False
                plan.deferred = 0
        if not in_place:
            self._through_generation(held, wanted, kept, now, plan)
        self._collect(held, collect, plan)
        self._cleanup(held, wanted, kept, live_key if plan.switch_to else None, plan)
        plan.changes = [c for step in plan.steps for c in step.changes]
        return plan

    def hold(self, held: Held, ttl: int) -> float:
        """Seconds the generation a switch retires is kept: ``keep_retired``, or twice the longer
        of the old pointer's TTL and the new one (a reader holds the old pointer at most that
        long). Written into the new generation's marker, so a later publish (with another TTL)
        keeps to it."""
        if self.keep_retired is not None:
            return self.keep_retired
        pointer_ttl = held.pointer[0] if held.pointer is not None else 0
        return 2.0 * max(ttl, pointer_ttl)

    def retired_for(self, held: Held, ttl: int) -> float:
        """Seconds the generations the live one replaced are kept after it went live."""
        if self.keep_retired is not None:
            return self.keep_retired
        live = held.live
        marker = held.markers.get(live.generation or "") if live is not None else None
        written = parse_marker(_txt_strings(marker[1]))[2] if marker is not None else None
        return float(written) if written is not None else self.hold(held, ttl)

    def _garbage(
        self, held: Held, live: str | None, ttl: int, now: float
    ) -> tuple[list[str], set[str]]:
        """Which generations to delete now, and which to keep (the live one among them)."""
        hold = self.retired_for(held, ttl)
        marker = held.markers.get(live) if live is not None else None
        since = parse_marker(_txt_strings(marker[1]))[1] if marker is not None else None
        collect, kept = [], set()
        for generation in sorted(held.generations(), key=_generation_order):
            own = held.markers.get(generation)
            created = parse_marker(_txt_strings(own[1]))[0] if own is not None else None
            if generation == live:
                due = False
            elif live is None or _generation_order(generation) > _generation_order(live):
                # staged after the live one (labels only grow): a publish in progress, or one
                # that failed; with no marker, nobody's
                due = created is None or now >= created + self.staging_timeout
            else:
                due = since is not None and now >= since + hold  # retired
            if due:
                collect.append(generation)
            else:
                kept.add(generation)
        return collect, kept

    def _in_place(
        self, held: Held, wanted: Wanted, generation: str, kept: set[str], plan: Plan
    ) -> list[Change]:
        root = cells_root(self._zone_text, generation)
        changes = _diff(
            {(self._cells, "TXT"): held.pointer} if held.pointer else {},
            {
                (self._cells, "TXT"): (
                    wanted.ttl,
                    frozenset({self._pointer_text(wanted, generation)}),
                )
            },
        )
        changes += _diff(
            _absolute(held.trees.get(generation, {}), root), _absolute(wanted.cells, root)
        )
        named = self._named(held, kept - {generation}) | _targets(wanted.cells)
        domains, deferred = _domain_diff(held.domains, wanted.domains, named)
        plan.deferred = deferred
        return changes + domains

    def _pointer_text(self, wanted: Wanted, generation: str) -> str:
        return txt_zone_text(replace(wanted.pointer, generation=generation).strings())

    def _through_generation(
        self, held: Held, wanted: Wanted, kept: set[str], now: float, plan: Plan
    ) -> None:
        numbers = [generation_number(g) for g in held.generations() if g]
        new = f"g{max(numbers, default=0) + 1}"
        plan.switch_to = new
        root = cells_root(self._zone_text, new)
        hold = int(self.hold(held, wanted.ttl))
        staged = txt_zone_text(marker_strings(int(now), None, hold))
        live_marker = txt_zone_text(marker_strings(int(now), int(now), hold))
        stage = [Change("add", root, "TXT", wanted.ttl, staged)]
        added = [k for k in wanted.domains if k not in held.domains]
        changed = [
            k for k in wanted.domains if k in held.domains and held.domains[k] != wanted.domains[k]
        ]
        for key in sorted(added):
            stage.extend(_adds(key, wanted.domains[key]))
        stage.extend(_diff({}, _absolute(wanted.cells, root)))
        switch = Step("switch")
        if held.pointer is not None:
            switch.requires.append((self._cells, "TXT", tuple(sorted(held.pointer[1]))))
            switch.changes.append(Change("delete", self._cells, "TXT", held.pointer[0], None))
        else:
            switch.requires.append((self._cells, "TXT", ()))
        switch.requires.append((root, "TXT", (staged,)))
        switch.changes.append(
            Change("add", self._cells, "TXT", wanted.ttl, self._pointer_text(wanted, new))
        )
        switch.changes.append(Change("delete", root, "TXT", wanted.ttl, None))
        switch.changes.append(Change("add", root, "TXT", wanted.ttl, live_marker))
        room = MAX_MESSAGE_BYTES - sum(c.size for c in switch.changes) - 1024
        for key in sorted(changed):
            modification = [Change("delete", key[0], key[1], held.domains[key][0], None)]
            modification += _adds(key, wanted.domains[key])
            size = sum(c.size for c in modification)
            if size <= room and len(switch.changes) + len(modification) <= self.batch:
                switch.changes.extend(modification)
                room -= size
            else:
                stage.extend(modification)
                plan.outside_switch += 1
        plan.steps += [Step("stage", stage), switch]

    def _collect(self, held: Held, generations: list[str], plan: Plan) -> None:
        changes = []
        for generation in generations:
            root = cells_root(self._zone_text, generation or None)
            if generation in held.markers:  # the marker first: a half-collected tree is garbage
                changes.append(Change("delete", root, "TXT", held.markers[generation][0], None))
            for prefix, rdtype in sorted(held.trees.get(generation, {})):
                ttl = held.trees[generation][(prefix, rdtype)][0]
                changes.append(Change("delete", f"{prefix}.{root}", rdtype, ttl, None))
        if changes:
            plan.collected = generations
            plan.steps.append(Step("collect", changes))

    def _cleanup(
        self, held: Held, wanted: Wanted, kept: set[str], retired: str | None, plan: Plan
    ) -> None:
        """After a switch: ``_open311`` records of departed domains that no generation still held
        names (the one just retired names its own)."""
        if plan.switch_to is None:
            return
        keep = kept | ({retired} if retired is not None else set())
        named = self._named(held, keep) | _targets(wanted.cells)
        deletions, plan.deferred = _domain_diff(
            held.domains, wanted.domains, named, only_deletions=True
        )
        if deletions:
            plan.steps.append(Step("cleanup", deletions))

    def _named(self, held: Held, generations: Iterable[str]) -> set[str]:
        """The domains the cells of these generations name (PTR targets, absolute)."""
        out: set[str] = set()
        for generation in generations:
            out |= _targets(held.trees.get(generation, {}))
        return out


class Publisher:
    """The I/O half of publishing: talks to one primary server about one zone, over TCP, with
    one TSIG key; reads the zone by AXFR and sends a :class:`Planner`'s plan by UPDATE.

    ``keep_retired``, ``staging_timeout`` and ``batch`` go to the :class:`Planner`; ``clock``:
    seconds since the epoch.
    """

    def __init__(
        self,
        server: str,
        zone: str,
        key: TsigKey | None,
        *,
        port: int = 53,
        timeout: float = 30.0,
        batch: int = DEFAULT_BATCH,
        keep_retired: float | None = None,
        staging_timeout: float = DEFAULT_STAGING_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        self.port = port
        self.zone = dns.name.from_text(zone)
        self.key = key
        self.timeout = timeout
        self.batch = batch
        self.keep_retired = keep_retired
        self.staging_timeout = staging_timeout
        self.clock = clock
        self.planner = Planner(
            zone, batch=batch, keep_retired=keep_retired, staging_timeout=staging_timeout
        )
        self._zone_text = self.planner._zone_text

    def _where(self) -> str:
        return f"{self.server} port {self.port}"

    def read(self) -> Held:
        """What the zone holds now (by AXFR, see :mod:`discovery.axfr`): managed records and
        the SOA. A transfer the server cuts is started again before this gives up."""
        try:
            reader = transfer(
                self.server,
                self.zone,
                port=self.port,
                key=self.key.key() if self.key is not None else None,
                timeout=self.timeout,
            )
        except dns.query.TransferError as exc:
            raise PublishError(
                f"{self._where()} refused the zone transfer of {self.zone} "
                f"({dns.rcode.to_text(exc.rcode)}): check the TSIG key and the server's ACL; "
                "nothing was changed"
            ) from None
        except (dns.exception.DNSException, OSError, TransferCut, Malformed) as exc:
            raise PublishError(self._failure("read the zone", exc)) from None
        return self.planner.held(reader.soa, reader.records)

    def plan(self, jurisdictions: Sequence[Jurisdiction], options: ZoneOptions) -> Plan:
        """Read the zone, then plan what brings it in line with the registry."""
        held = self.read()
        return self.planner.plan(held, self.planner.wanted(jurisdictions, options), self.clock())

    def hold(self, held: Held, ttl: int) -> float:
        return self.planner.hold(held, ttl)

    def retired_for(self, held: Held, ttl: int) -> float:
        return self.planner.retired_for(held, ttl)

    def _failure(self, doing: str, exc: BaseException) -> str:
        if isinstance(exc, dns.tsig.PeerBadKey | dns.message.UnknownTSIGKey):
            why = f"the server does not know the TSIG key {self._key_name()} (BADKEY)"
        elif isinstance(exc, dns.tsig.PeerBadSignature | dns.tsig.BadSignature):
            why = f"the TSIG secret of key {self._key_name()} is wrong (BADSIG)"
        elif isinstance(exc, dns.tsig.PeerError):
            why = f"the server refused the TSIG signature of {self._key_name()}: {exc}"
        elif isinstance(exc, dns.exception.Timeout):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(exc, TransferCut):
            why = f"{exc} (a server-side I/O timeout or limit?)"
        elif isinstance(exc, EOFError):
            why = "the server closed the connection (a server-side I/O timeout or limit?)"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return f"cannot {doing} at {self._where()}: {why}; nothing was changed"

    def _key_name(self) -> str:
        return repr(self.key.name) if self.key is not None else "(none)"

    # -- sending --------------------------------------------------------------------------------

    def _messages(self, plan: Plan) -> Iterator[tuple[Step, dns.update.UpdateMessage]]:
        """The messages of a plan, built as they are sent."""
        steps = plan.steps or [Step("update", plan.changes)]
        first = True
        for step in steps:
            for changes in self._batches(step, plan):
                update = dns.update.UpdateMessage(self.zone)
                if first and plan.soa is not None:
                    soa = dns.rdata.from_text(
                        dns.rdataclass.IN, dns.rdatatype.SOA, plan.soa, relativize=False
                    )
                    update.present(self.zone, soa)  # the zone is still as read
                for name, rdtype, texts in step.requires:
                    if texts:
                        update.present(name, *(_rdata(rdtype, t) for t in texts))
                    else:
                        update.absent(name, rdtype)
                for change in changes:
                    if change.action == "delete":
                        if change.rdata is None:
                            update.delete(change.name, change.rdtype)
                        else:
                            update.delete(change.name, change.rdata_object())
                    else:
                        update.add(change.name, change.ttl, change.rdata_object())
                if self.key is not None:
                    update.use_tsig(self.key.key())
                first = False
                yield step, update

    def _batches(self, step: Step, plan: Plan) -> Iterable[list[Change]]:
        if step.kind == "switch":
            # One message, whatever it holds: the planner made it fit. The new generation is
            # marked live as of now, when it is sent (staging may have taken minutes): retired
            # generations are kept for ``hold`` seconds from this moment.
            yield [self._live_now(change, plan) for change in step.changes]
            return
        batch: list[Change] = []
        size = 0
        for change in step.changes:
            if batch and (len(batch) >= self.batch or size + change.size > MAX_MESSAGE_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(change)
            size += change.size
        if batch:
            yield batch

    def _live_now(self, change: Change, plan: Plan) -> Change:
        if plan.switch_to is None or change.action != "add" or change.rdata is None:
            return change
        if change.name != cells_root(self._zone_text, plan.switch_to) or change.rdtype != "TXT":
            return change
        created, _live, hold = parse_marker(_txt_strings(change.rdata))
        now = int(self.clock())
        return replace(change, rdata=txt_zone_text(marker_strings(created or now, now, hold)))

    def updates(self, plan: Plan) -> list[dns.update.UpdateMessage]:
        """The UPDATE messages of a plan, in sending order (signed when a key is set)."""
        return [update for _step, update in self._messages(plan)]

    def send(self, plan: Plan, *, on_message: Callable[[int, StepKind], None] | None = None) -> int:
        """Send the plan; the number of UPDATE messages the server accepted. ``on_message`` is
        called after each accepted message with its number (from 1) and its step's kind."""
        sent = 0
        for step, update in self._messages(plan):
            try:
                response = dns.query.tcp(update, self.server, port=self.port, timeout=self.timeout)
            except (dns.exception.DNSException, OSError, EOFError) as exc:
                raise PublishError(
                    self._failure("update the zone", exc).removesuffix("; nothing was changed")
                    + self._aftermath(plan, step, sent)
                ) from None
            rcode = response.rcode()
            if rcode != dns.rcode.NOERROR:
                why = {
                    dns.rcode.NOTAUTH: "the server refused the TSIG key (NOTAUTH)",
                    dns.rcode.REFUSED: "the server refused the update (REFUSED): check its ACL",
                    dns.rcode.NXRRSET: "the zone changed since it was read; run publish again",
                    dns.rcode.YXRRSET: "the zone changed since it was read; run publish again",
                }.get(rcode, dns.rcode.to_text(rcode))
                raise PublishError(
                    f"{self._where()} did not apply the update to {self.zone}: {why}"
                    + self._aftermath(plan, step, sent),
                    rcode=dns.rcode.to_text(rcode),
                )
            sent += 1
            if on_message is not None:
                on_message(sent, step.kind)
        return sent

    def _aftermath(self, plan: Plan, step: Step, sent: int) -> str:
        """What a failure at this step leaves behind, for the error message."""
        live = plan.live or "(none)"
        if step.kind in ("stage", "switch"):
            return (
                f"; generation {live} is still the one served; the partial staging of "
                f"{plan.switch_to} is collected by a later publish"
            )
        if step.kind in ("collect", "cleanup"):
            return "; the new records are live; the next publish finishes collecting"
        if sent:
            return f"; {sent} earlier message(s) were applied"
        return "; nothing was changed"


def _generation_order(generation: str) -> int:
    return generation_number(generation) if generation else -1


def _absolute(rrsets: RRsets, root: str) -> RRsets:
    return {(f"{prefix}.{root}", rdtype): value for (prefix, rdtype), value in rrsets.items()}


def _targets(rrsets: RRsets) -> set[str]:
    return {
        t for (_name, rdtype), (_ttl, texts) in rrsets.items() if rdtype == "PTR" for t in texts
    }


def _adds(key: tuple[str, str], value: tuple[int, frozenset[str]]) -> list[Change]:
    return [Change("add", key[0], key[1], value[0], r) for r in sorted(value[1])]


def _diff(held: RRsets, wanted: RRsets) -> list[Change]:
    """Per name and type, the records to delete and add to turn ``held`` into ``wanted``."""
    changes: list[Change] = []
    for key in sorted(set(held) | set(wanted)):
        name, rdtype = key
        have, want = held.get(key), wanted.get(key)
        if have == want:
            continue
        if want is None:
            assert have is not None
            changes.append(Change("delete", name, rdtype, have[0], None))
        elif have is None or have[0] != want[0]:
            if have is not None:
                changes.append(Change("delete", name, rdtype, have[0], None))
            changes.extend(_adds(key, want))
        else:
            gone, new = sorted(have[1] - want[1]), sorted(want[1] - have[1])
            changes.extend(Change("delete", name, rdtype, have[0], r) for r in gone)
            changes.extend(Change("add", name, rdtype, want[0], r) for r in new)
    return changes


def _domain_diff(
    held: RRsets, wanted: RRsets, named: set[str], *, only_deletions: bool = False
) -> tuple[list[Change], int]:
    """The changes to the ``_open311`` records, and how many deletions were deferred: a departed
    domain's record stays while a generation still held names it (``named``: PTR targets)."""
    deferred = 0
    keep: RRsets = {}
    for key, value in held.items():
        if key not in wanted:
            domain = key[0].removeprefix(RECORD_LABEL + ".")
            if domain in named:
                keep[key] = value
                deferred += 1
        elif only_deletions:
            keep[key] = value
    target = {**wanted, **keep} if not only_deletions else keep
    return _diff(held, target), deferred


__all__ = [
    "DEFAULT_BATCH",
    "MAX_MESSAGE_BYTES",
    "Change",
    "Held",
    "Plan",
    "Planner",
    "PublishError",
    "Publisher",
    "Step",
    "TsigKey",
    "Wanted",
    "read_key_file",
]
