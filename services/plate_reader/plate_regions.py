"""Rules per region: what is printed around a plate's number says which formats it can hold,
and some text is no plate at all.

    hint = region_hint(["CALIFORMIA", "dmv.ca.gov"], mercosur_band=False)   # RegionHint("us-generic")
    rank_with_hint(ocr_result, hint, regions=())   # that region's formats first
    is_non_plate_text("20140617095759")            # True: a CCTV timestamp

The words and the formats they allow are data (``side_text`` in plate_formats.yaml). A word is
matched anywhere in a side line with at most one misread letter in five ("CALIFORMIA"). A blue
band along the top of the crop (trim_bands finds it) is Mercosur's "BRASIL" band, read or not.
With a hint the reading is fitted to the hinted formats first; only when it fits none of them
are all the request's formats tried, as without a hint: a hint can fix look-alikes (a US
``0LYR527`` not ``OLYR527``, a Mercosur ``HBE8O33`` not ``HBE8033``), never lose a plate.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import yaml

from services.plate_reader.plate_text import (
    FORMATS_PATH,
    PlateFormats,
    load_formats,
    normalise,
    rank_candidates,
)
from services.plate_reader.types import Candidate, OcrResult

# A side word matches a stretch of a side line this similar (difflib's ratio): one misread
# letter in five. Words shorter than MIN_FUZZY_WORD must match exactly.
WORD_MATCH, MIN_FUZZY_WORD = 0.8, 5
# Digits only, this long or longer, is no plate of any format here: a CCTV timestamp
# (20140617095759), a phone number. It is reported, flagged, and ranked after every plate.
NON_PLATE_DIGITS = 10
# Look-alikes the table may supply beyond the unhinted fit's for a hinted fit to rank first.
MAX_HINT_FIXES = 1
_ALL_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class RegionHint:
    region: str
    formats: PlateFormats  # only that region, its patterns narrowed where side_text says


def is_non_plate_text(plate: str) -> bool:
    return len(plate) >= NON_PLATE_DIGITS and bool(_ALL_DIGITS.fullmatch(plate))


@functools.cache
def _side_text(path: Path = FORMATS_PATH) -> dict[str, dict[str, Any]]:
    """plate_formats.yaml's side_text table: key -> {words | pattern, formats, region}."""
    return yaml.safe_load(path.read_text()).get("side_text") or {}


@functools.cache
def side_words(path: Path = FORMATS_PATH) -> tuple[tuple[str, str], ...]:
    """(word without spaces, side_text key) for every side word in plate_formats.yaml, longest
    first."""
    table = _side_text(path)
    words = [(normalise(word), key) for key, entry in table.items() for word in entry.get("words", ())]
    return tuple(sorted(words, key=lambda pair: -len(pair[0])))


@functools.cache
def side_patterns(path: Path = FORMATS_PATH) -> tuple[tuple[re.Pattern[str], str], ...]:
    """(compiled pattern, side_text key) for every side-text pattern in plate_formats.yaml."""
    table = _side_text(path)
    return tuple((re.compile(entry["pattern"]), key) for key, entry in table.items() if "pattern" in entry)


@functools.cache
def hint_for(key: str, path: Path = FORMATS_PATH) -> RegionHint:
    """The hint a side_text entry gives (its `region`, else the key itself is the region)."""
    formats = load_formats(path)
    entry = _side_text(path).get(key) or {}
    region = entry.get("region", key)
    if entry.get("formats"):
        patterns = tuple(p for p in formats.patterns[region] if p in set(entry["formats"]))
    else:
        patterns = formats.patterns[region]
    emblems = {region: formats.emblems.get(region, {})}
    prefixes = {region: formats.prefixes[region]} if region in formats.prefixes else {}
    return RegionHint(
        region, PlateFormats({region: patterns}, formats.to_digit, formats.to_letter, emblems, prefixes)
    )


def region_hint(side_texts: Sequence[str], *, mercosur_band: bool = False) -> RegionHint | None:
    """The region the plate's side text names (the first word found, longest words first; else
    the first side-text pattern a line holds), or Mercosur's when the crop has its top band;
    None when nothing names one."""
    for text in side_texts:
        line = normalise(text)
        for word, key in side_words():
            if _contains(line, word):
                return hint_for(key)
    for text in side_texts:
        for pattern, key in side_patterns():
            if pattern.search(text.upper()):
                return hint_for(key)
    return hint_for("br") if mercosur_band else None


def rank_with_hint(
    reading: OcrResult, hint: RegionHint | None, *, regions: Sequence[str] = ()
) -> list[Candidate]:
    """rank_candidates, with the hinted region's formats tried first (when the request allows
    that region), then the request's own; a reading of digits only that no plate holds keeps
    only its raw text, at confidence 0."""
    ranked = rank_candidates(reading, regions=regions)
    if ranked and is_non_plate_text(normalise(reading.text)):
        raw = normalise(reading.text)
        return [Candidate(raw, min(c.score for c in ranked), None, 0.0)]
    if hint is None or (regions and hint.region not in regions):
        return ranked
    hinted = rank_candidates(reading, regions=[hint.region], formats=hint.formats)
    if not _fits_as_well(hinted, ranked):
        return ranked
    seen = {c.plate for c in hinted}
    return [*hinted, *(c for c in ranked if c.plate not in seen)][: len(ranked)]


def _fits_as_well(hinted: Sequence[Candidate], ranked: Sequence[Candidate]) -> bool:
    """The hinted formats fit the reading with no more characters dropped than the best fit
    without the hint, and at most MAX_HINT_FIXES more look-alikes from the table: a hint
    settles a look-alike, it does not bend a plate of another format into its own."""
    if not hinted or hinted[0].region is None:
        return False
    best, plain = hinted[0], ranked[0]
    return len(best.plate) >= len(plain.plate) and best.guessed <= plain.guessed + MAX_HINT_FIXES


def _contains(line: str, word: str) -> bool:
    if word in line:
        return True
    if len(word) < MIN_FUZZY_WORD or len(line) < len(word) - 1:
        return False
    matcher = SequenceMatcher(None, "", word)  # the word's index is built once, not per window
    for size in (len(word) - 1, len(word), len(word) + 1):
        for start in range(max(1, len(line) - size + 1)):
            matcher.set_seq1(line[start : start + size])
            # quick_ratio bounds ratio from above: most windows are ruled out without it
            if matcher.quick_ratio() >= WORD_MATCH and matcher.ratio() >= WORD_MATCH:
                return True
    return False
