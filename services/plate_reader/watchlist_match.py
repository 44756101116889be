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

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import NamedTuple

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


class ListedPlate(NamedTuple):  # a tuple: 100,000 of them are made per upload and per load
    plate: str  # A-Z0-9, as listed (watchlist_store.normalise_plate)
    note: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    plate: str  # the listed plate
    distance: int  # edits between it and `matched`, look-alikes free
    matched: str  # the reading's text that matched: its plate, or one of its candidates
    note: str | None
    tags: tuple[str, ...]


# A variant's hash: sum of (byte + 1) * P^j, plus its length times another odd number, modulo
# 2^64 (numpy's uint64 wraps). Collisions only cost a distance computed for nothing.
_MASK = (1 << 64) - 1
_POWERS = np.array([pow(0x9E3779B97F4A7C15, j, 1 << 64) for j in range(32)], dtype=np.uint64)
_LENGTH_SALT = np.array([(n * 0xC2B2AE3D27D4EB4F) & _MASK for n in range(32)], dtype=np.uint64)
_CHUNK = 8192  # plates hashed at once: bounds the temporary (chunk x variants x length) array


@functools.cache
def _kept_columns(length: int, gone: int) -> np.ndarray:
    """For each way of deleting `gone` of `length` characters, the positions kept."""
    return np.array(
        [[j for j in range(length) if j not in drop] for drop in combinations(range(length), gone)],
        dtype=np.intp,
    ).reshape(-1, length - gone)


def variant_hashes(keys: Sequence[str], depth: int) -> np.ndarray:
    """Hashes of each key (all of one length) and of every string made from it by deleting up
    to `depth` characters: an array (len(keys), variants), vectorised over the keys."""
    length = len(keys[0])
    chars = np.frombuffer("".join(keys).encode("ascii"), dtype=np.uint8).reshape(len(keys), length)
    parts = []
    for gone in range(min(depth, length - 1) + 1):
        kept, size = _kept_columns(length, gone), length - gone
        parts.append(
            np.concatenate(
                [
                    (chars[i : i + _CHUNK][:, kept].astype(np.uint64) + 1) @ _POWERS[:size]
                    + _LENGTH_SALT[size]
                    for i in range(0, len(keys), _CHUNK)
                ]
            )
        )
    return np.concatenate(parts, axis=1)


def deletions(key: str, depth: int) -> set[str]:
    """`key` and every string made from it by deleting up to `depth` characters (what
    `variant_hashes` hashes, as text)."""
    out, frontier = {key}, {key}
    for _ in range(depth):
        frontier = {v[:i] + v[i + 1 :] for v in frontier for i in range(len(v)) if len(v) > 1}
        out |= frontier
    return out


def _depth(key: str, tolerance: Tolerance) -> int:
    return tolerance.max_distance if len(key) >= MIN_FUZZY_LENGTH else 0


class WatchlistIndex:
    """One list's plates, ready to match. Immutable: a changed list gets a new index."""

    def __init__(
        self,
        plates: Sequence[ListedPlate],
        keys: list[str],
        tolerance: Tolerance,
        hashes: np.ndarray,
        ids: np.ndarray,
    ) -> None:
        self.plates, self._keys, self.tolerance, self._hashes, self._ids = (
            plates,
            keys,
            tolerance,
            hashes,
            ids,
        )

    @classmethod
    def build(cls, plates: Sequence[ListedPlate], tolerance: Tolerance) -> WatchlistIndex:
        keys = [tolerance.key(p.plate) for p in plates]
        by_length: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            by_length.setdefault(len(key), []).append(i)
        hashes, ids = [np.empty(0, np.uint64)], [np.empty(0, np.int32)]
        for members in by_length.values():
            found = variant_hashes([keys[i] for i in members], _depth(keys[members[0]], tolerance))
            hashes.append(found.ravel())
            ids.append(np.repeat(np.array(members, dtype=np.int32), found.shape[1]))
        all_hashes = np.concatenate(hashes)
        order = np.argsort(all_hashes)
        return cls(tuple(plates), keys, tolerance, all_hashes[order], np.concatenate(ids)[order])

    def __len__(self) -> int:
        return len(self.plates)

    @property
    def nbytes(self) -> int:
        """The numpy index's bytes (the plates' own text is apart)."""
        return int(self._hashes.nbytes + self._ids.nbytes)

    def match(self, texts: Sequence[str], probes: Probes | None = None) -> list[Match]:
        """Listed plates within tolerance of any of `texts` (a reading's plate first, then its
        other candidates): each listed plate once, at its smallest distance, closest first.
        `probes`: `Probes.of(texts, tolerance)` made once for several lists of one tolerance."""
        probes = probes or Probes.of(texts, self.tolerance)
        starts = np.searchsorted(self._hashes, probes.hashes, side="left")
        ends = np.searchsorted(self._hashes, probes.hashes, side="right")
        best: dict[int, tuple[int, int]] = {}  # plate id -> (distance, rank of the text)
        for hit in np.flatnonzero(ends > starts).tolist():
            rank = int(probes.owners[hit])
            key = probes.keys[rank]
            for plate_id in self._ids[starts[hit] : ends[hit]].tolist():
                listed_key = self._keys[plate_id]
                if min(len(key), len(listed_key)) < MIN_FUZZY_LENGTH:
                    distance = 0 if key == listed_key else MAX_DISTANCE + 1  # short: exact only
                else:
                    distance = self.tolerance.distance(key, listed_key)
                if distance <= self.tolerance.max_distance and (distance, rank) < best.get(plate_id, (99, 0)):
                    best[plate_id] = (distance, rank)
        found = sorted(best.items(), key=lambda item: (*item[1], self.plates[item[0]].plate))
        return [
            Match(self.plates[i].plate, distance, texts[rank], self.plates[i].note, self.plates[i].tags)
            for i, (distance, rank) in found
        ]


@dataclass(frozen=True)
class Probes:
    """A reading's texts as match keys, and the hashes of their deletion variants (which text
    each came from in `owners`): what every list of one tolerance looks up."""

    keys: tuple[str, ...]
    hashes: np.ndarray
    owners: np.ndarray

    @classmethod
    def of(cls, texts: Sequence[str], tolerance: Tolerance) -> Probes:
        keys = tuple(tolerance.key(t) for t in texts)
        by_shape: dict[tuple[int, int], list[int]] = {}  # (length, depth) -> texts
        for rank, key in enumerate(keys):
            if key:
                by_shape.setdefault((len(key), _depth(key, tolerance)), []).append(rank)
        hashes, owners = [np.empty(0, np.uint64)], [np.empty(0, np.intp)]
        for (_, depth), ranks in by_shape.items():
            found = variant_hashes([keys[r] for r in ranks], depth)
            hashes.append(found.ravel())
            owners.append(np.repeat(np.array(ranks, dtype=np.intp), found.shape[1]))
        return cls(keys, np.concatenate(hashes), np.concatenate(owners))
