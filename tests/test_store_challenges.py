"""Registration challenges in the store, on both backends: a registration's write (spend the token,
check who holds the id, save or delete the entry) is one transaction, so whatever refuses or fails
in it leaves the token unspent and the registry as it was."""

from __future__ import annotations

import pytest
from shapely.geometry import box

from common.errors import Forbidden, InvalidInput
from common.models import Jurisdiction
from resolver.core.federation import timestamp
from resolver.store import Store
from resolver.store.challenges import ChallengeRecord, Claim, Holder, OpenChallenges

NOW = "2026-01-01T00:00:00.000000Z"
LATER = "2026-01-01T01:00:00.000000Z"


def _entry(name: str = "City") -> Jurisdiction:
    return Jurisdiction(id="city", name=name, domain="city.example").with_boundary(box(0, 0, 1, 1))


def _challenge(store: Store, digest: str = "d1") -> ChallengeRecord:
    record = ChallengeRecord(digest, "city.example", "city", NOW, "2999-01-01T00:00:00.000000Z")
    store.add_challenge(record, forget_before=NOW, admit=lambda seen: None)
    return record


class Refused(Forbidden):
    code = "refused"


def test_a_registration_spends_its_token_and_saves_in_one_go(store_url: str) -> None:
    with Store(store_url) as store:
        seen: list[OpenChallenges] = []
        record = ChallengeRecord("d1", "city.example", "city", NOW, "2999-01-01T00:00:00.000000Z")
        store.add_challenge(record, forget_before=NOW, admit=seen.append)
        assert seen == [OpenChallenges(Holder(False, None), 0, 0)]
        claims: list[Claim] = []
        store.register(
            _entry(), digest=record.digest, at=LATER, source="t", report={}, check=claims.append
        )
        assert claims == [Claim(True, Holder(False, None))]
        assert store.holder("city") == Holder(True, "city.example")
        spent = store.challenge(record.digest)
        assert spent is not None and spent.used == LATER
        # the same token again: the claim says it was not spent by this write
        again: list[Claim] = []

        def refuse(claim: Claim) -> None:
            again.append(claim)
            raise Refused("spent")

        with pytest.raises(Refused):
            store.register(
                _entry("Other"), digest=record.digest, at=LATER, source="t", report={}, check=refuse
            )
        assert again == [Claim(False, Holder(True, "city.example"))]
        assert [j.name for j in store.jurisdictions()] == ["City"]


def test_a_refusal_or_a_failed_save_leaves_the_token_unspent(store_url: str) -> None:
    with Store(store_url) as store:
        record = _challenge(store)
        serial = store.serial

        def refuse(claim: Claim) -> None:
            assert claim.spent  # spent in this transaction, then rolled back with it
            raise Refused("the id is held")

        with pytest.raises(Refused):
            store.register(
                _entry(), digest=record.digest, at=LATER, source="t", report={}, check=refuse
            )
        # the save itself fails after the token was spent: a name too long for its column
        with pytest.raises(InvalidInput, match=r"jurisdictions\.name"):
            store.register(
                _entry("x" * 600),
                digest=record.digest,
                at=LATER,
                source="t",
                report={},
                check=lambda claim: None,
            )
        unspent = store.challenge(record.digest)
        assert unspent is not None and unspent.used is None
        assert store.serial == serial and store.count() == 0 and store.imports() == []


def test_a_withdrawal_is_one_transaction_too(store_url: str) -> None:
    with Store(store_url) as store:
        first, second = _challenge(store, "d1"), _challenge(store, "d2")
        store.register(
            _entry(), digest=first.digest, at=LATER, source="t", report={}, check=lambda c: None
        )

        def refuse(claim: Claim) -> None:
            raise Refused("no")

        with pytest.raises(Refused):
            store.withdraw("city", digest=second.digest, at=LATER, source="t", check=refuse)
        kept = store.challenge(second.digest)
        assert kept is not None and kept.used is None and store.count() == 1
        claims: list[Claim] = []
        assert store.withdraw(
            "city", digest=second.digest, at=timestamp(), source="t", check=claims.append
        ) == ["city"]
        assert claims == [Claim(True, Holder(True, "city.example"))]
        assert store.count() == 0 and store.holder("city") == Holder(False, None)


def test_admitting_a_challenge_sees_what_is_open_and_forgets_the_expired(store_url: str) -> None:
    with Store(store_url) as store:
        old = ChallengeRecord(
            "old",
            "city.example",
            "city",
            "2000-01-01T00:00:00.000000Z",
            "2000-01-01T01:00:00.000000Z",
        )
        store.add_challenge(old, forget_before=NOW, admit=lambda seen: None)
        _challenge(store, "d1")  # the old one is forgotten first: nothing open is counted
        assert store.challenge("old") is None
        seen: list[OpenChallenges] = []
        other = ChallengeRecord("d2", "town.example", "town", NOW, "2999-01-01T00:00:00.000000Z")
        store.add_challenge(other, forget_before=NOW, admit=seen.append)
        assert seen == [OpenChallenges(Holder(False, None), 1, 0)]

        def refuse(seen: OpenChallenges) -> None:
            raise Refused("too many")

        with pytest.raises(Refused):
            store.add_challenge(
                ChallengeRecord("d3", "city.example", "city", NOW, "2999-01-01T00:00:00.000000Z"),
                forget_before=NOW,
                admit=refuse,
            )
        assert store.challenge("d3") is None
