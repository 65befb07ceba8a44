"""The resolution core: a point and a concern in, one :class:`Answer` out.

Pure: no I/O and no clock. The API, the CLI and the batch path all call the same
:class:`Resolver`; none of them decides anything on its own.

The rule, for the jurisdictions whose boundary covers the point (a point on a border is covered by
both sides):

1. order them from the most specific (smallest area) to the least, ties by id, so answers are
   deterministic;
2. the first one that does not refuse the concern is chosen: its services list offers the concern
   (*verified*), or its services are not known yet (*unverified*), or no concern was asked;
3. every other covering jurisdiction is an alternative, with why it was not chosen;
4. the fallback answers when nobody covers the point, nobody covering it offers the concern, or the
   chosen jurisdiction publishes no current GeoReport v2 endpoint; the answer says which.

Step 1-4 depend only on the concern and the *set* of covering jurisdictions, so the decision is
computed once per (concern, set) and shared by every point that has the same set.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Final, TypeVar

import numpy as np
import numpy.typing as npt
import shapely

from boundaries.index import BoundaryIndex
from boundaries.patched import PatchedIndex, moves, patch_index
from common.errors import GeoWebError, InvalidCoordinates, InvalidInput, UnknownJurisdiction
from common.models import (
    Answer,
    Candidate,
    Decision,
    Endpoint,
    Fallback,
    FallbackReason,
    Jurisdiction,
    Provenance,
    ServiceMatch,
)
from resolver.core.concerns import ServiceCatalog

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

#: Longest concern accepted, in characters; longer text is not a concern but an accident.
MAX_CONCERN_LENGTH: Final = 200

T = TypeVar("T")
#: A resolver's index: as built, or with the boundaries changed since patched in.
SpatialIndex = BoundaryIndex | PatchedIndex


#: Where this server's own ad hoc GeoReport v2 endpoint is, on whatever host answers.
ADHOC_PATH = "/adhoc/v2"


def choose_fallback(
    fallback_url: str | None, name: str, *, adhoc: bool, public_url: str | None
) -> Fallback | None:
    """Which fallback answers points nobody covers: the operator's URL when given; else this
    server's own ad hoc service (absolute on ``public_url``, or a path the HTTP layer makes
    absolute on the request's base URL); else none, and answers say there is nowhere to send."""
    if fallback_url:
        return Fallback(fallback_url, name)
    if not adhoc:
        return None
    label = "Ad hoc service of this resolver" if name == "Ad hoc fallback" else name
    base = public_url.rstrip("/") if public_url else ""
    return Fallback(base + ADHOC_PATH, label)


def parse_coordinate(value: str | float | int | None, name: str) -> float:
    """A latitude or longitude from user input, or :class:`InvalidCoordinates` saying why not.

    Accepts plain decimal numbers only (ASCII digits, an optional sign, point and exponent): no
    ``nan``, ``inf``, digit separators or other scripts' digits. ``float`` parses what is left,
    which it does exactly; hexadecimal and other forms it rejects itself.
    """
    if isinstance(value, bool):
        raise InvalidCoordinates(f"{name} must be a number, not {value!r}", parameter=name)
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise InvalidCoordinates(
                f"{name} must be a finite number, not {number!r}", parameter=name
            )
        return number
    text = "" if value is None else str(value).strip()
    if not text:
        raise InvalidCoordinates(f"{name} is empty; give decimal degrees", parameter=name)
    try:
        number = float(text) if text.isascii() and "_" not in text else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise InvalidCoordinates(
            f"{name} must be decimal degrees (like 37.7793), not {text[:40]!r}", parameter=name
        )
    return number


def check_point(lat: float, long: float) -> None:
    """Raise :class:`InvalidCoordinates` unless ``lat`` in [-90, 90] and ``long`` in [-180, 180].

    Values that look swapped are not swapped: they are answered as given, or refused as given.
    """
    # Every resolve passes here: two comparisons for the usual point (NaN and infinities fail
    # them and are refused below).
    if -90.0 <= lat <= 90.0 and -180.0 <= long <= 180.0:
        return
    for name, value, limit in (("lat", lat, 90.0), ("long", long, 180.0)):
        if not math.isfinite(value):
            raise InvalidCoordinates(
                f"{name} must be a finite number, not {value!r}", **{name: value}
            )
        if not -limit <= value <= limit:
            raise InvalidCoordinates(
                f"{name} {value} is outside [-{limit:g}, {limit:g}] (WGS84 degrees)",
                lat=lat,
                long=long,
            )


