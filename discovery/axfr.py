"""Reading a whole zone by AXFR (RFC 5936), fast enough for servers with default I/O timeouts.

A server streams the transfer and gives up on a client that does not read: Knot closes the
connection when one write waits longer than its ``tcp-io-timeout`` (500 ms by default). A reader
that builds a full dnspython message (names, rdata objects, hashed rdatasets) for each of the
100 or so messages of a 3,000-domain zone takes seconds and gets cut. This one reads each
length-prefixed message off the socket as it arrives and parses only what a publisher compares:
owner names as text (with one cache per message, as compression makes names share suffixes),
and the data of SOA, TXT and PTR records as master-file text. Everything else is skipped by its
length. TSIG (RFC 8945) is still checked on every signed message, with dnspython's own
``dns.tsig.validate``.

:func:`transfer` does the I/O and retries a transfer the server cut; :class:`AxfrReader` is the
parser, fed one message at a time, with no I/O.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig

from .dns_records import txt_zone_text

SOA, PTR, TXT, TSIG = 6, 12, 16, 250
#: Record types whose data is decoded to text; the others are kept as ``None``.
DECODED = frozenset({SOA, PTR, TXT})
#: How many times a transfer the server cut is started again before giving up.
DEFAULT_ATTEMPTS = 3

_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_*/+=-]*\Z")
_PLAIN_TEXT = re.compile(rb"[ !#-\[\]-~]*\Z")  # printable ASCII without '"' and '\'
_NAME_SPECIAL = b'"().;\\@$'


class TransferCut(Exception):
    """The server closed the connection before the transfer's final SOA."""


class Malformed(Exception):
    """The transfer's wire data is not a well-formed DNS message (RFC 1035 4.1)."""


class Record(NamedTuple):
    """One resource record of the zone: owner name (absolute, lowercase text), type number, TTL,
    and its data as master-file text for SOA, TXT and PTR (``None`` for other types). A tuple:
    a zone has tens of thousands of them, made in a loop."""

    name: str
    rdtype: int
    ttl: int
    rdata: str | None


_LABELS: dict[bytes, str] = {}


def _label_text(label: bytes) -> str:
    """A label as master-file text (lowercase, escaped as dnspython does); cached, since a zone
    repeats the same few labels (geohash digits, generation labels) thousands of times."""
    text = _LABELS.get(label)
    if text is not None:
        return text
    if len(_LABELS) > 100_000:
        _LABELS.clear()
    text = _LABELS[label] = _escaped_label(label)
    return text


def _escaped_label(label: bytes) -> str:
    if _PLAIN_LABEL.match(label):
        return label.decode("ascii").lower()
    out = []
    for byte in label.lower():
        if byte in _NAME_SPECIAL:
            out.append("\\" + chr(byte))
        elif 0x20 < byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def _name(wire: bytes, offset: int, cache: dict[int, tuple[str, int]]) -> tuple[str, int]:
    """The (possibly compressed) name at ``offset`` as absolute lowercase text, and the offset
    after it in place. Every label position read is cached with its text, so a name that points
    into another costs one dictionary look-up. Each compression pointer must point before every
    position read so far, which rules out loops."""
    hit = cache.get(offset)
    if hit is not None:
        return hit
    # the common shapes first: one label then a pointer to a name already read, or a pointer
    if offset + 1 < len(wire):
        length = wire[offset]
        if length >= 0xC0:
            pointer = ((length & 0x3F) << 8) | wire[offset + 1]
            hit = cache.get(pointer) if pointer < offset else None
            if hit is not None:
                cache[offset] = result = (hit[0], offset + 2)
                return result
        elif 0 < length < 64 and offset + length + 2 < len(wire):
            end = offset + 1 + length
            if wire[end] >= 0xC0:
                pointer = ((wire[end] & 0x3F) << 8) | wire[end + 1]
                hit = cache.get(pointer) if pointer < offset else None
                if hit is not None and hit[0] != ".":
                    text = _label_text(wire[offset + 1 : end]) + "." + hit[0]
                    cache[offset] = result = (text, end + 2)
                    return result
    pending: list[tuple[int, str, int]] = []  # label position, its text, its run
    ends: list[int] = []  # per run of consecutive labels: the offset after it
    position = low = offset
    while True:
        hit = cache.get(position)
        if hit is not None:
            suffix = hit[0]
            ends.append(hit[1])
            break
        if position >= len(wire):
            raise Malformed("a name runs past the end of the message")
        length = wire[position]
        if length == 0:
            suffix = "."
            ends.append(position + 1)
            break
        if length >= 0xC0:
            if position + 1 >= len(wire):
                raise Malformed("a truncated compression pointer")
            pointer = ((length & 0x3F) << 8) | wire[position + 1]
            if pointer >= low:
                raise Malformed("a compression pointer that does not point backwards")
            ends.append(position + 2)
            position = low = pointer
            continue
        if length > 63:
            raise Malformed(f"a label length of {length}")
        end = position + 1 + length
        pending.append((position, _label_text(wire[position + 1 : end]), len(ends)))
        position = end
    text = suffix
    for position, label, run in reversed(pending):
        text = label + "." + (text if text != "." else "")
        cache[position] = (text, ends[run])
    if len(text) > 1024:
        raise Malformed("a name longer than 255 octets")
    if offset not in cache:  # a bare pointer, or the root
        cache[offset] = (text, ends[0])
    return cache[offset]


