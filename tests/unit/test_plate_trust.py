"""The rules behind `review`: blue bands trimmed off crops, the car's own plate first, and
the evaluation figures that `review_threshold` is calibrated on."""

from __future__ import annotations

import numpy as np
import pytest

from services.plate_reader.crops import trim_bands
from services.plate_reader.evaluate import Evaluation, ImageOutcome
from services.plate_reader.pipeline import PlateRecognizer
from services.plate_reader.types import BoundingBox, Candidate, Detection, OcrResult

EU_BLUE, WHITE = (0, 51, 153), (245, 245, 245)


def plate_with_band(*, left: int = 0, top: int = 0, right: int = 0) -> np.ndarray:
    plate = np.full((60, 300, 3), WHITE, dtype=np.uint8)
    plate[:, :left] = EU_BLUE
    plate[:top] = EU_BLUE
    if right:
        plate[:, -right:] = EU_BLUE
    return plate


@pytest.mark.parametrize(
    ("bands", "expected_shape"),
    [
        (dict(left=30), (60, 270)),  # EU band with its country letter
        (dict(left=30, right=25), (60, 245)),  # FR / IT: a band on each side
        (dict(top=15), (45, 300)),  # Mercosur's "BRASIL" band
        (dict(), (60, 300)),  # no band: unchanged
    ],
)
def test_blue_bands_are_trimmed_off_the_crop(bands: dict[str, int], expected_shape: tuple[int, int]) -> None:
    assert trim_bands(plate_with_band(**bands)).shape[:2] == expected_shape


def test_a_blue_plate_or_background_is_not_a_band() -> None:
    blue = np.full((60, 300, 3), EU_BLUE, dtype=np.uint8)
    assert trim_bands(blue).shape == blue.shape


class FakeDetector:
    """Fake: fixed boxes with fixed confidences for every image, found only at input sizes
    of at least ``finds_from``; records the sizes it was run at."""

    def __init__(self, detections: list[Detection], finds_from: int = 0) -> None:
        self.detections, self.finds_from, self.imgsz = detections, finds_from, 640
        self.runs: list[tuple[int, int]] = []  # (images, input size)

    def detect(
        self, images: list[np.ndarray], *, min_score: float = 0.25, imgsz: int | None = None
    ) -> list[list[Detection]]:
        size = imgsz or self.imgsz
        self.runs.append((len(images), size))
        return [list(self.detections) if size >= self.finds_from else [] for _ in images]


class FakeOCR:
    """Fake: reads crops as the given sure texts in turn (default: a UK plate)."""

    def __init__(self, texts: tuple[str, ...] = ("AB12CDE",)) -> None:
        self.texts = texts

    def read(self, crops: list[np.ndarray]) -> list[OcrResult]:
        return [OcrResult(text, 0.99, (0.99,) * len(text)) for text, _ in zip(self.texts * len(crops), crops)]


def test_the_cars_own_plate_comes_first_not_a_small_background_one() -> None:
    far = Detection(BoundingBox(10, 10, 40, 20), 0.9)  # listed first by the detector
    near = Detection(BoundingBox(100, 100, 300, 160), 0.8)
    recognizer = PlateRecognizer(FakeDetector([far, near]), FakeOCR(), review_threshold=0.95)
    [readings] = recognizer.read([np.zeros((400, 400, 3), dtype=np.uint8)])
    assert [r.box for r in readings] == [near.box, far.box]


def test_text_that_fits_a_plate_format_comes_before_a_larger_sign() -> None:
    sign = Detection(BoundingBox(0, 0, 300, 100), 0.8)
    plate = Detection(BoundingBox(100, 200, 200, 230), 0.7)
    recognizer = PlateRecognizer(
        FakeDetector([sign, plate]), FakeOCR(("PARKING2H", "AB12CDE")), review_threshold=0.95
    )
    [readings] = recognizer.read([np.zeros((400, 400, 3), dtype=np.uint8)], regions=["uk"])
    assert [r.plate for r in readings] == ["AB12CDE", "PARKING2H"]


def test_a_photo_with_nothing_found_is_tried_again_at_the_larger_size() -> None:
    plate = Detection(BoundingBox(100, 100, 160, 115), 0.6)
    detector = FakeDetector([plate], finds_from=960)
    recognizer = PlateRecognizer(detector, FakeOCR(), review_threshold=0.95, retry_imgsz=960)
    large, small = np.zeros((720, 1280, 3), np.uint8), np.zeros((480, 640, 3), np.uint8)
    assert [len(r) for r in recognizer.read([large, small])] == [1, 0]
    # Only the large photo is retried: a photo no larger than the first input gains nothing.
    assert detector.runs == [(2, 640), (1, 960)]
    recognizer.retry_imgsz = 0  # off
    assert recognizer.read([large]) == [[]]


