"""The ``_open311`` TXT format: strict about what it accepts, lenient about what it ignores, and a
broken record never poisons the others (pure: no network)."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from discovery.dns_records import (
    MAX_RECORD_BYTES,
    BadValue,
    ConflictingRecords,
    MissingKey,
    NoVersion,
    Open311Record,
    RecordTooLong,
    UnknownVersion,
    UrlPolicy,
    parse_record,
    parse_rrset,
    txt_zone_text,
)

D = b"d=https://city.example/open311/discovery.json"
GOOD = [b"v=open311-1", D, b"e=https://city.example/open311/v2/", b"j=city.example"]


def test_a_good_record() -> None:
    record = parse_record(GOOD)
    assert record.discovery_url == "https://city.example/open311/discovery.json"
    assert record.endpoint_url == "https://city.example/open311/v2/"
    assert record.jurisdiction_id == "city.example"


@pytest.mark.parametrize(
    ("strings", "error", "says"),
    [
        # no version key at all
        ([D], NoVersion, "does not start with the version key"),
        # the version key, but not first
        ([D, b"v=open311-1"], NoVersion, "does not start"),
        # a version this code does not read
        ([b"v=open311-2", D], UnknownVersion, "'open311-2' is not known"),
        # no discovery URL
        ([b"v=open311-1", b"j=city"], MissingKey, "no discovery URL"),
        # a discovery URL over plain http
        ([b"v=open311-1", b"d=http://city.example/discovery.json"], BadValue, "https"),
        # not a URL at all
        ([b"v=open311-1", b"d=not a url"], BadValue, "absolute https URL"),
        # a scheme that is not http(s)
        ([b"v=open311-1", b"d=ftp://city.example/d.json"], BadValue, "not an http"),
        # a URL with no host
        ([b"v=open311-1", b"d=https:///discovery.json"], BadValue, "no host"),
        # a boundary without its generation
        ([b"v=open311-1", D, b"b=https://city.example/b.geojson"], MissingKey, "g="),
        # a generation that is not 16 hex digits
        ([b"v=open311-1", D, b"g=xyz"], BadValue, "16 hex digits"),
        # a known key twice
        ([b"v=open311-1", D, D], BadValue, "appears twice"),
        # a known key without a value
        ([b"v=open311-1", b"d"], BadValue, "has no value"),
        # a value that is not UTF-8
        ([b"v=open311-1", D, b"n=\xff\xfe"], BadValue, "not UTF-8"),
        # a continuation with nothing to continue
        ([b"+abc", b"v=open311-1"], BadValue, "continuation"),
        # a 4,000-byte record
        ([b"v=open311-1", D, *([b"x=" + b"a" * 250] * 16)], RecordTooLong, "4"),
    ],
)
def test_bad_records_say_exactly_what_is_wrong(
    strings: list[bytes], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        parse_record(strings, name="_open311.city.example")


def test_the_4000_byte_record_is_refused_by_size() -> None:
    strings = [b"v=open311-1", D, *([b"x=" + b"a" * 250] * 16)]
    assert sum(map(len, strings)) > 4000 > MAX_RECORD_BYTES
    with pytest.raises(RecordTooLong) as caught:
        parse_record(strings)
    assert caught.value.fields["size"] > 4000


def test_unknown_keys_and_empty_keys_are_ignored() -> None:
    record = parse_record([b"v=open311-1", b"future=1", b"=odd", D, b"flag"])
    assert record.discovery_url.endswith("discovery.json")
    assert record.ignored == ("future", "flag")
    assert record == parse_record([b"V=open311-1", D])  # keys are case-insensitive


def test_long_values_are_split_over_character_strings_and_joined_on_read() -> None:
    long_url = "https://city.example/" + "boundaries/" * 60 + "b.geojson"
    record = Open311Record(
        discovery_url="https://city.example/d.json",
        boundary_url=long_url,
        boundary_generation="0123456789abcdef",
        name="Ville de Montréal",
    )
    strings = record.strings()
    assert max(map(len, strings)) == 255 and any(s.startswith(b"+") for s in strings)
    assert parse_record(strings) == record
    # the master-file text is what dnspython reads and prints
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, txt_zone_text(strings))
    assert rdata.to_text() == txt_zone_text(strings)
    assert tuple(rdata.strings) == tuple(strings)  # type: ignore[attr-defined]


def test_http_is_allowed_only_for_loopback_and_only_when_asked() -> None:
    loopback = [b"v=open311-1", b"d=http://127.0.0.1:8080/d.json"]
    assert parse_record(loopback, policy=UrlPolicy(allow_http_loopback=True))
    with pytest.raises(BadValue):
        parse_record(loopback)
    public = [b"v=open311-1", b"d=http://city.example/d.json"]
    with pytest.raises(BadValue):
        parse_record(public, policy=UrlPolicy(allow_http_loopback=True))


def test_a_broken_record_does_not_poison_a_good_one() -> None:
    # someone else's TXT at the name, a record of a later version, and a good one
    result = parse_rrset([[b"google-site-verification=abc"], GOOD, [b"v=open311-9", D]])
    assert result.record == parse_record(GOOD)
    assert [type(e) for e in result.errors] == [NoVersion, UnknownVersion]


def test_two_records_that_disagree_are_both_refused() -> None:
    other = [b"v=open311-1", b"d=https://elsewhere.example/discovery.json"]
    result = parse_rrset([GOOD, other], name="_open311.city.example")
    assert result.record is None
    assert isinstance(result.errors[-1], ConflictingRecords)
    assert "disagree" in result.errors[-1].detail
    # the same facts twice (order, unknown keys aside) are one record
    same = [b"v=open311-1", b"j=city.example", b"e=https://city.example/open311/v2/", D, b"x=1"]
    assert parse_rrset([GOOD, same]).record == parse_record(GOOD)
