"""Plate-text rules: normalising, format-guided look-alike fixes, ranking, regions."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.plate_reader.plate_text import known_regions, load_formats, normalise, rank_candidates
from services.plate_reader.types import Candidate, CharAlternative, OcrResult


def reading(text: str, confidence: float = 0.9, alternatives: dict[int, str] | None = None) -> OcrResult:
    """An OCR result; ``alternatives`` maps a position to the model's next-best characters."""
    offered = tuple(
        tuple(
            CharAlternative(c, confidence if i == 0 else 0.7)
            for i, c in enumerate(char + (alternatives or {}).get(n, ""))
        )
        for n, char in enumerate(text)
    )
    return OcrResult(text, confidence, (confidence,) * len(text), offered)


def test_normalise_keeps_uppercase_ascii_letters_and_digits() -> None:
    assert normalise("ab-12 cde") == "AB12CDE"
    assert normalise("京A·12345") == "A12345"
    assert normalise("ＡＢ１２") == "AB12"  # noqa: RUF001 - full-width forms, on purpose


def test_format_fixes_look_alikes_only_where_it_says_letter_or_digit() -> None:
    # uk AA99AAA: position 2 must be a digit (O -> 0), position 1 a letter (8 -> B)
    best = rank_candidates(reading("A8O2CDE"), regions=["uk"])[0]
    assert (best.plate, best.region) == ("AB02CDE", "uk")
    assert best.score < 0.9  # two fixes cost confidence
    # The confidence is the weakest character's: a fix from the table keeps 70% of 0.9.
    assert best.confidence == pytest.approx(0.9 * 0.7)


def test_reading_that_fits_is_unchanged_and_first() -> None:
    candidates = rank_candidates(reading("AB12CDE"), regions=["uk"])
    assert candidates[0].plate == "AB12CDE"
    assert candidates[0].region == "uk"
    assert candidates[0].score == pytest.approx(0.9)


def test_no_fix_without_a_matching_format() -> None:
    # 6 characters fit no uk pattern: the raw reading is all there is, scored down.
    assert rank_candidates(reading("O8CDE1"), regions=["uk"]) == [
        Candidate("O8CDE1", pytest.approx(0.72), None, pytest.approx(0.72))
    ]


def test_raw_reading_is_never_dropped() -> None:
    candidates = rank_candidates(reading("A8O2CDE"), regions=["uk"], limit=1)
    assert [c.plate for c in candidates] == ["A8O2CDE"]
    everything = rank_candidates(reading("51F88270"), limit=3)
    assert "51F88270" in [c.plate for c in everything]


def test_model_alternative_beats_the_confusion_table() -> None:
    # The table would turn G into 6; the model itself offered 5 as its next guess.
    best = rank_candidates(reading("51FG8270", alternatives={3: "5"}), regions=["vn"])[0]
    assert best.plate == "51F58270"


def test_two_row_plate_with_row_break_matches_its_format() -> None:
    best = rank_candidates(reading("29-BK O43.66"), regions=["vn"])[0]
    assert (best.plate, best.region) == ("29BK04366", "vn")


def test_all_regions_are_tried_when_none_is_given() -> None:
    best = rank_candidates(reading("KRW3O1"))[0]
    assert best.plate == "KRW301"  # fits Argentina's AAA999 and Germany's layout alike
    assert best.region in {"ar", "de"}


def test_unknown_region_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown region\(s\) \['atlantis'\]; valid: \[.*'uk'.*\]"):
        rank_candidates(reading("AB12CDE"), regions=["atlantis"])


def test_empty_reading_has_no_candidates() -> None:
    assert rank_candidates(reading("-. ")) == []


def test_patterns_expand_repeats() -> None:
    assert set(load_formats().patterns["de"]) >= {"AA9", "AAAAA9999", "AAA99"}
    assert {"uk", "eu-generic", "de", "fr", "es", "nl", "vn"} <= known_regions()


def test_a_new_format_is_a_data_change_only(tmp_path: Path) -> None:
    path = tmp_path / "formats.yaml"
    path.write_text(
        'regions:\n  xx: ["9{3}A{2}"]\nconfusions:\n  to_digit: {O: "0"}\n  to_letter: {"8": "B"}\n'
    )
    formats = load_formats(path)
    best = rank_candidates(reading("1O28X"), regions=["xx"], formats=formats)[0]
    assert (best.plate, best.region) == ("102BX", "xx")