def outcome(truth: str, found: str, score: float) -> ImageOutcome:
    return ImageOutcome(
        "x.jpg",
        truth,
        (found,) if found else (),
        score if found else 0.0,
        score < 0.9 if found else True,
        0.01,
    )


def test_review_figures() -> None:
    evaluation = Evaluation(
        (
            outcome("AB12CDE", "AB12CDE", 0.99),  # right, accepted
            outcome("AB12CDE", "AB12CDF", 0.95),  # wrong, accepted: the costly case
            outcome("AB12CDE", "AB12CD", 0.50),  # wrong, flagged
            outcome("AB12CDE", "", 0.0),  # missed: nothing to accept or flag
            outcome("", "", 0.0),  # no plate, none read: right
        )
    )
    assert evaluation.exact_accuracy == pytest.approx(2 / 5)
    assert evaluation.accepted_precision == pytest.approx(1 / 2)
    assert evaluation.coverage == pytest.approx(2 / 5)
    assert evaluation.wrong_flagged == pytest.approx(1 / 2)
    assert evaluation.detection_rate == pytest.approx(3 / 4)
    stricter = evaluation.at_threshold(0.97)  # the same reads, review = score < 0.97
    assert stricter.accepted_precision == 1.0 and stricter.wrong_flagged == 1.0
    assert stricter.coverage == pytest.approx(1 / 5)
    assert Evaluation(()).accepted_precision is None


def test_a_plate_read_where_there_is_none_is_wrong() -> None:
    evaluation = Evaluation((outcome("", "STOP", 0.99),))
    assert evaluation.exact_accuracy == 0 and evaluation.accepted_precision == 0


def test_candidates_confidence_is_what_review_is_decided_on() -> None:
    candidate = Candidate("AB12CDE", score=0.97, region="uk", confidence=0.6)
    reading = PlateRecognizer._reading((candidate,), BoundingBox(0, 0, 10, 10), 0.9, 0.95)
    assert reading.score == 0.6 and reading.review


def test_a_sure_plate_comes_before_a_flagged_larger_sign() -> None:
    # A taxi sign read unsurely as "TAX1" fits the German format; the car's plate is read surely.
    sign = Detection(BoundingBox(0, 0, 300, 100), 0.8)
    plate = Detection(BoundingBox(100, 200, 200, 230), 0.6)

    class SignAndPlate(FakeOCR):
        def read(self, crops: list[np.ndarray]) -> list[OcrResult]:
            return [OcrResult("TAX1", 0.7, (0.99, 0.99, 0.99, 0.7)), OcrResult("AB12CDE", 0.99, (0.99,) * 7)]

    recognizer = PlateRecognizer(FakeDetector([sign, plate]), SignAndPlate(), review_threshold=0.93)
    [readings] = recognizer.read([np.zeros((400, 400, 3), dtype=np.uint8)])
    assert [(r.plate, r.review) for r in readings] == [("AB12CDE", False), ("TAX1", True)]


def test_among_flagged_readings_a_plate_read_as_is_comes_before_a_word_fitted_by_look_alikes() -> None:
    # "EXIT" fits the German format only as "EXI7" (T -> 7 from the look-alike table, which the
    # OCR never offered); the car's plate fits as read. Both are unsure: the plate comes first.
    sign = Detection(BoundingBox(0, 0, 300, 120), 0.8)
    plate = Detection(BoundingBox(100, 200, 200, 230), 0.6)

    class SignAndPlate(FakeOCR):
        def read(self, crops: list[np.ndarray]) -> list[OcrResult]:
            return [OcrResult("EXIT", 0.8, (0.8,) * 4), OcrResult("AB12CDE", 0.6, (0.6,) * 7)]

    recognizer = PlateRecognizer(FakeDetector([sign, plate]), SignAndPlate(), review_threshold=0.93)
    [readings] = recognizer.read([np.zeros((400, 400, 3), dtype=np.uint8)], regions=["de", "uk"])
    assert [(r.plate, r.review) for r in readings] == [("AB12CDE", True), ("EXI7", True)]
    assert readings[1].candidates[0].guessed == 1