def _strings_text(wire: bytes, start: int, end: int) -> str:
    strings = []
    offset = start
    while offset < end:
        length = wire[offset]
        if offset + 1 + length > end:
            raise Malformed("a TXT string runs past its record")
        strings.append(wire[offset + 1 : offset + 1 + length])
        offset += 1 + length
    if all(_PLAIN_TEXT.match(s) for s in strings):
        return " ".join('"' + s.decode("ascii") + '"' for s in strings)
    return txt_zone_text(strings)


@dataclass
class AxfrReader:
    """Parses an AXFR response one message at a time (no I/O): checks that each message answers
    ``query``, verifies TSIG when ``key`` is set, and collects the records between the opening
    and the closing SOA. ``done`` once the closing SOA is read."""

    query: dns.message.Message
    key: dns.tsig.Key | None = None
    records: list[Record] = field(default_factory=list)
    soa: str | None = None
    done: bool = False
    messages: int = 0
    _ctx: object | None = None
    _last_signed: bool = False

    def feed(self, wire: bytes) -> None:
        """Parse one message of the transfer (without its two-byte TCP length)."""
        if self.done:
            raise Malformed("data after the closing SOA of the transfer")
        if len(wire) < 12:
            raise Malformed("a message shorter than its header")
        ident, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", wire)
        if ident != self.query.id or not flags & 0x8000:
            raise Malformed("a response that does not answer the transfer query")
        cache: dict[int, tuple[str, int]] = {}
        offset = 12
        for _ in range(qdcount):
            offset = _name(wire, offset, cache)[1] + 4
        tsig_at = None
        for index in range(ancount + nscount + arcount):
            start = offset
            name, offset = _name(wire, offset, cache)
            if offset + 10 > len(wire):
                raise Malformed("a record runs past the end of the message")
            rdtype, _rdclass, ttl, rdlen = struct.unpack_from("!HHIH", wire, offset)
            offset += 10
            end = offset + rdlen
            if end > len(wire):
                raise Malformed("record data runs past the end of the message")
            if index >= ancount:
                if rdtype == TSIG:
                    if index != ancount + nscount + arcount - 1:
                        raise Malformed("a TSIG record that is not the last one")
                    tsig_at = (start, name, offset, rdlen)
                offset = end
                continue
            text = self._rdata(wire, rdtype, offset, end, cache) if rdtype in DECODED else None
            offset = end
            if rdtype == SOA:
                if self.soa is None:
                    self.soa = text
                    continue
                self.done = True
                if index != ancount - 1:
                    raise Malformed("records after the closing SOA")
                continue
            if self.soa is None:
                raise Malformed("the transfer does not start with the SOA")
            self.records.append(Record(name, rdtype, ttl, text))
        if offset != len(wire):
            raise Malformed("trailing data after the last record")
        rcode = flags & 0x000F
        if rcode != dns.rcode.NOERROR:
            if tsig_at is not None and self.key is not None:
                self._check_tsig(wire, tsig_at)  # a TSIG error (BADSIG, BADKEY) says more
            raise dns.query.TransferError(rcode)  # type: ignore[no-untyped-call]
        self._check_tsig(wire, tsig_at)
        self.messages += 1
        if self.done and self.key is not None and not self._last_signed:
            raise Malformed("the last message of the transfer is not signed")

    @staticmethod
    def _rdata(
        wire: bytes, rdtype: int, start: int, end: int, cache: dict[int, tuple[str, int]]
    ) -> str:
        if rdtype == TXT:
            return _strings_text(wire, start, end)
        if rdtype == PTR:
            target, after = _name(wire, start, cache)
            if after != end:
                raise Malformed("a PTR record with trailing data")
            return target
        mname, offset = _name(wire, start, cache)
        rname, offset = _name(wire, offset, cache)
        if offset + 20 != end:
            raise Malformed("a malformed SOA record")
        numbers = struct.unpack_from("!5I", wire, offset)
        return f"{mname} {rname} " + " ".join(str(n) for n in numbers)

    def _check_tsig(self, wire: bytes, tsig_at: tuple[int, str, int, int] | None) -> None:
        """RFC 8945 5.3.1: the first and the last message are signed; the ones between may not
        be, and then go into the digest of the next signed one."""
        if self.key is None:
            if tsig_at is not None:
                raise Malformed("a signed response to an unsigned query")
            return
        if tsig_at is None:
            if self._ctx is None:
                raise Malformed("response requires a TSIG but does not have one")
            self._ctx.update(wire)  # type: ignore[attr-defined]
            self._last_signed = False
            return
        start, owner_text, rdata_start, rdlen = tsig_at
        rdata = dns.rdata.from_wire(
            dns.rdataclass.ANY, dns.rdatatype.TSIG, wire, rdata_start, rdlen
        )
        self._ctx = dns.tsig.validate(  # type: ignore[no-untyped-call]
            wire,
            self.key,
            dns.name.from_text(owner_text),
            rdata,
            int(time.time()),
            self.query.mac,
            start,
            self._ctx,
            True,
        )
        self._last_signed = True


