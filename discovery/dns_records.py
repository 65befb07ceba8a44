"""The ``_open311.<domain>`` TXT record: where a jurisdiction says, under its own domain, where its
Open311 service discovery document, endpoint and boundary are.

The format (``docs/dns-records.md``) follows RFC 6763 section 6: one ``key=value`` pair per
character-string, the version key first, short case-insensitive keys, unknown keys ignored. A value
longer than a character-string allows (255 bytes) continues in the next character-strings, each
starting with ``+``; the reader joins them. Example::

    _open311.sf.example. 300 IN TXT "v=open311-1" "d=https://sf.example/open311/discovery.json"
        "e=https://sf.example/open311/v2/" "j=sfgov.org" "n=San Francisco, CA"
        "b=https://sf.example/boundary.geojson" "g=3f2a9c0d1e4b5a69"

The parser is strict about what it accepts (a known key with a malformed value is an error, not a
guess) and lenient about what it ignores (unknown keys, RFC 6763's empty-key strings). Errors are
per record: one broken record at a name is reported and the others there still count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Final
from urllib.parse import urlsplit

from common.errors import GeoWebError
from discovery.urls import normalize_base_url, normalize_discovery_url

#: The first label of a jurisdiction's record: ``_open311.<domain>`` (an RFC 8552 attribute leaf).
RECORD_LABEL: Final = "_open311"

#: The version this code reads and writes; a record with another version is refused, not guessed.
VERSION: Final = "open311-1"

#: Longest record accepted, all character-strings together. Larger records do not fit a plain
#: UDP answer and are a mistake or an attack; they are refused whole.
MAX_RECORD_BYTES: Final = 2048

#: Longest character-string RFC 1035 allows.
MAX_STRING_BYTES: Final = 255

#: The keys of version 1 and the fields they fill.
KEYS: Final = {
    "v": "version",
    "d": "discovery_url",
    "e": "endpoint_url",
    "j": "jurisdiction_id",
    "n": "name",
    "b": "boundary_url",
    "g": "boundary_generation",
}

_GENERATION = re.compile(r"[0-9a-f]{16}")


class RecordError(GeoWebError):
    """An ``_open311`` TXT record cannot be used."""

    status = 502
    code = "dns_record_error"

    def __init__(self, detail: str, *, name: str | None = None, **fields: Any) -> None:
        where = f"{name}: " if name else ""
        super().__init__(where + detail, name=name, **fields)


class NoVersion(RecordError):
    """The TXT record does not start with the version key (``v=open311-1``)."""

    code = "dns_record_no_version"


class UnknownVersion(RecordError):
    """The TXT record has a version this code does not read."""

    code = "dns_record_unknown_version"


class RecordTooLong(RecordError):
    """The TXT record is longer than accepted."""

    code = "dns_record_too_long"


class MissingKey(RecordError):
    """A required key is missing from the TXT record."""

    code = "dns_record_missing_key"


class BadValue(RecordError):
    """A key of the TXT record has a malformed value (not UTF-8, not an https URL, ...)."""

    code = "dns_record_bad_value"


class ConflictingRecords(RecordError):
    """Several ``_open311`` records at one name say different things; none is believed."""

    code = "dns_records_conflict"


@dataclass(frozen=True, slots=True)
class Open311Record:
    """What a jurisdiction's ``_open311`` record says. URLs are normalized (``discovery.urls``)."""

    discovery_url: str
    endpoint_url: str | None = None
    jurisdiction_id: str | None = None
    name: str | None = None
    boundary_url: str | None = None
    boundary_generation: str | None = None
    version: str = VERSION
    #: Keys this version does not know, kept for display; they never change a decision.
    ignored: tuple[str, ...] = field(default=(), compare=False)

    def strings(self) -> list[bytes]:
        """The record as TXT character-strings, version first, long values continued."""
        pairs = [("v", self.version), ("d", self.discovery_url)]
        for key, value in (
            ("e", self.endpoint_url),
            ("j", self.jurisdiction_id),
            ("n", self.name),
            ("b", self.boundary_url),
            ("g", self.boundary_generation),
        ):
            if value is not None:
                pairs.append((key, value))
        out: list[bytes] = []
        for key, value in pairs:
            out.extend(_split(f"{key}=".encode(), value.encode("utf-8")))
        return out


