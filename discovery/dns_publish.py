"""``geoweb publish``: bring a live zone in line with the registry by RFC 2136 dynamic UPDATE,
signed with TSIG (RFC 8945), sending only the difference.

1. Read what the zone holds by AXFR (signed with the same key: a publisher may transfer).
2. Compare the records this tool manages (``_open311.*`` TXT, everything under ``_cells.<zone>``)
   with what the registry makes (``discovery.zone.zone_records``): per name and type, the records
   to delete and to add. Nothing else in the zone is touched (SOA, NS, other people's records).
3. Send the changes in UPDATE messages of at most ``batch`` records each; the first carries a
   prerequisite that the SOA is still the one read, so a zone changed in between is refused, not
   clobbered. Run twice, the second run finds nothing to send (idempotent).

A wrong key is refused by the server before anything changes; :class:`PublishError` says so.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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

from resolver.errors import GeoWebError, InvalidInput
from resolver.models import Jurisdiction

from .dns_records import RECORD_LABEL
from .zone import ZoneOptions, zone_records

#: Records changed per UPDATE message (keeps each well under the 64 KiB of a TCP message).
DEFAULT_BATCH = 400

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
        return dns.rdata.from_text(
            dns.rdataclass.IN, self.rdtype, self.rdata, origin=dns.name.root, relativize=False
        )


@dataclass
class Plan:
    """The changes that bring the zone in line with the registry, and the SOA they start from."""

    zone: dns.name.Name
    soa: str | None
    changes: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def summary(self) -> str:
        adds = sum(c.action == "add" for c in self.changes)
        return f"{adds} record(s) to add, {len(self.changes) - adds} to delete in {self.zone}"


RRsets = dict[tuple[str, str], tuple[int, frozenset[str]]]


def _canonical_text(text: str, rdtype: str) -> str:
    """Record data as comparable text: PTR targets absolute and lowercase; TXT as dnspython and
    ``dns_records.txt_zone_text`` both print it (quoted strings, ``\\DDD`` escapes)."""
    if rdtype == "PTR":
        return text.lower() if text.endswith(".") else text.lower() + "."
    return text


def _managed(name: dns.name.Name, zone: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> bool:
    cells = dns.name.from_text("_cells", zone)
    if name == cells or name.is_subdomain(cells):
        return rdtype in (dns.rdatatype.PTR, dns.rdatatype.TXT)
    return rdtype == dns.rdatatype.TXT and name.labels[0].lower() == RECORD_LABEL.encode()


class Publisher:
    """Talks to one primary server about one zone, over TCP, with one TSIG key."""

    def __init__(
        self,
        server: str,
        zone: str,
        key: TsigKey | None,
        *,
        port: int = 53,
        timeout: float = 30.0,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.server = server
        self.port = port
        self.zone = dns.name.from_text(zone)
        self.key = key
        self.timeout = timeout
        self.batch = batch

    def _where(self) -> str:
        return f"{self.server} port {self.port}"

    def current(self) -> tuple[RRsets, str | None]:
        """The managed RRsets the zone holds now (by AXFR), and its SOA as text.

        Records are compared as canonical master-file text (absolute, lowercase names): building
        dnspython rdata objects for a zone of 100,000 records would cost seconds for nothing.
        """
        held: RRsets = {}
        soa = None
        keyring = {self.key.key().name: self.key.key()} if self.key is not None else None
        keyname = self.key.key().name if self.key is not None else None
        try:
            for message in dns.query.xfr(
                self.server,
                self.zone,
                port=self.port,
                keyring=keyring,
                keyname=keyname,
                relativize=False,
                lifetime=self.timeout,
            ):
                for rrset in message.answer:
                    if rrset.rdtype == dns.rdatatype.SOA:
                        soa = rrset[0].to_text()
                        continue
                    if not _managed(rrset.name, self.zone, rrset.rdtype):
                        continue
                    key = (rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype))
                    texts = frozenset(_canonical_text(r.to_text(), key[1]) for r in rrset)
                    old = held.get(key)
                    held[key] = (rrset.ttl, texts | old[1] if old else texts)
        except dns.query.TransferError as exc:
            raise PublishError(
                f"{self._where()} refused the zone transfer of {self.zone} "
                f"({dns.rcode.to_text(exc.rcode)}): check the TSIG key and the server's ACL; "
                "nothing was changed"
            ) from None
        except (dns.exception.DNSException, OSError, EOFError) as exc:
            raise PublishError(self._failure("read the zone", exc)) from None
        return held, soa

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
        elif isinstance(exc, EOFError):
            why = "the server closed the connection (a server-side I/O timeout or limit?)"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return f"cannot {doing} at {self._where()}: {why}; nothing was changed"

    def _key_name(self) -> str:
        return repr(self.key.name) if self.key is not None else "(none)"

    def plan(self, records: Iterable[tuple[str, int, str, str]]) -> Plan:
        """The changes from what the zone holds to ``records`` ((name, ttl, type, rdata) each)."""
        held, soa = self.current()
        wanted: RRsets = {}
        for name_text, ttl, type_text, rdata_text in records:
            name = name_text.lower() if name_text.endswith(".") else name_text.lower() + "."
            key = (name, type_text.upper())
            text = _canonical_text(rdata_text, key[1])
            old = wanted.get(key)
            wanted[key] = (ttl, old[1] | {text} if old else frozenset({text}))
        plan = Plan(self.zone, soa)
        for key in sorted(set(held) | set(wanted)):
            name, rdtype = key
            have, want = held.get(key), wanted.get(key)
            if have == want:
                continue
            if want is None:
                assert have is not None
                plan.changes.append(Change("delete", name, rdtype, have[0], None))
            elif have is None or have[0] != want[0]:
                if have is not None:
                    plan.changes.append(Change("delete", name, rdtype, have[0], None))
                plan.changes.extend(
                    Change("add", name, rdtype, want[0], r) for r in sorted(want[1])
                )
            else:
                gone, new = sorted(have[1] - want[1]), sorted(want[1] - have[1])
                plan.changes.extend(Change("delete", name, rdtype, have[0], r) for r in gone)
                plan.changes.extend(Change("add", name, rdtype, want[0], r) for r in new)
        return plan

    def updates(self, plan: Plan) -> list[dns.update.UpdateMessage]:
        """The UPDATE messages of a plan (signed when a key is set)."""
        messages = []
        for start in range(0, len(plan.changes), self.batch):
            update = dns.update.UpdateMessage(self.zone)
            if start == 0 and plan.soa is not None:
                soa = dns.rdata.from_text(
                    dns.rdataclass.IN, dns.rdatatype.SOA, plan.soa, relativize=False
                )
                update.present(self.zone, soa)  # the zone is still as read
            for change in plan.changes[start : start + self.batch]:
                if change.action == "delete":
                    if change.rdata is None:
                        update.delete(change.name, change.rdtype)
                    else:
                        update.delete(change.name, change.rdata_object())
                else:
                    update.add(change.name, change.ttl, change.rdata_object())
            if self.key is not None:
                update.use_tsig(self.key.key())
            messages.append(update)
        return messages

    def send(self, plan: Plan) -> int:
        """Send the plan; the number of UPDATE messages the server accepted."""
        sent = 0
        for update in self.updates(plan):
            try:
                response = dns.query.tcp(update, self.server, port=self.port, timeout=self.timeout)
            except (dns.exception.DNSException, OSError, EOFError) as exc:
                done = f" ({sent} earlier message(s) were applied)" if sent else ""
                raise PublishError(self._failure("update the zone", exc) + done) from None
            rcode = response.rcode()
            if rcode != dns.rcode.NOERROR:
                why = {
                    dns.rcode.NOTAUTH: "the server refused the TSIG key (NOTAUTH)",
                    dns.rcode.REFUSED: "the server refused the update (REFUSED): check its ACL",
                    dns.rcode.NXRRSET: "the zone changed since it was read; run publish again",
                }.get(rcode, dns.rcode.to_text(rcode))
                done = f"; {sent} earlier message(s) were applied" if sent else ""
                raise PublishError(
                    f"{self._where()} did not apply the update to {self.zone}: {why}{done}",
                    rcode=dns.rcode.to_text(rcode),
                )
            sent += 1
        return sent


def registry_records(
    jurisdictions: Sequence[Jurisdiction], options: ZoneOptions
) -> Iterable[tuple[str, int, str, str]]:
    """The records the registry makes for the zone, as ``publish`` compares them."""
    for record in zone_records(jurisdictions, options):
        yield record.name, record.ttl, record.rdtype, record.rdata


__all__ = [
    "Change",
    "Plan",
    "PublishError",
    "Publisher",
    "TsigKey",
    "read_key_file",
    "registry_records",
]
