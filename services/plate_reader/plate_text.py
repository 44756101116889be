"""Plate-text rules: normalise an OCR reading and rank plate candidates by configured formats.

    candidates = rank_candidates(ocr_result, regions=["uk"])
    candidates[0]                 # Candidate(plate='AB12CDE', score=0.93, region='uk', confidence=0.81)

Formats live in ``plate_formats.yaml`` (data only). A position a format marks as letter
or digit gets the look-alike fix (O/0, I/1, B/8, ...): first the OCR's own next-best
character there, else the YAML's confusion table at a cost. A reading longer than a format
may fit it once characters at its ends are dropped: the EU band's country letter, a
state name or "BRASIL" printed above the number, read into the same line. The raw reading
is always a candidate; readings that fit a format rank above those that fit none.

Some plates print a coat of arms inside the number (Croatia's ZG [arms] 1234-AB, Slovakia's
BA [arms] 302OZ); a format marks its place with "|". The recogniser reads the arms as a symbol
no plate carries (``OcrResult.symbol_gaps``), or as an unsure letter (or 3): one read there,
where the format has its digits, may be dropped (KAE325AO -> KA325AO; the confidence is at
most 1 - that character's: flagged, unless another read of the plate is sure of it). A symbol
read inside a plate, or before it, where its format has no arms lowers the confidence: the
plate's own letters may be missing beside it (BB [arms] 671 / LM read BB671). The recogniser
cannot read Č, Š or Ž (a drawn VŽ [arms] 123-AB reads V123-AB): a Croatian code's lost letter is
put back, flagged (``PlateFormats.lost_letters``).

``score`` ranks candidates (geometric mean of character confidences); ``confidence`` is
what the reader reports and ``review`` is decided on: the weakest character's confidence,
lowered when characters were dropped or no format fits, because one unsure character
is enough to make a plate wrong. Two more things lower it: a rival character the OCR
offered that would make another valid plate (0 or O where the formats allow both) counts
against its character (and flags the plate when the layouts make the swapped plate at least as
likely: ``layout_prior``, a generic-only Q0467PW beside France's QO467PW), and a surely read
symbol no plate carries (the "%" of a "SALE 50%" sign) caps the whole reading.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import yaml

from services.plate_reader.types import Candidate, OcrResult

FORMATS_PATH = Path(__file__).with_name("plate_formats.yaml")
# A fix from the confusion table keeps 70% of that character's confidence: the model did
# not offer the character itself, but plate fonts make these pairs near-identical.
TABLE_FIX_FACTOR = 0.7
# A reading that fits none of the applicable formats keeps 80% of its score, so a format
# match with one or two fixes outranks it, while a very unsure match does not.
NO_FORMAT_FACTOR = 0.8
# Each character dropped at the ends to fit a format keeps 90% of the confidence (a reading
# that needed drops is less sure) and 99% of the ranking score (the fit still ranks above the
# raw reading). Drops are tried only when no fuller span fits.
DROP_FACTOR, DROP_RANK_FACTOR = 0.9, 0.99
MAX_DROPPED_START, MIN_PLATE_LENGTH = 10, 4
# A character's confidence loses this many times the probability of a rival character that
# would make another valid plate (O for 0 where a format allows both). Chosen on the dev
# splits (with threshold 0.93); on 400 more synthetic photos (seed 2) it was worth +1 point of
# auto-accepted precision for 2 points of coverage.
CONTEST_WEIGHT = 2.0
# A symbol no plate carries ("%", "@"), read at least this surely, caps the confidence at
# 1 - its probability. On 400 seed-2 synthetic photos the signs' "%" was read at 1.0, while
# stray symbols on plates (a seal, a band's edge) stayed below it: one of 49 real dev
# readings, at 0.48; synthetic plates up to 0.93.
FOREIGN_SURE = 0.95
# A symbol read at least this surely before or inside a plate, where its format has no coat of
# arms, caps the confidence at 1 - its probability (and the rank, by as much). Of the first reads
# of 431 dev crops without arms (real, synthetic, US street), five had a symbol of 0.1 or more
# inside them, all five misread (E6498 for KDH6498, FT298 for FT298HJ); the arms of 33 rightly
# read Croatian and Slovak camera crops were seen at 0.1-0.96.
SYMBOL_SEEN = 0.1
# The coat of arms read as characters (a checkerboard as X, E, N, K, or as a 3): at most
# MAX_ARMS_CHARS of them are dropped at a format's "|" where digits follow it, each a letter less
# sure than ARMS_WEAK or a digit less sure than ARMS_DIGIT_WEAK (a digit there may be the
# number's first). On the dev camera crops the arms were read as letters at 0.33-0.92 and as a
# 3 at 0.44-0.71, twice followed by a letter (SK3E6496E, KA3E4567TT).
MAX_ARMS_CHARS, ARMS_WEAK, ARMS_DIGIT_WEAK = 2, 0.95, 0.75
# A look-alike swap (0 for O, 1 for I, ...: the confusion table, both ways) whose odds against
# the plate read reach this caps its confidence at 1 / (1 + odds): flagged. The odds are the
# OCR's rival over the character's probability, times how much likelier the layouts make the
# swapped plate (layout_prior: a plate only eu-generic fits is one of ~10^15, one of France's
# AA999AA one of ~5 x 10^8). Issue 19, dev seeds 2 and 5: of 16 wrong auto-accepts, 6 had odds
# of 700-130,000 (Q0467PW for QO467PW, X029ADT for XO29ADT); of 2,155 right ones none reached
# 0.1 (README, "Look-alikes the layouts decide").
LOOKALIKE_ODDS = 1.0
# ... and at these odds the swapped plate, where a format's fit makes it (the confusion table's
# character, contested by the OCR's: flagged), is read first (BA302OZ read BA3020Z: the issue's).
# Dev seeds 2 and 5 (2,929 images): 21 plates read right that were read wrong, none the other
# way, no wrong auto-accept. Lower odds lost right plates (a first version: at 10, 1 of 24; at 1,
# 8 of 28, US layouts: 6HXD191 read 6HX0191, as the layout prior treats every region alike).
RANK_ODDS = 100.0
# A letter the recogniser cannot read (its dictionary has no Č, Š or Ž: it drops them, a drawn
# VŽ 123-AB read V123-AB), put back where a region's code needs it, is this sure: flagged.
LOST_LETTER = 0.5
# ... where a symbol sits right after the code's other letter, this surely: a drawn plate's lost
# Ž and arms were seen there at 0.3-0.93 (tests/unit/test_ocr.py).
LOST_SYMBOL = 0.25
LETTERS, DIGITS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), frozenset("0123456789")


@dataclass(frozen=True)
class PlateFormats:
    patterns: dict[str, tuple[str, ...]]  # region -> expanded patterns over "A", "9", "*"
    to_digit: dict[str, str]
    to_letter: dict[str, str]
    # region -> {pattern: characters before its coat of arms} for the formats marked with "|"
    emblems: dict[str, dict[str, int]] = field(default_factory=dict)
    # region -> the codes its plates begin with (a Croatian plate with its city's: ZG, ST, ...)
    prefixes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # region -> (code written in A-Z, index of the letter the recogniser drops) for its prefixes
    # with a letter outside its alphabet (Croatia's VŽ: ("VZ", 1)), from the same YAML list
    lost_letters: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)

    @functools.cached_property
    def shortest(self) -> int:
        """The fewest characters any format's plate has (2: eu-generic's "9A")."""
        return min(len(pattern) for patterns in self.patterns.values() for pattern in patterns)

    @functools.cached_property
    def layouts(self) -> dict[str, tuple[str, tuple[str, ...], float]]:
        """region -> (its patterns' regex, its prefixes, 1 / how many plates it admits): what
        layout_prior reads for each region, built once."""
        return {
            region: (
                _plate_pattern(patterns).pattern,
                self.prefixes.get(region, ()),
                # how many plates the patterns admit, the prefixes narrowing the first two letters
                1.0 / _count(patterns, len(self.prefixes.get(region, ()))),
            )
            for region, patterns in self.patterns.items()
        }

    @functools.cached_property
    def lookalikes(self) -> dict[str, frozenset[str]]:
        """Each character's look-alikes, both ways of the confusion tables (O: {0}; 0: {D, O, Q, U})."""
        pairs = [*self.to_digit.items(), *self.to_letter.items()]
        chars = {char for pair in pairs for char in pair}
        return {c: frozenset(b for a, b in pairs if a == c) | {a for a, b in pairs if b == c} for c in chars}


def normalise(text: str) -> str:
    """``"ab-12 cde"`` -> ``"AB12CDE"``: uppercase ASCII letters and digits only."""
    return "".join(char for char in _fold(text) if char in LETTERS or char in DIGITS)


@functools.cache
def load_formats(path: Path = FORMATS_PATH) -> PlateFormats:
    data = yaml.safe_load(path.read_text())
    expanded = {
        region.lower(): [p for source in sources for p in _expand_marked(source)]
        for region, sources in data["regions"].items()
    }
    confusions = data["confusions"]
    prefixes = data.get("prefixes") or {}
    return PlateFormats(
        {region: tuple(p for p, _ in found) for region, found in expanded.items()},
        dict(confusions["to_digit"]),
        dict(confusions["to_letter"]),
        {
            r: {p: at for p, at in found if at is not None}
            for r, found in expanded.items()
            if any(at is not None for _, at in found)
        },
        {region.lower(): tuple(map(_in_az, codes)) for region, codes in prefixes.items()},
        {
            region.lower(): tuple(_lost(code) for code in codes if not set(code) <= LETTERS)
            for region, codes in prefixes.items()
        },
    )


def _in_az(code: str) -> str:
    """``"ČK"`` -> ``"CK"``: a code as written on the plate, its letters without their marks."""
    return unicodedata.normalize("NFKD", code).encode("ascii", "ignore").decode()


def _lost(code: str) -> tuple[str, int]:
    """``"VŽ"`` -> ``("VZ", 1)``: the code in A-Z, and where its letter outside A-Z is."""
    outside = [i for i, char in enumerate(code) if char not in LETTERS]
    if len(outside) != 1:
        raise ValueError(f"prefixes: {code!r} may have one letter outside A-Z, not more")
    return _in_az(code), outside[0]


def known_regions(path: Path = FORMATS_PATH) -> frozenset[str]:
    return frozenset(load_formats(path).patterns)


def rank_candidates(
    reading: OcrResult, *, regions: Sequence[str] = (), limit: int = 5, formats: PlateFormats | None = None
) -> list[Candidate]:
    """Ranked plates for one OCR reading, best first; empty when it holds no A-Z0-9 at all.

    ``regions`` restricts the formats tried (none: all); an unknown name raises ValueError.
    """
    formats = formats or load_formats()
    unknown = sorted(set(regions) - set(formats.patterns))
    if unknown:
        raise ValueError(f"unknown region(s) {unknown}; valid: {sorted(formats.patterns)}")
    read = _plate_characters(reading)
    chars, confidences, gaps = read.chars, read.confidences, read.gaps
    if not chars:
        return []
    best: dict[str, Candidate] = {}
    tried = tuple(regions or formats.patterns)
    fits = _plate_pattern(tuple(p for region in tried for p in formats.patterns[region]))
    fitted: set[str] = set()
    swaps: dict[str, str] = {}  # a plate fitted -> the look-alike the layouts favour RANK_ODDS to 1
    for start, end in _windows(len(chars)):
        if best:  # a fit with fewer characters dropped exists: never drop more
            break
        for region in tried:
            for candidate in _region_fits(region, formats, read, start, end):
                fitted.add(region)
                _keep(best, _checked(candidate, reading, fits, tried, formats, swaps))
    for region in [r for r in tried if r not in fitted]:  # a code with a letter the recogniser drops
        for candidate in _with_lost_letter(region, formats, read):
            _keep(best, _checked(candidate, reading, fits, tried, formats, swaps))
    raw = "".join(chars)
    stray = _stray_symbol(gaps, 0, len(chars), set())
    _keep(
        best,
        Candidate(
            raw,
            _geometric_mean(confidences) * NO_FORMAT_FACTOR * (1.0 - stray),
            None,
            _foreign_capped(min(min(confidences) * NO_FORMAT_FACTOR, 1.0 - stray), reading.foreign, 0.0),
        ),
    )
    # A swap the layouts favour goes just before the plate as read, scored as it is (its
    # character weighed as the look-alike pair); only where a format's fit made it (from the
    # confusion table, flagged by the OCR's rival). The plate as read stays, flagged.
    behind: set[str] = set()
    for plate, swapped in swaps.items():
        if plate in best and swapped in best:
            best[swapped] = replace(best[swapped], score=max(best[swapped].score, best[plate].score))
            behind.add(plate)
    # Equal scores keep the YAML's region order (specific formats before generic ones);
    # rounding stops float noise in the products from deciding.
    ranked = sorted(best.values(), key=lambda c: (-round(c.score, 6), c.plate in behind))
    top = ranked[:limit]
    if all(c.plate != raw for c in top):  # the raw reading is never dropped
        top[-1] = next(c for c in ranked if c.plate == raw)
    return top


class _Chars(NamedTuple):
    """A reading's A-Z0-9 characters, with what the OCR gave for each (_plate_characters)."""

    chars: list[str]
    confidences: list[float]
    alternatives: list[list[tuple[str, float]]]  # the OCR's offers per character
    gaps: list[float]  # the symbol seen before each character, then after the last


@dataclass(frozen=True)
class _Fit:
    """One way a reading fits a region's pattern, before the plate-wide checks."""

    plate: str
    scores: list[float]  # per plate character
    offered: list[list[tuple[str, float]]]  # the OCR's alternatives per plate character
    guessed: int
    dropped: int  # characters dropped at the ends or as the arms
    stray: float  # a symbol seen inside the plate where its format has no arms
    doubt: float  # the surest character read where the arms are (dropped)
    region: str
    at_arms: float  # the symbol seen where the format's arms are


def _region_fits(region: str, formats: PlateFormats, read: _Chars, start: int, end: int) -> Iterable[_Fit]:
    """Each of the region's patterns that chars[start:end] fit (its coat of arms read as
    characters dropped), with the region's code."""
    chars, confidences, alternatives, gaps = read
    dropped = len(chars) - (end - start)
    emblems = formats.emblems.get(region, {})
    for pattern in formats.patterns[region]:
        at = emblems.get(pattern)
        arms = _arms_letters(pattern, at, chars, confidences, start, end)
        if arms is None:
            continue
        kept = [i for i in range(start, end) if i not in arms]
        fixed = _fit(
            pattern,
            [chars[i] for i in kept],
            [confidences[i] for i in kept],
            [alternatives[i] for i in kept],
            formats,
        )
        if fixed is None or not fixed[0].startswith(formats.prefixes.get(region, "")):
            continue
        plate, scores, guessed = fixed
        # The arms read as characters: right only if they were none.
        doubt = max((confidences[i] for i in arms), default=0.0)
        # The gaps the arms fill: before, between and after the characters read there.
        own = set(range(start + at, start + at + len(arms) + 1)) if at is not None else set()
        stray = _stray_symbol(gaps, start, end, own)
        yield _Fit(
            plate,
            scores,
            [alternatives[i] for i in kept],
            guessed,
            dropped + len(arms),
            stray,
            doubt,
            region,
            max((gaps[g] for g in own), default=0.0),
        )


def _checked(
    fit: _Fit,
    reading: OcrResult,
    fits: re.Pattern[str],
    tried: tuple[str, ...],
    formats: PlateFormats,
    swaps: dict[str, str],
) -> Candidate:
    """The fit as a candidate: its confidence lowered by rival characters that make another
    plate, look-alikes the layouts favour and a surely read foreign symbol. A look-alike at
    RANK_ODDS or more goes into `swaps` (rank_candidates reads it first)."""
    sure = _contested(fit.plate, fit.scores, fit.offered, fits)
    odds, swapped = _lookalike_odds(fit.plate, fit.scores, fit.offered, tried, formats)
    share = 1.0 / (1.0 + odds) if odds >= LOOKALIKE_ODDS else 1.0  # this plate's, of the pair's odds
    if odds >= RANK_ODDS:
        swaps[fit.plate] = swapped
    confidence = min(min(sure) * DROP_FACTOR**fit.dropped, 1.0 - fit.doubt, 1.0 - fit.stray, share)
    return Candidate(
        fit.plate,
        _geometric_mean(fit.scores) * DROP_RANK_FACTOR**fit.dropped * (1.0 - fit.stray),
        fit.region,
        _foreign_capped(confidence, reading.foreign, fit.at_arms),
        fit.guessed,
    )


def _with_lost_letter(region: str, formats: PlateFormats, read: _Chars) -> Iterable[_Fit]:
    """The region's fits once a letter its codes hold and the recogniser drops is put back: the
    reading begins with the code's other letter, then a symbol read at LOST_SYMBOL or more (the
    lost letter and the arms, seen as one), then the plate. The letter put back was not read:
    LOST_LETTER sure."""
    chars, confidences, alternatives, gaps = read
    for code, lost in formats.lost_letters.get(region, ()):
        readable = code[:lost] + code[lost + 1 :]
        after = len(readable)
        if "".join(chars[:after]) != readable or after >= len(chars) or gaps[after] < LOST_SYMBOL:
            continue
        more = [*chars[:lost], code[lost], *chars[lost:]]
        sure = [*confidences[:lost], LOST_LETTER, *confidences[lost:]]
        offered = [*alternatives[:lost], [(code[lost], LOST_LETTER)], *alternatives[lost:]]
        # The symbol was the lost letter and the arms: it stays in the gap after the code.
        spaced = [*gaps[:lost], 0.0, *gaps[lost:]]
        for end in (len(more), len(more) - 1):
            yield from _region_fits(region, formats, _Chars(more, sure, offered, spaced), 0, end)


def _windows(length: int) -> list[tuple[int, int]]:
    """(start, end) spans to fit, fewest dropped first: the whole reading, then up to
    MAX_DROPPED_START characters dropped at the start (a band letter, a state name above) and
    at most one at the end (a right-hand band), never below MIN_PLATE_LENGTH characters."""
    spans = [
        (start, length - cut)
        for start in range(MAX_DROPPED_START + 1)
        for cut in (0, 1)
        if length - cut - start >= MIN_PLATE_LENGTH
    ]
    return sorted(spans, key=lambda span: (length - (span[1] - span[0]), span[0]))


def _plate_characters(reading: OcrResult) -> _Chars:
    """The reading's A-Z0-9 characters with their confidences, the OCR's alternatives and the
    symbol seen in each gap (before each character, then after the last; a separator's gaps
    are one)."""
    chars, confidences, alternatives = [], [], []
    symbols = reading.symbol_gaps or (0.0,) * (len(reading.text) + 1)
    gaps, pending = [], symbols[0]
    for index, char in enumerate(_fold(reading.text)):
        if char not in LETTERS and char not in DIGITS:
            pending = max(pending, symbols[index + 1])
            continue
        chars.append(char)
        confidences.append(reading.char_confidences[index] if reading.char_confidences else 0.0)
        offered = reading.alternatives[index] if index < len(reading.alternatives) else ()
        alternatives.append([(alt.char, alt.probability) for alt in offered])
        gaps.append(pending)
        pending = symbols[index + 1]
    gaps.append(pending)
    return _Chars(chars, confidences, alternatives, gaps)


def _arms_letters(
    pattern: str, at: int | None, chars: list[str], confidences: list[float], start: int, end: int
) -> list[int] | None:
    """Which of chars[start:end] are the coat of arms read as characters when they are fitted
    to ``pattern``: [] when the span is the pattern's length, the unsure characters read at its
    "|" (``at``) where it has one and digits follow, None when the span cannot fit it."""
    extra = end - start - len(pattern)
    if extra == 0:
        return []
    if at is None or not 0 < extra <= MAX_ARMS_CHARS or pattern[at : at + 1] != "9":
        return None
    arms = list(range(start + at, start + at + extra))
    if all(confidences[i] < (ARMS_WEAK if chars[i] in LETTERS else ARMS_DIGIT_WEAK) for i in arms):
        return arms
    return None


def _stray_symbol(gaps: list[float], start: int, end: int, arms: set[int]) -> float:
    """The surest symbol no plate carries in a gap before or inside chars[start:end] other than
    its coat of arms' (``arms``: gap indices), when seen at SYMBOL_SEEN or more, else 0. Beside
    it a plate's own characters may be missing: both the plate's rank and its confidence take
    1 - it, so a format with arms there ranks first (BA [arms] 3020Z is BA302OZ, not eu-generic's
    BA3020Z)."""
    inside = range(start if start == 0 else start + 1, end)  # a dropped band's own gap is no plate's
    seen = max((gaps[g] for g in inside if g not in arms), default=0.0)
    return seen if seen >= SYMBOL_SEEN else 0.0


def _foreign_capped(confidence: float, foreign: float, at_arms: float) -> float:
    """``confidence`` capped at 1 - ``foreign`` when a symbol no plate carries was read at
    FOREIGN_SURE or more ("SALE 50%": a plate-like word in text that is no plate), unless it is
    the plate's coat of arms (the symbol in the arms' gaps, ``at_arms``, is as sure)."""
    if foreign >= FOREIGN_SURE and at_arms < foreign:
        return min(confidence, 1.0 - foreign)
    return confidence


def _fit(
    pattern: str,
    chars: list[str],
    confidences: list[float],
    alternatives: list[list[tuple[str, float]]],
    formats: PlateFormats,
) -> tuple[str, list[float], int] | None:
    """The reading fixed to ``pattern``, per-character confidences and how many characters
    the confusion table supplied (the OCR never offered them), or None if it can't fit."""
    if len(pattern) != len(chars):
        return None
    plate, scores, guessed = [], [], 0
    for kind, char, confidence, offered in zip(pattern, chars, confidences, alternatives):
        wanted = LETTERS if kind == "A" else DIGITS if kind == "9" else LETTERS | DIGITS
        if char in wanted:
            plate.append(char)
            scores.append(confidence)
            continue
        model_choice = next(((alt, p) for alt, p in offered if alt in wanted), None)
        table = formats.to_digit if kind == "9" else formats.to_letter
        if model_choice is not None and model_choice[1] >= confidence * TABLE_FIX_FACTOR:
            plate.append(model_choice[0])
            scores.append(model_choice[1])
        elif char in table:
            plate.append(table[char])
            scores.append(confidence * TABLE_FIX_FACTOR)
            guessed += 1
        elif model_choice is not None:
            plate.append(model_choice[0])
            scores.append(model_choice[1])
        else:
            return None
    return "".join(plate), scores, guessed


@functools.cache
def _plate_pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex matching exactly the plates these patterns describe."""
    kinds = {"A": "[A-Z]", "9": "[0-9]", "*": "[A-Z0-9]"}
    return re.compile("|".join(sorted({"".join(kinds[k] for k in pattern) for pattern in patterns})))


# Whether a plate fits a _plate_pattern depends only on which of its characters are letters
# and which digits (the patterns are character classes): matched once per shape, not per plate.
# The rules matched ~440,000 times for 48 US street crops read twice, 7% of their read (profile).
_SHAPE = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "A" * 26 + "9" * 10)


def _shape(plate: str) -> str:
    """ "AB12CD" -> "AA99AA"; any other character stays itself (no class matches it)."""
    return plate.translate(_SHAPE)


@functools.lru_cache(maxsize=16384)
def _admits(pattern: str, shape: str) -> bool:
    # keyed by the regex's text: hashing a compiled re.Pattern hashes its whole program
    return re.fullmatch(pattern, shape) is not None


def _contested(
    plate: str, confidences: list[float], alternatives: list[list[tuple[str, float]]], fits: re.Pattern[str]
) -> list[float]:
    """Each character's confidence less CONTEST_WEIGHT x the probability the OCR gave a rival
    character that would make another plate of an applicable format (0 and O where the formats
    allow both). The OCR is overconfident between look-alikes: the dev photos' confident
    misreads (0 for O at 0.96, O for 0 at 0.97) had their rival at 3-4%."""
    sure = []
    for index, (char, confidence, offered) in enumerate(zip(plate, confidences, alternatives)):
        rival = max(
            (
                p
                for alt, p in offered
                if alt != char
                and (alt in LETTERS or alt in DIGITS)
                and _admits(fits.pattern, _shape(plate[:index] + alt + plate[index + 1 :]))
            ),
            default=0.0,
        )
        sure.append(max(confidence - CONTEST_WEIGHT * rival, 0.0))
    return sure


def layout_prior(plate: str, regions: tuple[str, ...], formats: PlateFormats) -> float:
    """How likely ``plate`` is before it is read: each of ``regions`` alike, each uniform over
    the plates its patterns (and prefixes) admit; 0 when none admits it."""
    shape = _shape(plate)
    total = 0.0
    for region in regions:
        pattern, prefixes, weight = formats.layouts[region]
        if _admits(pattern, shape) and plate.startswith(prefixes or ""):
            total += weight
    return total


@functools.cache
def _count(patterns: tuple[str, ...], prefixes: int) -> int:
    total = sum(26 ** p.count("A") * 10 ** p.count("9") * 36 ** p.count("*") for p in set(patterns))
    return max(1, total * prefixes // 26**2) if prefixes else total


def _lookalike_odds(
    plate: str,
    confidences: list[float],
    alternatives: list[list[tuple[str, float]]],
    regions: tuple[str, ...],
    formats: PlateFormats,
) -> tuple[float, str]:
    """The likeliest look-alike swap of one character: (its odds against ``plate``, the plate it
    makes); (0, "") for none. Odds: the OCR's probability of the look-alike over the
    character's, times the swapped plate's layout_prior over the plate's."""
    own = layout_prior(plate, regions, formats)
    worst, made = 0.0, ""
    if own <= 0.0:
        return worst, made
    for index, (char, confidence, offered) in enumerate(zip(plate, confidences, alternatives)):
        partners = formats.lookalikes.get(char, frozenset())
        for alt, p in offered:
            if alt == char or alt not in partners or p <= 0.0:
                continue
            swapped = plate[:index] + alt + plate[index + 1 :]
            odds = p / max(confidence, 1e-9) * layout_prior(swapped, regions, formats) / own
            if odds > worst:
                worst, made = odds, swapped
    return worst, made


def _expand_marked(source: str) -> list[tuple[str, int | None]]:
    """``"AA|9{1,2}"`` -> ``[("AA9", 2), ("AA99", 2)]``: each pattern with how many characters
    come before its coat of arms ("|"; None without one)."""
    if source.count("|") > 1:
        raise ValueError(f"bad plate pattern {source!r}: at most one | (the coat of arms)")
    if "|" not in source:
        return [(p, None) for p in _expand(source)]
    before, after = source.split("|")
    return [(b + a, len(b)) for b in _expand(before) for a in _expand(after)]


def _expand(source: str) -> list[str]:
    """``"A{1,2}9"`` -> ``["A9", "AA9"]``."""
    parts = []
    for symbol, low, high in re.findall(r"([A9*])(?:\{(\d+)(?:,(\d+))?\})?", source):
        low_count = int(low or 1)
        high_count = int(high or low_count)
        parts.append([symbol * count for count in range(low_count, high_count + 1)])
    if "".join(re.findall(r"[A9*]|\{[\d,]+\}", source)) != source.replace(" ", ""):
        raise ValueError(f"bad plate pattern {source!r}: use A, 9, * and {{m,n}}")
    return ["".join(combo) for combo in itertools.product(*parts)]


def _keep(best: dict[str, Candidate], candidate: Candidate) -> None:
    """The best-scoring way to each plate; of equal ones the surer (a BA302OZ read with its
    arms is Slovak's AA|999AA, not France's AA999AA), then the first."""
    kept = best.get(candidate.plate)
    if kept is None or (round(candidate.score, 6), candidate.confidence) > (
        round(kept.score, 6),
        kept.confidence,
    ):
        best[candidate.plate] = candidate


def _fold(text: str) -> str:
    """Full-width and lowercase forms to ASCII uppercase, one output character per input one."""
    return "".join(
        folded if len(folded := unicodedata.normalize("NFKC", char).upper()) == 1 else char for char in text
    )


def _geometric_mean(values: Iterable[float]) -> float:
    values = list(values)
    product = 1.0
    for value in values:
        product *= max(value, 1e-6)
    return product ** (1 / len(values)) if values else 0.0