def test_bad_pattern_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "formats.yaml"
    path.write_text('regions:\n  xx: ["AB9"]\nconfusions:\n  to_digit: {}\n  to_letter: {}\n')
    with pytest.raises(ValueError, match="bad plate pattern 'AB9'"):
        load_formats(path)


def test_confidence_is_the_weakest_character_not_the_mean() -> None:
    sure_but_one = OcrResult("AB12CDE", 0.93, (0.99, 0.99, 0.99, 0.99, 0.55, 0.99, 0.99))
    [best, *_] = rank_candidates(sure_but_one, regions=["uk"])
    assert best.score > 0.9  # the geometric mean ranks candidates...
    assert best.confidence == pytest.approx(0.55)  # ...one unsure character decides the trust


def test_a_band_letter_read_into_the_plate_is_dropped_when_nothing_else_fits() -> None:
    # "F" of the French EU band read before "AB-123-CD": 8 characters fit no fr pattern,
    # dropping the leading one does; the drop costs 10% of the confidence.
    best = rank_candidates(reading("FAB123CD"), regions=["fr"])[0]
    assert (best.plate, best.region) == ("AB123CD", "fr")
    assert best.confidence == pytest.approx(0.9 * 0.9)


def test_a_state_name_above_the_number_is_dropped() -> None:
    best = rank_candidates(reading("CALIFORNIA7ESX916"), regions=["us-generic"])[0]
    assert best.plate == "7ESX916"
    assert best.confidence < 0.5  # ten characters dropped: never auto-accepted


@pytest.mark.parametrize("plate", ["AB12345", "AB1C2D"])  # Illinois and Connecticut, Missouri
def test_us_layouts_beyond_californias_read_as_they_are(plate: str) -> None:
    # Read surely, they fit no format before: Illinois' AB12345 became Germany's ABI2345 (the
    # 1 swapped by the look-alike table), Missouri's AB1C2D eu-generic's AB1CZD.
    best = rank_candidates(reading(plate, 0.99))[0]
    assert (best.plate, best.region) == (plate, "us-generic")
    assert best.confidence >= 0.93


def test_nothing_is_dropped_when_the_whole_reading_fits() -> None:
    # "ZK788AA" fits Italy's AA999AA: no shorter window (e.g. de's "ZK78") may win.
    best = rank_candidates(reading("ZK788AA"))[0]
    assert best.plate == "ZK788AA"


def look_alike_reading(rival: float) -> OcrResult:
    """A German plate read "DDE070", the OCR giving its fourth character's rival, O, `rival`."""
    confidences = (0.99, 0.99, 0.99, 1 - rival, 0.99, 0.99)
    offered = tuple(
        () if i != 3 else (CharAlternative("0", 1 - rival), CharAlternative("O", rival)) for i in range(6)
    )
    return OcrResult("DDE070", 0.99, confidences, offered)


def test_a_rival_that_makes_another_valid_plate_lowers_the_confidence() -> None:
    # DDE070 and DDEO70 both fit the German format: the OCR's 4% for O counts twice
    # (CONTEST_WEIGHT 2), so the 0.96 it gave the 0 becomes 0.96 - 2 x 0.04 = 0.88.
    [best, *_] = rank_candidates(look_alike_reading(0.04), regions=["de"])
    assert best.plate == "DDE070"
    assert best.confidence == pytest.approx(0.88)


def test_a_rival_no_format_allows_costs_nothing() -> None:
    # In the UK format (AA99AAA) the fourth character must be a digit: O is no rival there.
    offered = tuple(
        () if i != 3 else (CharAlternative("2", 0.96), CharAlternative("Z", 0.04)) for i in range(7)
    )
    reading = OcrResult("AB12CDE", 0.96, (0.99, 0.99, 0.99, 0.96, 0.99, 0.99, 0.99), offered)
    [best, *_] = rank_candidates(reading, regions=["uk"])
    assert best.plate == "AB12CDE" and best.confidence == pytest.approx(0.96)


def test_a_surely_read_foreign_symbol_caps_the_confidence() -> None:
    sign = OcrResult("SALE50", 0.99, (0.99,) * 6, foreign=0.98)  # "SALE 50%"
    assert all(c.confidence <= 1 - 0.98 + 1e-9 for c in rank_candidates(sign))
    stray = OcrResult("SALE50", 0.99, (0.99,) * 6, foreign=0.5)  # a seal's edge, unsure
    assert rank_candidates(stray, regions=["de"])[0].confidence == pytest.approx(0.99)
