"""Fuzzy matching of plate readings against one watchlist: pure logic, no database, no HTTP.

    index = WatchlistIndex.build([ListedPlate("AB12CDE", note="stolen", tags=("police",))],
                                 Tolerance(lookalikes=True, max_distance=1))
    index.match(["A812CDE", "AB12CD"])  # the reading and its candidates, best first
    # -> [Match(plate="AB12CDE", distance=0, matched="A812CDE", ...)]

Tolerance, per list:
- look-alikes cost nothing: the characters the OCR confuses are one class (LOOKALIKES: O/0/Q,
  I/1, Z/2, S/5, B/8 and G/6; Q and G/6 are ours beyond the issue's five). Others the plate
  rules know (D/0, L/1, A/4, T/7) are not free: with `substitutions` on they cost one edit.
- `max_distance` (0-2) edits more: a missing or extra character costs 1 (the OCR drops an
  edge character or reads a bolt as "I"). With `substitutions` on, a wrong character costs 1
  too (Levenshtein); off (the default), it does not match at one edit, because AB12CDF is
  usually another car, not a misread AB12CDE (Indel distance: a wrong character is 2).
- edits need both texts at least MIN_FUZZY_LENGTH long: "AB1" within one edit of half a car park.

Speed: no scan of the list per reading. Each listed plate's match key (look-alikes folded)
and its deletion variants up to `max_distance` deletions are hashed into one sorted numpy
array (symmetric delete, as SymSpell): a reading's own deletion variants are looked up with
one `searchsorted`, and only the few plates sharing a variant get a real distance
(rapidfuzz). tests/benchmarks/bench_watchlist.py measures it (lists of 1k-100k plates).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from rapidfuzz.distance import Indel, Levenshtein

# Each group is one class: every member maps to the first.
LOOKALIKES = ("0OQ", "1I", "2Z", "5S", "8B", "6G")
_FOLD = str.maketrans({char: group[0] for group in LOOKALIKES for char in group[1:]})
MAX_DISTANCE = 2  # the edit budget a list may ask for: 37 deletion variants of an 8-character plate
MIN_FUZZY_LENGTH = 4


def fold_lookalikes(plate: str) -> str:
    """``"AB12CDE"`` -> ``"A812CDE"``: each look-alike class as one character."""
    return plate.translate(_FOLD)


@dataclass(frozen=True)
class Tolerance:
    lookalikes: bool = True  # O/0, B/8, ... cost nothing
    max_distance: int = 1  # edits beyond look-alikes: a missing or extra character costs 1
    substitutions: bool = False  # a wrong (not look-alike) character counts as one edit too

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= MAX_DISTANCE:
            raise ValueError(f"max_distance must be 0 to {MAX_DISTANCE}, got {self.max_distance}")

    def key(self, plate: str) -> str:
        return fold_lookalikes(plate) if self.lookalikes else plate

    def distance(self, a: str, b: str) -> int:
        """Edits between two match keys; above max_distance: max_distance + 1."""
        metric = Levenshtein if self.substitutions else Indel
        return int(metric.distance(a, b, score_cutoff=self.max_distance))


@dataclass(frozen=True)
class ListedPlate:
    plate: str  # A-Z0-9, as listed (watchlists.normalise_plate)
    note: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    plate: str  # the listed plate
    distance: int  # edits between it and `matched`, look-alikes free
    matched: str  # the reading's text that matched: its plate, or one of its candidates
    note: str | None
    tags: tuple[str, ...]


def deletions(key: str, depth: int) -> set[str]:
    """`key` and every string made from it by deleting up to `depth` characters."""
    out = {key}
    for n in range(1, min(depth, len(key)) + 1):
        out.update(
            "".join(key[i] for i in range(len(key)) if i not in gone)
            for gone in combinations(range(len(key)), n)
        )
    return out


def _variants(key: str, tolerance: Tolerance) -> set[str]:
    fuzzy = tolerance.max_distance if len(key) >= MIN_FUZZY_LENGTH else 0
    return deletions(key, fuzzy)


class WatchlistIndex:
    """One list's plates, ready to match. Immutable: a changed list gets a new index."""

    def __init__(
        self, plates: Sequence[ListedPlate], tolerance: Tolerance, hashes: np.ndarray, ids: np.ndarray
    ) -> None:
        self.plates, self.tolerance, self._hashes, self._ids = plates, tolerance, hashes, ids
        self._keys = [tolerance.key(p.plate) for p in plates]

    @classmethod
    def build(cls, plates: Sequence[ListedPlate], tolerance: Tolerance) -> WatchlistIndex:
        hashes: list[int] = []
        ids: list[int] = []
        for i, listed in enumerate(plates):
            variants = _variants(tolerance.key(listed.plate), tolerance)
            hashes.extend(hash(v) for v in variants)
            ids.extend([i] * len(variants))
        order = np.argsort(np.array(hashes, dtype=np.int64), kind="stable")
        return cls(
            tuple(plates),
            tolerance,
            np.array(hashes, dtype=np.int64)[order],
            np.array(ids, dtype=np.int32)[order],
        )

    def __len__(self) -> int:
        return len(self.plates)

    @property
    def nbytes(self) -> int:
        """The numpy index's bytes (the plates' own text is apart)."""
        return int(self._hashes.nbytes + self._ids.nbytes)

    def match(self, texts: Iterable[str]) -> list[Match]:
        """Listed plates within tolerance of any of `texts` (a reading's plate first, then its
        other candidates): each listed plate once, at its smallest distance, closest first."""
        best: dict[int, tuple[int, int, str]] = {}  # plate id -> (distance, text's rank, text)
        for rank, text in enumerate(texts):
            if not text:
                continue
            key = self.tolerance.key(text)
            probes = np.array([hash(v) for v in _variants(key, self.tolerance)], dtype=np.int64)
            starts = np.searchsorted(self._hashes, probes, side="left")
            ends = np.searchsorted(self._hashes, probes, side="right")
            for start, end in zip(starts.tolist(), ends.tolist()):
                for plate_id in self._ids[start:end].tolist():
                    listed_key = self._keys[plate_id]
                    short = min(len(key), len(listed_key)) < MIN_FUZZY_LENGTH
                    distance = (
                        (0 if key == listed_key else 1) if short else self.tolerance.distance(key, listed_key)
                    )
                    if distance > (0 if short else self.tolerance.max_distance):
                        continue
                    if plate_id not in best or (distance, rank) < best[plate_id][:2]:
                        best[plate_id] = (distance, rank, text)
        found = sorted(best.items(), key=lambda item: (item[1][0], item[1][1], self.plates[item[0]].plate))
        return [
            Match(self.plates[i].plate, distance, text, self.plates[i].note, self.plates[i].tags)
            for i, (distance, _, text) in found
        ]
