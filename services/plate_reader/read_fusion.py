"""Vote: read each plate's number line twice and keep what agrees.

    ranked = read_voted(ocr, text_lines, crops, rank)   # per crop: candidates, best first
    fuse(first, second)                                  # two readings' candidates -> one list

1. The first read is the number's line(s) (text_lines.py) stretched STRETCH times wider. The
   recogniser emits one character guess per 8 input columns (CTC); at the cut's own width a
   narrow character gets 2-3 guesses, and a doubled letter (KK, WW) or a thin middle character
   was merged away confidently ("KRW301" read KR301 at 0.985). Stretched, each gets more.
   A line tilted SHEAR_FROM degrees or more is cut twice, rotated level (a camera's roll) and
   sheared level (a plate seen from the side: its baseline tilts, its characters' strokes stay
   vertical), both read in the same call; the cut whose ranked reading is surer is the plate's,
   and its second read's (below).
2. A first read less sure than SECOND_READ_BELOW is read again at the cut's own width, in one
   more recogniser call for all such plates (it needs the first read's scores), with the
   crop's smaller side lines (a US state name, Mercosur's "BRASIL") read in that same
   call for plate_regions' region hint. The two readings
   agree: the surer one stands (a Croatian plate's arms read as a letter in the stretched line
   and dropped by the rules, flagged, are read as a symbol at the cut's own width, surely).
   They disagree: the better-scoring one ranks first, the other's plate follows it among the
   candidates, and both are capped at DISAGREE_CAP: `review`.
3. With a plate-tuned recogniser (settings.ocr_tuned_model; by default the tail shipped in
   services/plate_reader/models/), it reads every plate's stretched line too, as the base's
   equal (fuse_equals): a tuned tail (tuned_tail.py) in the first read's own call, a whole
   tuned model in one more call. Read alike, the plate scores agreed() (agreement is
   evidence); read apart, as in 2. Its scores are temperature-calibrated on dev crops first
   (calibrate_plate_ocr.py): alone it was over-sure on synthetic plates and under-sure on
   real ones.
4. A sure plate the text detector may have boxed short is read again, its rows widened to the
   crop's ends, in one more call, or flagged (truncation.check_ends).

Measured on the dev data (seed-2 synthetic crops and US street crops, real dev crops; README):
stretching alone read more plates and fewer wrong ones were auto-accepted; voting removed
more wrong auto-accepts. Reading the whole crop as the second read was measured and dropped:
it disagreed with a right cut on 69 of 400 synthetic crops (a state name, a band or merged
letters in it), so it would have flagged them. Character-level fusion of equal-length reads
read 2 fewer plates than picking the better-scoring reading, so it is not here. Small plates
are already read upscaled (lines found at 128 px high, cut at the recogniser's 48 px); a Lanczos
upscale of crops under 100 px wide to 200 px before that was measured and dropped: on the 87
such seed-2 synthetic crops it read 3 fewer exactly and auto-accepted 10 fewer (1 fewer wrong),
on 96 US street crops the same plates with 1 more wrong accepted, on 12 real ones the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from PIL import Image

from services.plate_reader.crops import band_edges, split_rows, trim_bands
from services.plate_reader.ocr import PlateOCR
from services.plate_reader.plate_regions import RegionHint, region_hint
from services.plate_reader.text_lines import (
    ROW_SHARE,
    TextLine,
    TextLineFinder,
    cut_line,
    cut_sheared,
    plate_rows,
)
from services.plate_reader.truncation import check_ends
from services.plate_reader.types import Candidate, OcrResult

# The first read's horizontal stretch. 1.5 and 2 were compared on the seed-2 dev crops' reads
# (voted as here): 2 let fewer wrong reads through (3 of 327 auto-accepted against 4 of 333).
STRETCH = 2.0
# Lines tilted this much (degrees) or more are read sheared as well as rotated level. Dev sets
# (PP-OCRv6, 2026-12-06): at 3, two real photos (tilts of 3-6 degrees) auto-accepted that were
# flagged, a camera crop and a synthetic crop read right that were wrong, one camera crop
# flagged that was accepted, no wrong accept; at 6 the real photos' gain was gone.
SHEAR_FROM = 3.0
# The second read runs only below this first-read confidence: at 0.98 it ran on 32% of the dev
# plates and stopped as many wrong auto-accepts as running it on all of them.
SECOND_READ_BELOW = 0.98
# Two readings that disagree are both at most this sure: flagged at any usual threshold.
DISAGREE_CAP = 0.5
# Side lines read for the region hint: at most this many per plate, the widest, each at least
# SIDE_ASPECT times as long as high (a word, not a sticker's digit or a bolt).
MAX_SIDE_LINES, SIDE_ASPECT = 2, 2.5
# Sure plates whose number line may be cut short are read again widened (truncation.py); False
# measures the reader without it (tests/benchmarks/probe_truncation.py).
CHECK_ENDS = True

Rank = Callable[[OcrResult, int, RegionHint | None], tuple[Candidate, ...]]


def read_voted(
    ocr: PlateOCR,
    finder: TextLineFinder,
    crops: Sequence[np.ndarray],
    rank: Rank,
    tuned: PlateOCR | None = None,
) -> list[tuple[Candidate, ...]]:
    """Ranked candidates for each crop; ``rank(reading, crop index, hint)`` applies the rules.
    With a tuned tail grafted on ``ocr`` (or a whole ``tuned`` recogniser), a second reading of
    every plate's stretched line is fused with the first as an equal (fuse_equals)."""
    if not crops:
        return []
    found = finder.find(crops)
    rows = [plate_rows(lines) for lines in found]
    edges = [band_edges(crop) for crop in crops]  # the blue bands, found once a crop
    plain = [
        [cut_line(crop, row) for row in crop_rows] if crop_rows else split_rows(trim_bands(crop, crop_edges))
        for crop, crop_rows, crop_edges in zip(crops, rows, edges)
    ]
    bands = [top > 0 for top, _, _ in edges]  # a top band was cut off
    hints = [region_hint((), mercosur_band=band) for band in bands]
    tilted = [i for i, r in enumerate(rows) if r and max(abs(row.angle) for row in r) >= SHEAR_FROM]
    sheared = [[cut_sheared(crops[i], row) for row in rows[i]] for i in tilted]
    stretched = [[stretch(line) for line in lines] for lines in [*plain, *sheared]]
    reads, tail_reads = ocr.read_both(stretched)  # a tuned tail's reads come from the same call
    first, stretched_first = reads[: len(crops)], stretched[: len(crops)]
    kept = list(range(len(crops)))  # which cut's reads are each plate's
    for k, (i, lines) in enumerate(zip(tilted, sheared), start=len(crops)):
        if _sureness(rank(reads[k], i, hints[i])) > _sureness(rank(first[i], i, hints[i])):
            # The sheared cut is the plate's: its second read and the tuned read read it too.
            first[i], plain[i], stretched_first[i], kept[i] = reads[k], lines, stretched[k], k
    if tail_reads is not None:
        other: list[OcrResult] | None = [tail_reads[k] for k in kept]
    else:
        other = tuned.read_lines(stretched_first) if tuned is not None else None

    def both(i: int, hint: RegionHint | None) -> tuple[Candidate, ...]:
        mine = rank(first[i], i, hint)
        return mine if other is None else fuse_equals(mine, rank(other[i], i, hint))

    ranked = [both(i, hints[i]) for i in range(len(crops))]
    unsure = [i for i, candidates in enumerate(ranked) if _sureness(candidates) < SECOND_READ_BELOW]
    if unsure:
        sides = [[cut_line(crops[i], line) for line in side_lines(found[i], rows[i])] for i in unsure]
        # One call: each unsure plate's lines, then each side line on its own.
        again = ocr.read_lines([plain[i] for i in unsure] + [[line] for lines in sides for line in lines])
        side_texts = iter(again[len(unsure) :])
        for i, second, lines in zip(unsure, again, sides):
            hint = region_hint([next(side_texts).text for _ in lines], mercosur_band=bands[i])
            if hint != hints[i]:
                ranked[i], hints[i] = both(i, hint), hint
            ranked[i] = fuse(ranked[i], rank(second, i, hint))
    if not CHECK_ENDS:
        return ranked
    # A sure plate the text detector may have boxed short, read again widened (truncation.py).
    return check_ends(
        ocr,
        crops,
        edges,
        found,
        rows,
        ranked,
        lambda reading, i: rank(reading, i, hints[i]),
        # Widened rows are cut rotated level whichever cut the first read kept: the check's
        # thresholds were chosen on those, and with the sheared cut a Slovak plate's district
        # code the detector missed (NR [arms] 599NA, dev seed 5) went unseen, 599NA accepted.
        lambda crop, row: stretch(cut_line(crop, row)),
    )


