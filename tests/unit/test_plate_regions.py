"""Rules per region: side text picks the formats, a country's format fixes O/0 per position,
and a CCTV timestamp never ranks first. OCR results are built here (reading), not model output."""

from __future__ import annotations

import numpy as np

from services.plate_reader.pipeline import PlateRecognizer
from services.plate_reader.plate_regions import hint_for, rank_with_hint, region_hint
from services.plate_reader.plate_text import rank_candidates
from services.plate_reader.types import BoundingBox, Detection, OcrResult


def reading(text: str, confidence: float = 0.99) -> OcrResult:
    return OcrResult(text, confidence, (confidence,) * len(text))


def test_side_text_names_the_region_even_misread() -> None:
    assert region_hint(["SEPCALIFORMIA"]).region == "us-generic"
    assert region_hint(["dmv.ca.gov"]).region == "us-generic"
    assert region_hint(["BRASIL"]).region == "br"
    assert region_hint(["2024"]) is None
    assert region_hint([], mercosur_band=True).region == "br"


def test_mercosur_letter_position_is_fixed_only_where_the_plate_says_brazil() -> None:
    # HBE8O33 read with a 0 fits Germany's format as read; Mercosur's band says ABC1D23.
    assert rank_with_hint(reading("HBE8033"), None)[0].plate == "HBE8033"
    assert rank_with_hint(reading("HBE8033"), hint_for("us-generic"))[0].plate == "HBE8033"
    best = rank_with_hint(reading("HBE8033"), region_hint(["BRASIL"]))[0]
    assert (best.plate, best.region) == ("HBE8O33", "br")


def test_a_brazilian_grey_plates_band_pins_the_older_format() -> None:
    # "SP - SAO PAULO" above a grey plate: the state's letters, a dash, the municipality.
    hint = region_hint(["SP - SAO PAULO"])
    assert (hint.region, hint.formats.patterns) == ("br", {"br": ("AAA9999",)})
    assert region_hint(["RJ-RIO DE JANEIRO"]).region == "br"
    assert region_hint(["SPORTS"]) is None and region_hint(["X-RAY"]) is None  # no state, dash, town
    # Read with a 0 where its format has a letter, the reading fits Czechia's as read; the
    # band says ABC1234 (a dev crop the second read had flagged).
    assert rank_with_hint(reading("0GL3008"), None)[0].plate == "0GL3008"
    best = rank_with_hint(reading("0GL3008"), hint)[0]
    assert (best.plate, best.region) == ("OGL3008", "br")
    # The Mercosur band still pins the newer format.
    assert rank_with_hint(reading("HBE8033"), region_hint(["BRASIL"]))[0].plate == "HBE8O33"


def test_a_us_state_name_makes_the_first_character_a_digit() -> None:
    assert rank_with_hint(reading("OLYR527"), None)[0].plate == "OLYR527"
    assert rank_with_hint(reading("OLYR527"), region_hint(["California"]))[0].plate == "0LYR527"


def test_a_hint_the_reading_does_not_fit_changes_nothing() -> None:
    plain = rank_with_hint(reading("AB12CDE"), None)
    assert rank_with_hint(reading("AB12CDE"), region_hint(["TEXAS"])) == plain


def test_croatian_digits_and_slovak_letters_fix_o_and_0_by_position() -> None:
    assert rank_candidates(reading("BA3020Z"), regions=["sk"])[0].plate == "BA302OZ"
    assert rank_candidates(reading("ZG1O34AB"), regions=["hr"])[0].plate == "ZG1034AB"


class FakeDetector:
    """Fake: the same two boxes in every image: a large timestamp overlay, a small plate."""

    imgsz = 640

    def detect(self, images, *, min_score=0.25, imgsz=None):
        stamp = Detection(BoundingBox(0, 0, 400, 40), 0.9)
        plate = Detection(BoundingBox(200, 300, 260, 320), 0.6)
        return [[stamp, plate] for _ in images]


class FakeOCR:
    """Fake: reads the first crop as a timestamp, the second as part of a far plate, unsurely."""

    def read(self, crops):
        texts = [("2014-06-17 09:57:59", 0.99), ("FZB", 0.7)]
        return [OcrResult(t, c, (c,) * len(t)) for (t, c), _ in zip(texts, crops)]


def test_a_cctv_timestamp_never_ranks_before_the_plate() -> None:
    # Neither fits a format and both are flagged; the timestamp's box is larger and surer.
    recognizer = PlateRecognizer(FakeDetector(), FakeOCR(), review_threshold=0.75)
    [readings] = recognizer.read([np.zeros((480, 640, 3), dtype=np.uint8)])
    assert [r.plate for r in readings] == ["FZB", "20140617095759"]
    assert readings[1].review  # never auto-accepted, whatever the threshold
