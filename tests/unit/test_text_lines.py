"""Reading only the plate number's text line (services/plate_reader/text_lines.py).

The line choice is checked on fake lines (FakeLine: positions made up here); the whole path
on the real PP-OCRv4 text detector and recogniser from the test run's model store, on a US
plate drawn here with its state name above the number and a web address below it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from services.plate_reader import read_fusion
from services.plate_reader.ocr import PlateOCR
from services.plate_reader.pipeline import PlateRecognizer
from services.plate_reader.text_lines import (
    CUT_MARGIN,
    LINE_INPUT_HEIGHT,
    SQUARE_INPUT_HEIGHT,
    TextLine,
    TextLineFinder,
    _input_size as input_size,
    cut_line,
    cut_sheared,
    plate_rows,
)
from tests.assets import asset


def FakeLine(left: float, top: float, right: float, bottom: float, angle: float = 0.0) -> TextLine:
    """A made-up detector line with this box (no model involved)."""
    return TextLine((left + right) / 2, (top + bottom) / 2, right - left, bottom - top, angle, 0.9)


def test_the_tallest_line_is_the_plate_number_not_the_state_name_or_slogan() -> None:
    state, number, slogan = FakeLine(60, 5, 240, 25), FakeLine(20, 35, 280, 95), FakeLine(70, 100, 230, 115)
    assert plate_rows([state, number, slogan]) == [number]
    assert plate_rows([slogan, number, state]) == [number]


def test_two_lines_of_equal_height_are_a_two_row_plate_top_row_first() -> None:
    top, bottom = FakeLine(20, 10, 180, 60), FakeLine(10, 70, 190, 122)
    assert plate_rows([bottom, top]) == [top, bottom]
    # A sticker's small text beside them changes nothing.
    assert plate_rows([FakeLine(150, 2, 190, 9), bottom, top]) == [top, bottom]


def test_a_short_lower_row_boxed_lower_than_the_number_is_still_a_row() -> None:
    # Box sizes from the text detector on a synthetic Slovak two-row plate (dev camera crop
    # "BL 036 / VI"): the two-letter row came out 0.74 as tall as the number; cut off, the
    # plate read "BL036" and was auto-accepted. A dealer frame's word at 0.6 stays side text.
    number, letters = FakeLine(8, 14.5, 56, 37.5), FakeLine(27, 35.5, 41, 52.5)
    assert plate_rows([letters, number]) == [number, letters]
    frame = FakeLine(25, 40, 60, 53.8)
    assert plate_rows([frame, number]) == [number]


def test_pieces_of_one_row_are_joined_and_a_third_tall_row_is_left_out() -> None:
    left, right = FakeLine(20, 30, 120, 90), FakeLine(150, 32, 280, 92)
    [row] = plate_rows([right, left])
    assert (row.left, row.right, row.top, row.bottom) == (20, 280, 30, 92)
    # At most two rows: the tallest, and the taller of the rows next to it.
    top, middle, low = FakeLine(20, 0, 200, 40), FakeLine(20, 50, 200, 100), FakeLine(20, 110, 200, 145)
    assert plate_rows([low, top, middle]) == [top, middle]
    top, middle, low = FakeLine(20, 0, 200, 50), FakeLine(20, 60, 200, 100), FakeLine(20, 110, 200, 158)
    assert plate_rows([low, top, middle]) == [top, middle]  # low is taller than middle, not next to top


def test_lines_narrower_than_tall_are_not_plate_text_and_no_line_gives_nothing() -> None:
    column = FakeLine(5, 5, 20, 120)  # a sticker's vertical text, taller than the number
    number = FakeLine(40, 30, 280, 90)
    assert plate_rows([column, number]) == [number]
    assert plate_rows([column]) == [] and plate_rows([]) == []


def test_a_two_row_plates_crop_goes_through_the_detector_higher() -> None:
    # Its rows are each under half the crop's height: at LINE_INPUT_HEIGHT they were missed.
    assert input_size(np.zeros((112, 88, 3), np.uint8)) == (SQUARE_INPUT_HEIGHT, 192)
    assert input_size(np.zeros((40, 160, 3), np.uint8)) == (LINE_INPUT_HEIGHT, 512)
    assert input_size(np.zeros((100, 140, 3), np.uint8)) == (LINE_INPUT_HEIGHT, 192)  # a US plate


def test_a_tilted_line_is_cut_upright() -> None:
    image = Image.new("RGB", (300, 200), "white")
    bar = Image.new("RGB", (200, 40), "black").rotate(10, expand=True, fillcolor="white")
    image.paste(bar, (150 - bar.width // 2, 100 - bar.height // 2))
    cut = cut_line(np.asarray(image), TextLine(150, 100, 200, 40, 10.0, 0.9))
    dark = cut.mean(axis=2) < 128
    # Upright: the bar fills the cut's middle rows from end to end, and its margins stay light.
    assert dark[cut.shape[0] // 2].mean() > 0.95
    assert dark[:2].mean() < 0.2 and dark[-2:].mean() < 0.2


def sheared(image: Image.Image, degrees: float) -> Image.Image:
    """`image` as a plate seen from the side: each column moved up by its x times tan(degrees)."""
    slope = math.tan(math.radians(degrees))
    rise = int(image.width * slope) + 4
    canvas = Image.new("RGB", (image.width + 8, image.height + rise + 8), (90, 90, 90))
    canvas.paste(image, (4, 4 + rise))
    return canvas.transform(
        canvas.size, Image.Transform.AFFINE, (1, 0, 0, slope, 1, 0), fillcolor=(90, 90, 90)
    )


def test_a_sheared_line_is_cut_level_with_its_verticals_upright() -> None:
    image = Image.new("RGB", (200, 40), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((96, 0, 104, 39), fill="black")  # a vertical stroke, the line's full height
    draw.rectangle((0, 30, 199, 35), fill="black")  # a bar along the baseline
    leaning = sheared(image, 20)
    cos = math.cos(math.radians(20))  # the rotated box the detector gives: along the baseline
    line = TextLine(leaning.width / 2, leaning.height / 2, 200 / cos, 40 * cos, 20.0, 0.9)
    dark = np.asarray(cut_sheared(np.asarray(leaning), line)).mean(axis=2) < 50  # black, not grey
    height, width = dark.shape

    # The stroke stays in the same columns from its top down to the bar; rotated level, it leans.
    def drift(cut: np.ndarray) -> float:
        top, low = round(0.15 * cut.shape[0]), round(0.55 * cut.shape[0])
        return abs(np.flatnonzero(cut[top]).mean() - np.flatnonzero(cut[low]).mean())

    rotated = np.asarray(cut_line(np.asarray(leaning), line)).mean(axis=2) < 50
    assert drift(dark) <= 1 and drift(rotated) > 5, (drift(dark), drift(rotated))
    # The baseline bar comes out level, at the same rows at both ends.
    left, right = np.flatnonzero(dark[:, width // 8]), np.flatnonzero(dark[:, 7 * width // 8])
    assert left.size and right.size and abs(left.mean() - right.mean()) <= 1
    # The band holds the line's whole height, a margin above and below it.
    stroke = np.flatnonzero(dark[:, width // 2])
    assert stroke.min() >= 2 and stroke.max() <= height - 3
    margin = CUT_MARGIN * line.height
    assert abs(stroke.size / height - 40 / (40 + 2 * margin)) < 0.03


def test_a_plate_seen_from_the_side_is_read_surely(
    finder: TextLineFinder, ocr: PlateOCR, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first read alone: the second read of an unsure plate can rescue a leaning cut.
    monkeypatch.setattr(read_fusion, "SECOND_READ_BELOW", 0.0)
    recognizer = PlateRecognizer(None, ocr, review_threshold=0.93, text_lines=finder)
    crop = np.asarray(sheared(Image.open(asset("plate_ad799kb")).convert("RGB"), 35))
    [reading] = recognizer.read_crops([crop])
    assert (reading.plate, reading.review) == ("AD799KB", False), reading  # 0.985
    # Only rotated level, its leaning strokes are read unsurely (0.64, flagged).
    monkeypatch.setattr(read_fusion, "SHEAR_FROM", float("inf"))
    [rotated] = recognizer.read_crops([crop])
    assert rotated.review, rotated


def test_the_text_detector_is_imported_with_its_checksum(plate_models: dict[str, Path]) -> None:
    import bentoml

    from services.core.model_store import DEFAULTS
    from services.core.sources import sha256_of

    meta = bentoml.models.get("plate-text-detector:latest").info.metadata
    assert meta["kind"] == "plate-text-detector" and "plate-text-detector" in DEFAULTS
    assert meta["source"] == (
        "package:rapidocr-onnxruntime==1.4.4#rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
    )
    assert (
        meta["source_sha256"]
        == sha256_of(plate_models["plate-text-detector"])
        == "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
    )


@pytest.fixture(scope="module")
def finder(plate_models: dict[str, Path]) -> TextLineFinder:
    return TextLineFinder(plate_models["plate-text-detector"])


@pytest.fixture(scope="module")
def ocr(plate_models: dict[str, Path]) -> PlateOCR:
    return PlateOCR(plate_models["plate-ocr"])


def us_plate(number: str = "7ABC123", state: str = "CALIFORNIA") -> np.ndarray:
    """A US plate as a detector crops it: state name above the number, web address below."""
    plate = Image.new("RGB", (320, 160), (242, 242, 236))
    draw = ImageDraw.Draw(plate)
    draw.rounded_rectangle((2, 2, 317, 157), radius=12, outline=(24, 40, 110), width=3)
    draw.text((160, 24), state, fill=(175, 30, 40), font=ImageFont.load_default(size=22), anchor="mm")
    draw.text((160, 84), number, fill=(24, 40, 110), font=ImageFont.load_default(size=68), anchor="mm")
    draw.text((160, 138), "dmv.ca.gov", fill=(24, 40, 110), font=ImageFont.load_default(size=16), anchor="mm")
    return np.asarray(plate)


def test_the_real_detector_drops_the_state_name_above_the_number(
    finder: TextLineFinder, ocr: PlateOCR
) -> None:
    crop = us_plate()
    [lines] = finder.find([crop])
    assert len(lines) >= 3  # the state name, the number and the address are all found
    [number] = plate_rows(lines)
    assert 55 < number.cy < 115 and number.height > 2 * min(line.height for line in lines)
    [read] = ocr.read_lines(finder.rows([crop]))
    assert read.text.replace(" ", "") == "7ABC123", read
    # Read whole, the state name joins the number.
    assert "CAL" in ocr.read([crop])[0].text.replace(" ", "")


def test_the_pipeline_reads_only_the_number_and_batches_crops(finder: TextLineFinder, ocr: PlateOCR) -> None:
    recognizer = PlateRecognizer(None, ocr, review_threshold=0.5, text_lines=finder)
    nevada = Image.fromarray(us_plate("8XYZ456", "NEVADA"))
    tilted = np.asarray(nevada.rotate(5, expand=True, fillcolor=(90, 90, 90)))
    readings = recognizer.read_crops([us_plate(), tilted], regions=["us-generic"])
    assert [r.plate for r in readings] == ["7ABC123", "8XYZ456"], [r.plate for r in readings]
    # A crop with no text line at all is read whole, as without the line cut: nothing, flagged.
    [blank] = recognizer.read_crops([np.full((120, 300, 3), 200, dtype=np.uint8)])
    assert blank.plate == "" and blank.review


def test_a_crops_lines_do_not_depend_on_the_other_crops_in_its_batch(finder: TextLineFinder) -> None:
    # Crops of three input widths (a US plate, the same plate narrower, a real EU plate crop):
    # padded to the widest one in a shared batch, the narrower ones' lines came out different,
    # so one client's photo could change another's reading in the served batch.
    us = us_plate()
    narrow = np.asarray(Image.fromarray(us).resize((200, 150)))
    # Two of one input width but not one height: 140 x 100 goes in at (128, 192), 88 x 112 (a
    # two-row plate's shape) at (256, 192).
    wide, square = (np.asarray(Image.fromarray(us).resize(size)) for size in ((140, 100), (88, 112)))
    batch = [us, narrow, np.asarray(Image.open(asset("plate_ad799kb")).convert("RGB")), wide, square]
    assert finder.find(batch) == [finder.find([one])[0] for one in batch]