def fuse(first: Sequence[Candidate], second: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """One candidate list from two readings of a plate: the surer one's when their best plates
    agree (``first`` on a tie, or when the second read nothing); otherwise the better-scoring
    reading's list first, then the other's best plate, every confidence capped at DISAGREE_CAP.

    Agreeing, the surer reading's confidence stands: on the dev sets that auto-accepted 29 more
    right plates (10 of them camera crops) and no wrong one, against keeping the first reading's
    (README, "Coats of arms")."""
    if not first or not second:
        return tuple(first or second)
    if first[0].plate == second[0].plate:
        return tuple(second if second[0].confidence > first[0].confidence else first)
    winner, loser = (first, second) if first[0].score >= second[0].score else (second, first)
    merged = [*winner, *(loser[:1] if loser[0].plate not in {c.plate for c in winner} else ())]
    return tuple(replace(c, confidence=min(c.confidence, DISAGREE_CAP)) for c in merged)


def fuse_equals(first: Sequence[Candidate], second: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """Two recognisers' readings of one plate, neither preferred (Laroca et al. 2023, model
    fusion). Their best plates agree: the surer reading's list, its best plate at
    ``agreed(first, second)`` (agreement is evidence). They disagree: fuse() (the surer
    reading first, the other's plate after it, both flagged). One read nothing: the other.
    A plate no format fits gains nothing from agreeing: it keeps the surer reading's score,
    which rank_candidates holds below any review threshold (NO_FORMAT_FACTOR): two recognisers
    reading only a two-row plate's "PZ" row alike had lifted it to 0.94, accepted (dev, 3 of the
    11 wrong accepts over seeds 2 and 5)."""
    if not first or not second:
        return tuple(first or second)
    if first[0].plate != second[0].plate:
        return fuse(first, second)
    surer = first if first[0].confidence >= second[0].confidence else second
    if surer[0].region is None:
        return tuple(surer)
    return (replace(surer[0], confidence=agreed(first[0].confidence, second[0].confidence)), *surer[1:])


def agreed(one: float, other: float) -> float:
    """The score of a plate two recognisers read alike: wrong only if both are, 1 - (1-a)(1-b).
    On the dev sets this kept the wrong auto-accepts at the base's 8 and accepted 533 right
    plates, against 505 with the surer one's score (max) and 485 for the base alone (README)."""
    return 1.0 - (1.0 - one) * (1.0 - other)


def stretch(line: np.ndarray, factor: float = STRETCH) -> np.ndarray:
    height, width = line.shape[:2]
    size = (max(1, round(width * factor)), height)
    return np.asarray(Image.fromarray(np.ascontiguousarray(line)).resize(size, Image.Resampling.BILINEAR))


def side_lines(lines: Sequence[TextLine], rows: Sequence[TextLine]) -> list[TextLine]:
    """The crop's word-shaped lines smaller than its number (a state name, a slogan, a band's
    text), widest first, at most MAX_SIDE_LINES."""
    if not rows:
        return []
    tallest = max(row.height for row in rows)
    words = [
        line
        for line in lines
        if line.height < ROW_SHARE * tallest and line.length >= SIDE_ASPECT * line.height
    ]
    return sorted(words, key=lambda line: -line.length)[:MAX_SIDE_LINES]


def _sureness(candidates: Sequence[Candidate]) -> float:
    return candidates[0].confidence if candidates else 0.0