def clean_concern(concern: str | None) -> str | None:
    """A concern as the core uses it: stripped; empty means no concern."""
    if concern is None:
        return None
    concern = concern.strip()
    if len(concern) > MAX_CONCERN_LENGTH:
        raise InvalidInput(
            f"the concern is {len(concern)} characters long; "
            f"at most {MAX_CONCERN_LENGTH} are accepted"
        )
    return concern or None


def specificity_areas(boundaries: Sequence[BaseGeometry | None]) -> npt.NDArray[np.float64]:
    """Areas in square degrees of latitude that rank boundaries anywhere on Earth (infinite for
    no boundary), computed for all at once: a large registry ranks a million at start-up.

    Longitude degrees shrink with cos(latitude); scaling by the cosine at the centre is accurate
    enough to tell a city from the county around it.
    """
    geometries = np.empty(len(boundaries), dtype=object)
    geometries[:] = boundaries
    bounds = shapely.bounds(geometries)
    areas: npt.NDArray[np.float64] = shapely.area(geometries) * np.cos(
        np.radians((bounds[:, 1] + bounds[:, 3]) / 2)
    )
    areas[shapely.is_missing(geometries)] = np.inf
    return areas


class Resolver:
    """Answers points and concerns from a fixed set of jurisdictions.

    Build a new resolver when the jurisdictions change (a new boundary generation); a resolver
    never changes after construction, which is what makes its decision cache safe.
    """

    def __init__(
        self,
        jurisdictions: Sequence[Jurisdiction],
        *,
        fallback: Fallback | None = None,
        decision_cache_size: int = 65536,
        _index: SpatialIndex | None = None,
        _like: Resolver | None = None,
    ) -> None:
        # ``_like`` (from :meth:`replace`): a resolver of the same ids in the same order, whose
        # positions are taken over, and its ranks and generation too when it shares the index
        # (the same boundaries). A million entries take a second to work these out afresh.
        self.jurisdictions: tuple[Jurisdiction, ...] = tuple(jurisdictions)
        self.fallback = fallback
        if _like is not None:
            self._positions: dict[str, int] = _like._positions
        else:
            self._positions = {j.id: p for p, j in enumerate(self.jurisdictions)}
        if len(self._positions) < len(self.jurisdictions):
            counts = Counter(j.id for j in self.jurisdictions)
            twice = next(i for i, n in counts.items() if n > 1)
            raise InvalidInput(f"jurisdiction id {twice!r} appears twice")
        self.index: SpatialIndex = _index or BoundaryIndex([j.boundary for j in self.jurisdictions])
        if _like is not None and self.index is _like.index:
            self._rank: npt.NDArray[np.int64] = _like._rank
            self.index_generation: str = _like.index_generation
        else:
            # Most specific (smallest area) first, ties by id: np.lexsort sorts by its last key
            # first, and compares the ids by code point, as Python does.
            ids = np.array([j.id for j in self.jurisdictions], dtype=str)
            areas = specificity_areas([j.boundary for j in self.jurisdictions])
            order = np.lexsort((ids, areas))
            self._rank = np.empty(len(order), dtype=np.int64)
            self._rank[order] = np.arange(len(order))
            self.index_generation = _index_generation(self.jurisdictions)
        self._catalogs = [
            ServiceCatalog(j.services) if j.services is not None else None
            for j in self.jurisdictions
        ]
        self._decisions: dict[tuple[str | None, tuple[int, ...]], Decision] = {}
        self._decision_cache_size = decision_cache_size

    def __len__(self) -> int:
        return len(self.jurisdictions)

    def replace(
        self, updated: Sequence[Jurisdiction], *, removed: Collection[str] = ()
    ) -> Resolver:
        """A new resolver with these jurisdictions replaced (by id) or added, and the ``removed``
        ids left out.

        When no boundary changed (same ids in the same places, same generations), the new
        resolver shares this one's spatial index, so refreshing services or endpoints is cheap.
        When a few did, the index is patched (:mod:`boundaries.patched`): a million boundaries
        take a minute to index afresh. No decision computed on the old boundaries survives.
        """
        by_id = {j.id: j for j in updated}
        gone = set(removed) - set(by_id)
        positions = self._positions
        merged = list(self.jurisdictions)
        changed: list[int] = []  # positions in ``merged`` of new and changed boundaries
        same_ids = all(i in positions for i in by_id) and not any(i in positions for i in gone)
        if same_ids:  # the usual change (a refresh, an edit): entries updated in their places
            for new in by_id.values():
                position = positions[new.id]
                if new.boundary_generation != merged[position].boundary_generation:
                    changed.append(position)
                merged[position] = new
            kept = np.arange(len(merged), dtype=np.intp)
            kept[changed] = -1
        else:
            merged = [by_id.pop(j.id, j) for j in self.jurisdictions if j.id not in gone]
            merged.extend(by_id.values())
            kept, changed = moves(_boundary_keys(self.jurisdictions), _boundary_keys(merged))
        index: SpatialIndex | None = self.index
        if changed or not same_ids:
            boundaries = [merged[p].boundary for p in changed]
            index = patch_index(self.index, kept, changed, boundaries, len(merged))
        return Resolver(
            merged,
            fallback=self.fallback,
            decision_cache_size=self._decision_cache_size,
            _index=index,
            _like=self if same_ids else None,
        )

    def __contains__(self, jurisdiction_id: object) -> bool:
        return jurisdiction_id in self._positions

    def jurisdiction(self, jurisdiction_id: str) -> Jurisdiction:
        position = self._positions.get(jurisdiction_id)
        if position is None:
            raise UnknownJurisdiction(jurisdiction_id)
        return self.jurisdictions[position]

    def resolve(self, lat: float, long: float, concern: str | None = None) -> Answer:
        """The answer for one point (WGS84 degrees) and an optional concern."""
        check_point(lat, long)
        concern = clean_concern(concern)
        positions = self.index.covering(lat, long).tolist()
        return Answer(lat, long, self.decide(concern, positions), self.index_generation)

    def resolve_many(
        self,
        lats: Sequence[float] | npt.ArrayLike,
        longs: Sequence[float] | npt.ArrayLike,
        concerns: Sequence[str | None] | None = None,
    ) -> BatchAnswers:
        """Answers for many points at once, in input order; a bad point is an error, not a gap.

        The covers tests run vectorized over all valid points; decisions are shared between
        points with the same covering jurisdictions.
        """
        lat_array = np.asarray(lats, dtype=np.float64)
        long_array = np.asarray(longs, dtype=np.float64)
        if lat_array.shape != long_array.shape or lat_array.ndim != 1:
            raise InvalidInput("lats and longs must be flat sequences of the same length")
        if concerns is not None and len(concerns) != len(lat_array):
            raise InvalidInput("concerns must have one entry per point")
        valid = (
            np.isfinite(lat_array)
            & np.isfinite(long_array)
            & (np.abs(lat_array) <= 90.0)
            & (np.abs(long_array) <= 180.0)
        )
        valid_indices = np.flatnonzero(valid)
        point_hits, positions = self.index.covering_many(
            lat_array[valid_indices], long_array[valid_indices]
        )
        return BatchAnswers(
            self, lat_array, long_array, concerns, valid, valid_indices[point_hits], positions
        )

    def resolve_rows(
        self, rows: Sequence[T], read_point: Callable[[T], tuple[float, float, str | None]]
    ) -> list[Answer | GeoWebError]:
        """Answers for records of any shape (CSV rows, JSON objects, GeoJSON features), in order.

        ``read_point`` turns a record into ``(lat, long, concern)``; a :class:`GeoWebError` it
        raises becomes that record's answer, so a bad record keeps its place.
        """
        lats: list[float] = []
        longs: list[float] = []
        concerns: list[str | None] = []
        errors: dict[int, GeoWebError] = {}
        for i, row in enumerate(rows):
            try:
                lat, long, concern = read_point(row)
            except GeoWebError as error:
                errors[i] = error
                lat, long, concern = 0.0, 0.0, None
            lats.append(lat)
            longs.append(long)
            concerns.append(concern)
        answers = self.resolve_many(lats, longs, concerns)
        return [errors.get(i) or answer for i, answer in enumerate(answers)]

    def decide(
        self, concern: str | None, positions: Sequence[int], *, keep: bool = True
    ) -> Decision:
        """The decision for a concern given the covering jurisdictions' positions, ascending.

        Cached: the cache forgets everything when full, which is rare for single points (a
        resolver has at most a few decisions per jurisdiction and concern) and keeps each hit to
        one dict lookup. ``keep=False`` reads the cache but leaves a new decision out of it: a
        batch shares its own decisions, and one over a large registry would otherwise fill the
        cache and empty it for the single points a server answers.
        """
        key = (concern, tuple(positions))
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(concern, key[1])
            if keep:
                if len(self._decisions) >= self._decision_cache_size:
                    self._decisions.clear()
                self._decisions[key] = decision
        return decision

    def candidate(self, position: int, concern: str | None) -> Candidate:
        """A covering jurisdiction and how it relates to the concern."""
        jurisdiction = self.jurisdictions[position]
        if concern is None:
            return Candidate(jurisdiction, "any")
        catalog = self._catalogs[position]
        if catalog is None:
            return Candidate(jurisdiction, "unverified")
        matches: tuple[ServiceMatch, ...] = catalog.match(concern)
        return Candidate(jurisdiction, "verified" if matches else "not_offered", matches)

    def _decide(self, concern: str | None, positions: tuple[int, ...]) -> Decision:
        # Batches over a large registry take a decision for nearly every point (each covering
        # set is new), so the usual case, one covering jurisdiction, takes no sort or generator.
        if len(positions) > 1:
            rank = self._rank
            positions = tuple(sorted(positions, key=lambda p: int(rank[p])))
        candidates = [self.candidate(p, concern) for p in positions]
        # An entry that names no way to reach it (a boundary imported alone, say) does not
        # shadow a covering one that does; it is chosen only when no covering one does.
        chosen: Candidate | None = None
        for c in candidates:
            if c.concern_status != "not_offered":
                if not _silent(c.jurisdiction):
                    chosen = c
                    break
                chosen = chosen or c
        alternatives = (
            tuple(_why_not(c, chosen, concern) for c in candidates if c is not chosen)
            if len(candidates) > 1 or chosen is None
            else ()
        )
        endpoint: Endpoint | None = chosen.jurisdiction.endpoint if chosen is not None else None
        reason: FallbackReason | None = None
        if chosen is None:
            reason = "concern_not_offered" if candidates else "no_jurisdiction"
        elif endpoint is None:
            reason = "no_endpoint"
        provenance: tuple[Provenance, ...] = chosen.jurisdiction.provenance if chosen else ()
        fallback = self.fallback if reason is not None else None
        if fallback is not None:
            endpoint = Endpoint(url=fallback.url, note=fallback.name)
            provenance = (*provenance, fallback.provenance())
        return Decision(concern, chosen, alternatives, endpoint, fallback, reason, provenance)