def _read_exactly(sock: socket.socket, buffer: bytearray, count: int, deadline: float) -> None:
    while len(buffer) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise dns.exception.Timeout
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(max(count - len(buffer), 1 << 18))
        except TimeoutError:
            raise dns.exception.Timeout from None
        if not chunk:
            raise TransferCut
        buffer += chunk


def transfer_once(
    server: str, zone: dns.name.Name, *, port: int, key: dns.tsig.Key | None, timeout: float
) -> AxfrReader:
    """One AXFR over one TCP connection; ``timeout`` bounds the whole transfer."""
    query = dns.message.make_query(zone, dns.rdatatype.AXFR)
    if key is not None:
        query.use_tsig(key)
    wire = query.to_wire()
    reader = AxfrReader(query, key)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((server, port), timeout=timeout)
    except TimeoutError:
        raise dns.exception.Timeout from None
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        buffer = bytearray()
        while not reader.done:
            # read what has arrived (often several messages at once), then parse whole messages
            _read_exactly(sock, buffer, 2, deadline)
            length = struct.unpack_from("!H", buffer)[0]
            _read_exactly(sock, buffer, 2 + length, deadline)
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            reader.feed(message)
    return reader


def transfer(
    server: str,
    zone: dns.name.Name,
    *,
    port: int = 53,
    key: dns.tsig.Key | None = None,
    timeout: float = 30.0,
    attempts: int = DEFAULT_ATTEMPTS,
    pause: Callable[[float], None] = time.sleep,
) -> AxfrReader:
    """The zone by AXFR, started again (after 0.5 s, then 1 s, ...) when the server cuts the
    connection or resets it mid-transfer: a busy server's I/O timeout is a passing condition.
    A refusal, a TSIG failure or a timeout is not retried."""
    for attempt in range(1, attempts + 1):
        try:
            return transfer_once(server, zone, port=port, key=key, timeout=timeout)
        except (TransferCut, ConnectionResetError, BrokenPipeError):
            if attempt == attempts:
                raise TransferCut(
                    f"the server closed the connection during the transfer, {attempts} time(s)"
                ) from None
            pause(0.5 * attempt)
    raise AssertionError("unreachable")


__all__ = [
    "DECODED",
    "DEFAULT_ATTEMPTS",
    "AxfrReader",
    "Malformed",
    "Record",
    "TransferCut",
    "transfer",
]
