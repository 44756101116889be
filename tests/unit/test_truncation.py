"""A plate number the text detector boxed short (services/plate_reader/truncation.py, and the
short lower row text_lines.plate_rows now keeps).

The real-model tests read dev crops drawn again here by tests/data/synth_plates.py (the seed and
index named; the same pixels as the dev sets' PNGs) through the real PlateRecognizer with the
PP-OCRv4 text detector and recogniser from the test run's model store. Each of these plates was
read short and auto-accepted before (README, "Numbers cut short"). The logic tests use fake
readings and lines made up here (fake_reading, FakeLine), not model output.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from services.plate_reader.crops import band_edges
from services.plate_reader.ocr import PlateOCR
from services.plate_reader.pipeline import PlateRecognizer
from services.plate_reader.text_lines import TextLine, TextLineFinder, plate_rows
from services.plate_reader.truncation import (
    BESIDE_SURE,
    TRUNCATED_CAP,
    check_ends,
    compare_ends,
    lower_row_lost,
    upper_row_lost,
    widened,
)
from services.plate_reader.types import Candidate, OcrResult

THRESHOLD = 0.93  # settings.review_threshold


def FakeLine(left: float, top: float, right: float, bottom: float, angle: float = 0.0) -> TextLine:
    """A made-up detector line with this box (no model involved)."""
    return TextLine((left + right) / 2, (top + bottom) / 2, right - left, bottom - top, angle, 0.9)


def fake_reading(text: str, *sure: float) -> OcrResult:
    """A made-up recogniser reading: each character's confidence (1.0 for the rest)."""
    confidences = (*sure, *(1.0,) * (len(text) - len(sure)))
    return OcrResult(text, min(confidences), confidences)


def fake_candidates(*plates: tuple[str, float, str | None]) -> tuple[Candidate, ...]:
    return tuple(Candidate(plate, sure, region, sure) for plate, sure, region in plates)


# The comparison (compare_ends), on fake readings.


def test_a_sure_longer_plate_holding_the_read_is_taken_whole() -> None:
    # crop_0231 (seed 2): SMZ796 read MZ796 at 0.9997; widened, SMZ796 at 0.999.
    first = fake_candidates(("MZ796", 0.9997, "de"))
    wide = fake_candidates(("SMZ796", 0.999, "de"), ("SM2796", 0.0, "de"))
    fused = compare_ends(first, fake_reading("SMZ796"), wide)
    assert [c.plate for c in fused] == ["SMZ796", "SM2796", "MZ796"]
    assert fused[0].confidence == 0.999 and fused[-1].confidence <= TRUNCATED_CAP


def test_sure_characters_beside_a_loose_plate_flag_it_the_strict_longer_plate_first() -> None:
    # camera_00467 (seed 5): NR [arms] 599NA read 599NA (eu-generic) at 0.998; widened, the N and
    # R read at 0.98 and 0.99, and NR599NA fits Slovakia's AA|999AA, less surely (0.92).
    first = fake_candidates(("599NA", 0.998, "eu-generic"))
    wide = fake_candidates(("NR599NA", 0.92, "sk"))
    fused = compare_ends(first, fake_reading("NR599NA", 0.98, 0.99), wide)
    assert [c.plate for c in fused] == ["NR599NA", "599NA"]
    assert max(c.confidence for c in fused) <= TRUNCATED_CAP < THRESHOLD


def test_unsure_characters_beside_the_plate_change_nothing() -> None:
    # The widened band often adds an edge or a bolt read as a letter, unsurely (NPH1846 + H at 0.27).
    first = fake_candidates(("NPH1846", 0.99, "eu-generic"))
    wide = fake_candidates(("NPH1846H", 0.0, "eu-generic"))
    assert compare_ends(first, fake_reading("NPH-1846H", *(1.0,) * 8, 0.27), wide) == first
    beside = BESIDE_SURE - 0.02
    assert compare_ends(first, fake_reading("NPH-1846H", *(1.0,) * 8, beside), wide) == first


