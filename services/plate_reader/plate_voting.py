"""One plate for a vehicle from its readings across frames: a character-by-character vote.

    voted = vote(track_readings, review_threshold=0.93)
    voted.plate, voted.score, voted.review, voted.candidates, voted.agreeing

Each reading votes with its weight (its score, the weakest character's confidence, floored at
MIN_WEIGHT so an unsure read still counts a little). Readings are aligned to the length that
carries the most weight: one of another length (a character dropped or an extra one read at a
distance) is aligned to the heaviest reading of that length by edit distance, and votes at the
positions it matches; what it adds or leaves out votes nowhere. Each position's winner is the
character with the most weight.

`score` follows the photos' contract (a read without `review` must be right): the best score
among the readings that read exactly the voted plate, raised by each further frame that agrees
(AGREE_GAIN) and held down by the share of weight that read something else (`support`). A
voted plate no single frame read gets the weakest position's share times the best reading's
score: agreement is evidence, a stitched plate is not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from services.plate_reader.types import Candidate, PlateReading

MIN_WEIGHT = 0.05  # a read at score 0 still says how many characters there are
# Each further frame that reads the same plate removes this share of the remaining doubt. Tuned
# on the dev seed of tests/benchmarks/bench_video_voting.py (README, "Video").
AGREE_GAIN = 0.35
# How hard a dissenting share of the weight holds the score down: score x support ** this.
SUPPORT_POWER = 0.5
MAX_CANDIDATES = 5


@dataclass(frozen=True)
class VotedPlate:
    plate: str
    score: float  # 0-1, the photos' measure, with agreement across frames as evidence
    review: bool  # score below the review threshold: a human should check it
    candidates: tuple[Candidate, ...]  # the voted plate first, then the other plates read
    agreeing: int  # frames that read exactly `plate`
    support: float  # the share of the vote's weight whose reading is exactly `plate`


def vote(readings: Sequence[PlateReading], *, review_threshold: float) -> VotedPlate:
    read = [r for r in readings if r.plate]
    if not read:
        return VotedPlate("", 0.0, True, (), 0, 0.0)
    weights = [max(r.score, MIN_WEIGHT) for r in read]
    by_length: dict[int, float] = defaultdict(float)
    for r, w in zip(read, weights):
        by_length[len(r.plate)] += w
    length = max(by_length, key=lambda n: (by_length[n], n))
    anchor = max((r for r in read if len(r.plate) == length), key=lambda r: r.score).plate
    tallies: list[dict[str, float]] = [defaultdict(float) for _ in range(length)]
    for r, w in zip(read, weights):
        for position, char in _aligned(r.plate, anchor):
            tallies[position][char] += w
    winners = [max(t.items(), key=lambda kv: kv[1]) for t in tallies]
    plate = "".join(char for char, _ in winners)
    total = sum(weights)
    agreeing = [r for r in read if r.plate == plate]
    # Readings of another length count against it fully: on the dev clips, counting them half let a
    # US plate read without its leading 5 on 3 of 4 frames through (RMZ192 for 5RMZ192, 0.937).
    support = sum(w for r, w in zip(read, weights) if r.plate == plate) / total
    if agreeing:
        best = max(r.score for r in agreeing)
        doubt = (1 - best) * (1 - AGREE_GAIN) ** (len(agreeing) - 1)
        score = (1 - doubt) * support**SUPPORT_POWER
    else:
        share = min(w / sum(t.values()) for (_, w), t in zip(winners, tallies))
        score = share * max(r.score for r in read) * support
    score = round(min(score, 1.0), 4)
    return VotedPlate(
        plate,
        score,
        score < review_threshold,
        _candidates(plate, score, read, weights, total),
        len(agreeing),
        round(support, 4),
    )


def _candidates(
    plate: str, score: float, read: Sequence[PlateReading], weights: Sequence[float], total: float
) -> tuple[Candidate, ...]:
    """The voted plate, then every other plate a frame read, by the share of weight behind it
    (as `confidence`, the photos' candidate measure)."""
    shares: dict[str, float] = defaultdict(float)
    for r, w in zip(read, weights):
        if r.plate != plate:
            shares[r.plate] += w / total
    others = sorted(shares.items(), key=lambda kv: -kv[1])[: MAX_CANDIDATES - 1]
    return (Candidate(plate, score, None, score), *(Candidate(p, s, None, round(s, 4)) for p, s in others))


def _aligned(text: str, anchor: str) -> list[tuple[int, str]]:
    """(position in anchor, char) for each char of `text` matched or substituted against
    `anchor` by the least edits (Levenshtein, ties: substitution first)."""
    if len(text) == len(anchor):
        return list(enumerate(text))
    rows, cols = len(text) + 1, len(anchor) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i][j] = min(
                cost[i - 1][j - 1] + (text[i - 1] != anchor[j - 1]), cost[i - 1][j] + 1, cost[i][j - 1] + 1
            )
    pairs, i, j = [], len(text), len(anchor)
    while i and j:
        if cost[i][j] == cost[i - 1][j - 1] + (text[i - 1] != anchor[j - 1]):
            pairs.append((j - 1, text[i - 1]))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1  # an extra character in text: it votes nowhere
        else:
            j -= 1  # a character text left out: no vote at that position
    return pairs[::-1]
