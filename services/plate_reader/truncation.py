"""A number read short: the text detector boxed only part of it, and what was read still fits.

    ranked = check_ends(ocr, crops, edges, found, rows, ranked, rank, cut)   # read_fusion's last step
    widened_rows(rows, band_edges(crop))                              # each row out to the crop's ends

PP-OCR's text detector sometimes boxes part of a plate's number: the district code left of a
Slovak coat of arms (BA [arms] 294LS read 294LS), a last letter in infrared (PO100YU read
PO100Y), a first letter (SMZ796 read MZ796 at 0.9997), a two-row plate's lower row (BB076 / EF
read BB076). The recogniser reads the part it is given surely, and the part still fits a loose
layout, so it was auto-accepted. Two checks, on sure reads only:
- A plate of a loose layout (LOOSE_REGIONS) whose row leaves room for a character at either end
  is read once more, its rows widened to the crop's ends (a blue band's edge where there is
  one), in one recogniser call for the batch, and compared (compare_ends): the widened read
  holds the plate with plate characters beside it and reads that longer plate surely, as a
  format allows: the longer plate is taken; it holds sure plate characters beside it: flagged,
  the widened plate ranked with it.
- One row found high in the crop with nothing found below it (lower_row_lost), or low in it with
  no other row found above it (upper_row_lost): flagged.

Chosen on dev crops (README, "Numbers cut short"): the 911 crops of the dev sets and 2,200 more
of seed 5, where 13 sure reads were truncations. A widened read adds a low-confidence letter
beside most right plates (an edge, a bolt, a band's letter), and sure ones beside strict layouts
(an FR band's department number beside AA999AA), so neither alone may flag a plate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from services.plate_reader.ocr import PlateOCR
from services.plate_reader.plate_text import normalise
from services.plate_reader.text_lines import ROW_SHARE, TextLine
from services.plate_reader.types import Candidate, OcrResult

# Only reads at least this sure are checked: below it every usual review threshold flags them
# already (and read_fusion caps a disagreeing vote at 0.5).
CHECK_ABOVE = 0.5
# A row is checked when it leaves at least this many of its own heights to the crop's left or
# right end: room for a character (plate characters are 0.5-0.6 of their height wide). On the
# dev crops the sure truncations left 0.76-3.0 (with the loose layouts: 19% of dev plates checked).
ROOM = 0.6
# The widened read's longer plate is taken when it fits a format at least this sure. On the dev
# crops three truncations were read whole at 0.98-1.0; the surest longer plate beside a right
# read was a Vietnamese 59D917017 at 0.96 (a sticker's 7 read into it).
TAKE_AT = 0.97
# A plate character read beside the plate at least this surely flags a plate of a loose layout.
# Dev: 0.94-1.0 beside the sure truncations, at most 0.88 beside right plates of these layouts.
BESIDE_SURE = 0.9
# Layouts loose enough that a plate cut short still fits one (1-5 letters and 1-4 digits, 1-3 +
# 1-2 letters and 1-4 digits, US 6 or 7 characters), and text that fits no format. Every sure
# truncation on the dev crops fitted one; a strict one (fr's AA999AA, uk's AA99AAA) is not
# fitted by a cut plate, and sure characters beside those were a band's (FR's department 33).
LOOSE_REGIONS = frozenset({"eu-generic", "us-generic", "de", None})
# One row found high in the crop, with room under it and no text found there: a two-row plate
# whose lower row the text detector did not find at all (PU9177 / NN read PU9177, BB076 / EF
# read BB076, both auto-accepted on dev camera crops): the row's centre in the crop's top
# LONE_TOP_ROW share, at least LONE_ROOM_BELOW of its heights above the crop's bottom. On the dev
# crops these took the 2 such truncations and no right plate (US plates' numbers sit at 0.45-0.55).
LONE_TOP_ROW, LONE_ROOM_BELOW = 0.4, 1.2
# ... and its mirror (the same two numbers, upside down): one row centred in the crop's bottom
# LONE_TOP_ROW share with LONE_ROOM_BELOW of its heights above it (below a blue band, where
# there is one) and no line at least text_lines.ROW_SHARE as tall found there: a two-row
# plate's lost upper row. A side line (a state name, a "BRASIL" band's word) is smaller. On dev
# camera crops (seed 5, two-row plates found at SQUARE_INPUT_HEIGHT) it took NTU9A98 and FHL4F30
# read 9A98 and 4F30 at 0.99, both a Mercosur motorbike plate's lower row, and no right plate.
# A line counts as below the row when its top is at most this share of the row's height above
# the row's bottom, and above it when its bottom is at most this share below the row's top
# (boxes of neighbouring rows overlap a little once grown by DB's unclip).
BELOW_OVERLAP = 0.3
# A flagged plate is at most this sure (read_fusion.DISAGREE_CAP: flagged at any usual threshold).
TRUNCATED_CAP = 0.5

Rank = Callable[[OcrResult, int], tuple[Candidate, ...]]
Cut = Callable[[np.ndarray, TextLine], np.ndarray]


def check_ends(
    ocr: PlateOCR,
    crops: Sequence[np.ndarray],
    edges: Sequence[tuple[int, int, int]],
    found: Sequence[list[TextLine]],
    rows: Sequence[list[TextLine]],
    ranked: Sequence[tuple[Candidate, ...]],
    rank: Rank,
    cut: Cut,
) -> list[tuple[Candidate, ...]]:
    """``ranked`` with each sure plate whose rows leave room at an end compared against a read of
    its rows widened to the crop's ends (``cut``: a row to the recogniser's line image, as the
    first read cut it), all in one recogniser call; ``rank`` applies the plate rules. A sure
    plate read from one row that looks like one row of a two-row plate whose other row was not
    found (``found``: all the crop's text lines; row_lost) is flagged. ``edges``: each crop's
    crops.band_edges."""
    out = [
        _capped(candidates) if row_lost(crop, crop_edges, lines, crop_rows) else candidates
        for crop, crop_edges, lines, crop_rows, candidates in zip(crops, edges, found, rows, ranked)
    ]
    sure_loose = [
        i
        for i, (crop_rows, candidates) in enumerate(zip(rows, out))
        if crop_rows
        and candidates
        and candidates[0].confidence >= CHECK_ABOVE
        and candidates[0].region in LOOSE_REGIONS
    ]
    checked = [i for i in sure_loose if room(rows[i], edges[i]) >= ROOM]
    if not checked:
        return out
    wide = ocr.read_lines([[cut(crops[i], row) for row in widened_rows(rows[i], edges[i])] for i in checked])
    for i, reading in zip(checked, wide):
        out[i] = compare_ends(out[i], reading, rank(reading, i))
    return out


def compare_ends(
    ranked: Sequence[Candidate], wide: OcrResult, wide_ranked: Sequence[Candidate]
) -> tuple[Candidate, ...]:
    """One plate's candidates once its widened read ``wide`` (ranked: ``wide_ranked``) is seen.

    The widened read holds the plate with plate characters beside it: its own best plate, longer
    and holding the first, fitting a format at TAKE_AT or more, ranks first (read whole; the
    first plate follows, flagged); else a character beside it read at BESIDE_SURE or more flags
    a plate of a loose layout, the widened plate beside it (first where it fits a format of
    its own). Anything else (the same plate, another reading): ``ranked`` as it was."""
    if not ranked:
        return tuple(ranked)
    best = ranked[0]
    chars = [(char, sure) for char, sure in zip(wide.text, wide.char_confidences) if normalise(char)]
    text = "".join(normalise(char) for char, _ in chars)
    at = text.find(best.plate)
    if not best.plate or at < 0 or len(text) == len(best.plate):
        return tuple(ranked)
    wide_best = wide_ranked[0] if wide_ranked and wide_ranked[0].plate != best.plate else None
    holds = wide_best is not None and wide_best.region is not None and best.plate in wide_best.plate
    if wide_best is not None and holds and wide_best.confidence >= TAKE_AT:
        return _unique([*wide_ranked, *_capped(ranked)])
    beside = [chars[at - 1][1]] if at > 0 else []
    beside += [chars[at + len(best.plate)][1]] if at + len(best.plate) < len(chars) else []
    if best.region not in LOOSE_REGIONS or max(beside) < BESIDE_SURE:
        return tuple(ranked)
    if wide_best is None:
        return _capped(ranked)
    # The widened plate first where it fits a strict format of its own (TT846FK, Slovak).
    first = holds and wide_best.region not in LOOSE_REGIONS
    return _capped(_unique([wide_best, *ranked] if first else [*ranked, wide_best]))


def row_lost(
    crop: np.ndarray, edges: tuple[int, int, int], lines: Sequence[TextLine], rows: Sequence[TextLine]
) -> bool:
    """One row found where a two-row plate's other row was not (lower_row_lost, upper_row_lost)."""
    return lower_row_lost(crop, lines, rows) or upper_row_lost(crop, edges, lines, rows)


def upper_row_lost(
    crop: np.ndarray, edges: tuple[int, int, int], lines: Sequence[TextLine], rows: Sequence[TextLine]
) -> bool:
    """One row found, centred in the crop's bottom LONE_TOP_ROW share with LONE_ROOM_BELOW of its
    heights above it (below a top blue band: ``edges``, crops.band_edges of the crop) and no line
    ROW_SHARE as tall found above it: a two-row plate's lost upper row."""
    if len(rows) != 1:
        return False
    row, height = rows[0], crop.shape[0]
    if row.cy < (1 - LONE_TOP_ROW) * height:
        return False
    band_top, _, _ = edges
    return row.top - band_top >= LONE_ROOM_BELOW * row.height and not any(
        line.bottom < row.top + BELOW_OVERLAP * row.height and line.height >= ROW_SHARE * row.height
        for line in lines
    )


def lower_row_lost(crop: np.ndarray, lines: Sequence[TextLine], rows: Sequence[TextLine]) -> bool:
    """One row found, centred in the crop's top LONE_TOP_ROW share with LONE_ROOM_BELOW of its
    heights under it, and no text line found below it: a two-row plate's lost lower row."""
    if len(rows) != 1:
        return False
    row, height = rows[0], crop.shape[0]
    return (
        row.cy <= LONE_TOP_ROW * height
        and height - row.bottom >= LONE_ROOM_BELOW * row.height
        and not any(line.top > row.bottom - BELOW_OVERLAP * row.height for line in lines)
    )


def room(rows: Sequence[TextLine], edges: tuple[int, int, int]) -> float:
    """How many of its own heights the roomiest row leaves to the crop's left or right end (a
    blue band's edge where there is one: ``edges``, crops.band_edges of the crop)."""
    _, left, right = edges
    return max(max(row.left - left, right - row.right) / max(row.height, 1.0) for row in rows)


def _capped(candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
    return tuple(replace(c, confidence=min(c.confidence, TRUNCATED_CAP)) for c in candidates)


def _unique(candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """Each plate once, where it first comes."""
    first: dict[str, Candidate] = {}
    for candidate in candidates:
        first.setdefault(candidate.plate, candidate)
    return tuple(first.values())


def widened(row: TextLine, left: float, right: float) -> TextLine:
    """``row`` running from column ``left`` to column ``right`` of its crop (never shorter than
    it is), along its own tilt: the band the text detector may have cut short."""
    theta = math.radians(row.angle)
    cos = max(math.cos(theta), 0.5)
    start = min((left - row.cx) / cos, -row.length / 2)
    end = max((right - row.cx) / cos, row.length / 2)
    middle = (start + end) / 2
    # Along the line the crop's y falls as x grows for a counter-clockwise tilt (cut_line).
    return replace(
        row,
        cx=row.cx + middle * math.cos(theta),
        cy=row.cy - middle * math.sin(theta),
        length=end - start,
    )


def widened_rows(rows: list[TextLine], edges: tuple[int, int, int]) -> list[TextLine]:
    """Each row out to the crop's left and right ends, a blue band's edge where it has one
    (``edges``: crops.band_edges of the crop)."""
    _, left, right = edges
    return [widened(row, left, right) for row in rows]