def test_a_strict_layout_is_not_flagged_by_a_bands_sure_digits() -> None:
    # An FR plate's right band, its department 33 read surely beside PL835SE (fr: AA999AA).
    first = fake_candidates(("PL835SE", 0.998, "fr"))
    wide = fake_candidates(("PL835SE33", 0.78, None))
    assert compare_ends(first, fake_reading("PL-835-SE 33"), wide) == first


def test_the_same_plate_or_another_reading_changes_nothing() -> None:
    first = fake_candidates(("AB123CD", 0.99, "eu-generic"))
    assert compare_ends(first, fake_reading("AB123CD"), first) == first
    assert compare_ends(first, fake_reading("XY987"), fake_candidates(("XY987", 0.99, "de"))) == first


def test_a_row_is_widened_to_the_crops_ends_along_its_tilt() -> None:
    level = widened(FakeLine(40, 10, 100, 30), 0, 160)
    assert (level.left, level.right, level.cy) == pytest.approx((0, 160, 20))
    tilted = widened(TextLine(70, 20, 60, 20, 10.0, 0.9), 0, 160)
    assert tilted.length > 160 and tilted.cy < 20  # rising to the right: its middle is higher


# The short lower row and the lost rows (text_lines.plate_rows, lower_row_lost, upper_row_lost), on
# fake lines.


def test_a_two_letter_lower_row_narrower_than_tall_is_still_the_plates_second_row() -> None:
    # camera_00685 (seed 5): BA [arms] 756 over IH; "IH" boxed 17.7 wide, 25.3 high.
    number, lower = FakeLine(12.8, 22.6, 63.7, 51.0), FakeLine(32.7, 48.5, 50.4, 73.8)
    assert plate_rows([number, lower]) == [number, lower]
    # A narrow line beside the number (a sticker's column) or a small one below stays out.
    assert plate_rows([number, FakeLine(66, 22, 80, 51)]) == [number]
    assert plate_rows([number, FakeLine(34, 55, 42, 66)]) == [number]


def test_one_row_high_in_the_crop_with_nothing_below_is_a_lost_lower_row() -> None:
    crop = np.zeros((105, 100, 3), np.uint8)
    top = FakeLine(11, 25, 85, 52)  # camera_00130 (seed 5): PU [arms] 9177 over NN, NN not found
    assert lower_row_lost(crop, [top], [top])
    slogan = FakeLine(20, 70, 80, 80)
    assert not lower_row_lost(crop, [top, slogan], [top])  # text below: a US slogan, a second row
    middle = FakeLine(11, 35, 85, 62)
    assert not lower_row_lost(crop, [middle], [middle])  # a one-row plate's number


def test_one_row_low_in_the_crop_with_no_row_above_is_a_lost_upper_row() -> None:
    crop = np.zeros((46, 50, 3), np.uint8)
    lower = FakeLine(11, 25.5, 39, 38.5)  # camera_00156 (seed 5): NTU over 9A98, NTU not found
    edges = band_edges(crop)  # no blue band: (0, 0, 50)
    assert upper_row_lost(crop, edges, [lower], [lower])
    state = FakeLine(15, 4, 35, 10)
    # A small line above (a band's word) is no row.
    assert upper_row_lost(crop, edges, [state, lower], [lower])
    upper = FakeLine(13, 10, 37, 23)
    assert not upper_row_lost(crop, edges, [upper, lower], [lower])  # a row-sized line above: not lost
    middle = FakeLine(11, 16, 39, 30)
    assert not upper_row_lost(crop, edges, [middle], [middle])  # a one-row plate's number
    high = FakeLine(11, 16, 39, 26)  # room above it (16 >= 1.2 x 10), but centred above the bottom 40%
    assert not upper_row_lost(crop, edges, [high], [high])
    # Below a blue top band, the room above is counted from the band's edge.
    banded = crop.copy()
    banded[:14] = (20, 40, 200)
    assert not upper_row_lost(banded, band_edges(banded), [lower], [lower])