def _silent(jurisdiction: Jurisdiction) -> bool:
    """Names no way to reach it: no endpoint, no discovery URL, no domain (whose DNS could)."""
    return not (jurisdiction.endpoints or jurisdiction.discovery_url or jurisdiction.domain)


def _why_not(candidate: Candidate, chosen: Candidate | None, concern: str | None) -> Candidate:
    if candidate.concern_status == "not_offered":
        why = f"its services list offers nothing matching {concern!r}"
    elif (
        chosen is not None and _silent(candidate.jurisdiction) and not _silent(chosen.jurisdiction)
    ):
        why = (
            "it names no way to reach it (no endpoint, discovery URL or domain); "
            f"{chosen.jurisdiction.name} ({chosen.jurisdiction.id}) does"
        )
    elif chosen is not None:
        why = f"less specific than {chosen.jurisdiction.name} ({chosen.jurisdiction.id})"
    else:  # pragma: no cover - every candidate is either refused or less specific
        why = "not chosen"
    return Candidate(candidate.jurisdiction, candidate.concern_status, candidate.matches, why)


def _boundary_keys(jurisdictions: Sequence[Jurisdiction]) -> list[tuple[str, str | None]]:
    return [(j.id, j.boundary_generation) for j in jurisdictions]


def _index_generation(jurisdictions: Sequence[Jurisdiction]) -> str:
    """Names the whole set of boundaries an answer was computed on."""
    ordered = sorted(jurisdictions, key=attrgetter("id"))
    text = "".join(f"{j.id}\0{j.boundary_generation or '-'}\n" for j in ordered)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BatchAnswers(Sequence["Answer | GeoWebError"]):
    """Answers of :meth:`Resolver.resolve_many`, in input order, each an Answer or the error.

    Columnar: every point's decision is taken when the batch is built, once per distinct
    (concern, covering set); ``decisions`` holds them and ``decision_index[i]`` says which one
    point ``i`` has (``-1`` for a bad point). An :class:`Answer` is a light view built when read.
    """

    def __init__(
        self,
        resolver: Resolver,
        lats: npt.NDArray[np.float64],
        longs: npt.NDArray[np.float64],
        concerns: Sequence[str | None] | None,
        valid: npt.NDArray[np.bool_],
        point_hits: npt.NDArray[np.intp],
        positions: npt.NDArray[np.intp],
    ) -> None:
        self._resolver = resolver
        self._lats = lats
        self._longs = longs
        self._raw_concerns = concerns
        n = len(lats)
        starts = np.searchsorted(point_hits, np.arange(n + 1))
        counts = np.diff(starts)
        # One integer per covering set: -1 none, a position for a single one (the common case),
        # and numbers past the positions for the rare sets of several (points on borders).
        set_key = np.full(n, -1, dtype=np.int64)
        single = counts == 1
        set_key[single] = positions[starts[:-1][single]]
        sets: dict[int, tuple[int, ...]] = {}
        multi_keys: dict[tuple[int, ...], int] = {}
        base = len(resolver.jurisdictions)
        for i in np.flatnonzero(counts > 1).tolist():
            members = tuple(positions[starts[i] : starts[i + 1]].tolist())
            key = multi_keys.setdefault(members, base + len(multi_keys))
            sets[key] = members
            set_key[i] = key
        concern_code, concern_values = self._concern_codes(concerns, valid)
        usable = valid & (concern_code >= 0)
        width = base + len(multi_keys) + 1
        combined = np.where(usable, concern_code * width + set_key + 1, -1)
        unique, inverse = np.unique(combined, return_inverse=True)
        self.decisions: list[Decision | None] = []
        for code in unique.tolist():
            if code < 0:
                self.decisions.append(None)
                continue
            concern, key = concern_values[code // width], code % width - 1
            members = () if key < 0 else sets.get(key, (key,))
            self.decisions.append(resolver.decide(concern, members, keep=False))
        #: Which of ``decisions`` each point has; -1 for a point with an error.
        self.decision_index: npt.NDArray[np.intp] = np.where(usable, inverse, -1)
        self._index_list: list[int] = self.decision_index.tolist()

    @staticmethod
    def _concern_codes(
        concerns: Sequence[str | None] | None, valid: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.int64], list[str | None]]:
        """A small integer per point's cleaned concern (-1 when it is invalid), and the values."""
        if concerns is None:
            return np.zeros(len(valid), dtype=np.int64), [None]
        codes: dict[str | None, int] = {}
        out = np.empty(len(concerns), dtype=np.int64)
        for i, raw in enumerate(concerns):
            try:
                concern = clean_concern(raw)
            except GeoWebError:
                out[i] = -1
                continue
            out[i] = codes.setdefault(concern, len(codes))
        return out, list(codes)

    def __len__(self) -> int:
        return len(self._lats)

    def __getitem__(self, i: int) -> Answer | GeoWebError:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        which = self._index_list[i]
        decision = self.decisions[which] if which >= 0 else None
        if decision is None:
            return self._error(i)
        lat, long = float(self._lats[i]), float(self._longs[i])
        return Answer(lat, long, decision, self._resolver.index_generation)

    def _error(self, i: int) -> GeoWebError:
        try:
            check_point(float(self._lats[i]), float(self._longs[i]))
            if self._raw_concerns is not None:
                clean_concern(self._raw_concerns[i])
        except GeoWebError as error:
            return error
        raise AssertionError(f"point {i} has no decision and no error")  # pragma: no cover

    def __iter__(self) -> Iterator[Answer | GeoWebError]:
        generation = self._resolver.index_generation
        decisions = self.decisions
        for i, (lat, long, which) in enumerate(
            zip(self._lats.tolist(), self._longs.tolist(), self._index_list, strict=True)
        ):
            decision = decisions[which] if which >= 0 else None
            yield self._error(i) if decision is None else Answer(lat, long, decision, generation)