def _split(head: bytes, value: bytes) -> list[bytes]:
    """``key=value`` as character-strings: the first holds what fits, each next ``+`` and more."""
    first = MAX_STRING_BYTES - len(head)
    parts = [head + value[:first]]
    rest = value[first:]
    step = MAX_STRING_BYTES - 1
    parts.extend(b"+" + rest[i : i + step] for i in range(0, len(rest), step))
    return parts


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which URLs a record may name: https only, unless an operator allows plain http to
    loopback addresses (a test server or a resolver's own stand-in; never a public host)."""

    allow_http_loopback: bool = False

    def check(self, url: str, key: str, name: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return
        if parts.scheme == "http" and self.allow_http_loopback and _is_loopback(parts.hostname):
            return
        raise BadValue(f"{key}= must be an https URL, not {url[:200]!r}", name=name, key=key)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def parse_record(
    strings: Sequence[bytes], *, name: str | None = None, policy: UrlPolicy = UrlPolicy()
) -> Open311Record:
    """One TXT record (its character-strings, as the wire holds them) as an :class:`Open311Record`,
    or a :class:`RecordError` saying exactly what is wrong. ``name`` is used in messages."""
    size = sum(len(s) for s in strings)
    if size > MAX_RECORD_BYTES:
        raise RecordTooLong(
            f"the record is {size} bytes long; at most {MAX_RECORD_BYTES} are accepted",
            name=name,
            size=size,
            limit=MAX_RECORD_BYTES,
        )
    pairs = _pairs(strings, name)
    if not pairs or pairs[0][0] != "v":
        first = strings[0][:40].decode("utf-8", "replace") if strings else ""
        raise NoVersion(
            f"the record does not start with the version key v={VERSION} (it starts {first!r})",
            name=name,
        )
    values: dict[str, str] = {}
    ignored: list[str] = []
    for key, raw in pairs:
        if key not in KEYS:
            ignored.append(key)  # a later version's key, or someone else's: not ours to judge
            continue
        if raw is None:
            raise BadValue(f"the key {key!r} has no value", name=name, key=key)
        if key in values:
            raise BadValue(f"the key {key!r} appears twice", name=name, key=key)
        try:
            values[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadValue(f"the value of {key!r} is not UTF-8", name=name, key=key) from None
    if values["v"] != VERSION:
        raise UnknownVersion(
            f"version {values['v'][:40]!r} is not known (this code reads {VERSION})",
            name=name,
            version=values["v"][:40],
        )
    return _record(values, tuple(ignored), name, policy)


def _pairs(strings: Sequence[bytes], name: str | None) -> list[tuple[str, bytes | None]]:
    """``(key, value)`` pairs with continuations joined; ``value`` is ``None`` for a bare key."""
    pairs: list[tuple[str, bytes | None]] = []
    continuing = False
    for string in strings:
        if string.startswith(b"+"):
            if not continuing or not pairs:
                raise BadValue("a continuation (+...) follows no key=value", name=name)
            key, value = pairs[-1]
            pairs[-1] = (key, (value or b"") + string[1:])
            continue
        key_bytes, sep, value_bytes = string.partition(b"=")
        if not key_bytes:
            continuing = False
            continue  # RFC 6763 6.4: a string starting with '=' is silently ignored
        key = key_bytes.decode("ascii", "replace").lower()
        pairs.append((key, value_bytes if sep else None))
        continuing = True
    return pairs


def _record(
    values: dict[str, str], ignored: tuple[str, ...], name: str | None, policy: UrlPolicy
) -> Open311Record:
    discovery = values.get("d")
    if not discovery:
        raise MissingKey("the record names no discovery URL (d=)", name=name, key="d")
    discovery_url = _url(discovery, "d", name, policy, base=False)
    endpoint = values.get("e")
    endpoint_url = _url(endpoint, "e", name, policy, base=True) if endpoint else None
    boundary = values.get("b")
    boundary_url = _url(boundary, "b", name, policy, base=False) if boundary else None
    generation = values.get("g")
    if generation is not None and not _GENERATION.fullmatch(generation):
        raise BadValue(
            f"g= must be a boundary generation of 16 hex digits, not {generation[:40]!r}",
            name=name,
            key="g",
        )
    if boundary_url is not None and generation is None:
        raise MissingKey("b= names a boundary but g= gives no generation", name=name, key="g")
    for key in ("j", "n"):
        text = values.get(key)
        if text is not None and (not text or any(ord(c) < 32 for c in text)):
            raise BadValue(f"{key}= must be non-empty printable text", name=name, key=key)
    return Open311Record(
        discovery_url=discovery_url,
        endpoint_url=endpoint_url,
        jurisdiction_id=values.get("j"),
        name=values.get("n"),
        boundary_url=boundary_url,
        boundary_generation=generation,
        ignored=ignored,
    )


def _url(text: str, key: str, name: str | None, policy: UrlPolicy, *, base: bool) -> str:
    if "://" not in text:
        # A record is written by a machine: a bare host is a mistake, not a scheme to assume.
        raise BadValue(f"{key}= must be an absolute https URL, not {text[:200]!r}", name=name)
    try:
        if base:
            url, _fixes = normalize_base_url(text)
        else:
            normalized, _fixes = normalize_discovery_url(text)
            url = normalized or ""
    except ValueError as exc:
        raise BadValue(f"{key}= is not a usable URL: {exc}", name=name, key=key) from None
    policy.check(url, key, name)
    return url


@dataclass(frozen=True, slots=True)
class RecordSet:
    """What the ``_open311`` TXT RRset at one name says: the record believed (or none), and an
    error for each record that could not be used."""

    record: Open311Record | None
    errors: tuple[RecordError, ...] = ()


def parse_rrset(
    records: Iterable[Sequence[bytes]],
    *,
    name: str | None = None,
    policy: UrlPolicy = UrlPolicy(),
) -> RecordSet:
    """The TXT records at ``_open311.<domain>``: each parsed on its own; a broken one is an error
    that does not hide a good one. Two good records that disagree are a
    :class:`ConflictingRecords` error and neither is believed (DNS must not be guessed at)."""
    good: list[Open311Record] = []
    errors: list[RecordError] = []
    for strings in records:
        try:
            good.append(parse_record(strings, name=name, policy=policy))
        except RecordError as error:
            errors.append(error)
    distinct = list(dict.fromkeys(good))
    if len(distinct) > 1:
        shown = "; ".join(f"d={r.discovery_url} e={r.endpoint_url}" for r in distinct[:3])
        conflict = ConflictingRecords(
            f"{len(distinct)} _open311 records disagree ({shown}); none is used",
            name=name,
            count=len(distinct),
        )
        return RecordSet(None, (*errors, conflict))
    return RecordSet(distinct[0] if distinct else None, tuple(errors))


def record_name(domain: str) -> str:
    """The absolute name of a domain's record: ``_open311.<domain>.``."""
    return f"{RECORD_LABEL}.{domain.strip('.')}."


def txt_zone_text(strings: Sequence[bytes]) -> str:
    """Character-strings as RFC 1035 master-file text: quoted, with ``"`` and ``\\`` escaped and
    bytes outside printable ASCII as ``\\DDD``."""
    return " ".join('"' + _escape(s) + '"' for s in strings)


def _escape(data: bytes) -> str:
    out = []
    for byte in data:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


__all__ = [
    "KEYS",
    "MAX_RECORD_BYTES",
    "RECORD_LABEL",
    "VERSION",
    "BadValue",
    "ConflictingRecords",
    "MissingKey",
    "NoVersion",
    "Open311Record",
    "RecordError",
    "RecordSet",
    "RecordTooLong",
    "UnknownVersion",
    "UrlPolicy",
    "parse_record",
    "parse_rrset",
    "record_name",
    "txt_zone_text",
]