def test_a_plate_read_from_a_lost_rows_other_row_is_flagged() -> None:
    # check_ends caps it whichever row was lost; an unchecked (strict-layout) plate, so no
    # widened read: no recogniser is needed.
    crop = np.zeros((46, 50, 3), np.uint8)
    lower = FakeLine(11, 25.5, 39, 38.5)
    read = fake_candidates(("NTU9A98", 0.99, "br"))
    unused = None  # no widened read is made: the recogniser, rank and cut are never called
    edges = [band_edges(crop)]
    [capped] = check_ends(unused, [crop], edges, [[lower]], [[lower]], [read], unused, unused)  # type: ignore[arg-type]
    assert capped[0].confidence == TRUNCATED_CAP
    middle = FakeLine(11, 16, 39, 30)
    [kept] = check_ends(unused, [crop], edges, [[middle]], [[middle]], [read], unused, unused)  # type: ignore[arg-type]
    assert kept == read


# The real recogniser on dev crops drawn again.


@pytest.fixture(scope="module")
def read(plate_models: dict[str, Path]) -> dict[str, tuple[str, bool]]:
    """(plate, review) for each drawn dev crop, named "folder seed index", all in one batch."""
    pytest.importorskip("cv2", reason="opencv-python comes with the detector-training extra")
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("the synthetic crops use the photos in the ultralytics wheel")
    from tests.data import synth_plates

    fonts, photos = synth_plates.find_fonts(), synth_plates.load_photos()
    names = [
        "camera 5 467",
        "camera 5 89",
        "crops 2 231",
        "us-street 5 356",
        "camera 5 242",
        "camera 5 776",
        "us-street 5 224",
        "camera 5 65",
    ]
    crops = []
    for name in names:
        folder, seed, index = name.split()
        if folder == "camera":
            sample = synth_plates.make_camera_crop(int(index), int(seed), photos, fonts)
        else:
            sample = synth_plates.make_crop(
                int(index), int(seed), photos, fonts, us_street=folder == "us-street"
            )
        crops.append(sample.image)
    recognizer = PlateRecognizer(
        None,  # type: ignore[arg-type]  # crops only: no detector
        PlateOCR(plate_models["plate-ocr"]),
        review_threshold=THRESHOLD,
        text_lines=TextLineFinder(plate_models["plate-text-detector"]),
    )
    return {name: (r.plate, r.review) for name, r in zip(names, recognizer.read_crops(crops))}


def test_a_district_code_the_text_detector_missed_flags_the_plate(read: dict[str, tuple[str, bool]]) -> None:
    # Slovak NR [arms] 599NA and TT [arms] 846FK were read 599NA and 846FK, auto-accepted.
    # Widened, PP-OCRv6 reads TT846FK whole and surely; NR599NA's widened read is not sure
    # enough to take, so the short plate is flagged (PP-OCRv4 flagged both, NR599NA first).
    assert read["camera 5 467"] == ("599NA", True)
    assert read["camera 5 89"] == ("TT846FK", False)


def test_a_first_or_last_character_the_text_detector_missed_is_read_whole(
    read: dict[str, tuple[str, bool]],
) -> None:
    # SMZ796 was read MZ796 at 0.9997, UFA9283 read UFA928 at 0.99.
    assert read["crops 2 231"] == ("SMZ796", False)
    assert read["us-street 5 356"] == ("UFA9283", False)


def test_a_two_row_plates_short_lower_row_is_read_or_its_loss_flagged(
    read: dict[str, tuple[str, bool]],
) -> None:
    assert read["camera 5 242"] == ("VZ577EL", False)  # was VZ577, "EL" boxed narrower than tall
    assert read["camera 5 776"][1]  # BB076 / EF: the lower row not found at all; was BB076, accepted


def test_a_right_plate_with_a_fairly_sure_letter_beside_it_stays_accepted(
    read: dict[str, tuple[str, bool]],
) -> None:
    # YXB5199: widened, a 7 read beside it at 0.88 (under BESIDE_SURE).
    assert read["us-street 5 224"] == ("YXB5199", False)


def test_a_motorbike_plates_two_rows_are_found_and_read(read: dict[str, tuple[str, bool]]) -> None:
    # HEM over 0A70 under a "BRASIL" band, 88 x 112 px: at the one-row input height (128 px)
    # the detector found only the band's word and the plate was read 0A70 or BRASI1, flagged;
    # at text_lines.SQUARE_INPUT_HEIGHT it finds both rows.
    assert read["camera 5 65"] == ("HEM0A70", False)
