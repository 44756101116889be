"""The plate-reading pipeline: detector -> crops -> OCR -> plate-text rules. No HTTP here.

    >>> recognizer = PlateRecognizer.from_files(  # doctest: +SKIP
    ...     "detector.onnx", "ocr.onnx", review_threshold=0.93)
    >>> recognizer.read([photo])[0][0].plate  # doctest: +SKIP
    'AD799KB'
    >>> recognizer.read_crops([plate_crop])[0].plate  # no detector  # doctest: +SKIP
    'AD799KB'

Components are passed in (a detector, an OCR), so tests and other models slot in.
``rules=False`` turns the plate-text rules off (each plate is then the OCR's raw text,
normalised to A-Z0-9, at the OCR's confidence): ``modelport evaluate plates --raw``
measures what the rules add on this same code path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from services.plate_reader.crops import crop_plate
from services.plate_reader.detector import PlateDetector
from services.plate_reader.image_decoding import shrunk
from services.plate_reader.ocr import PlateOCR
from services.plate_reader.plate_regions import RegionHint, is_non_plate_text, rank_with_hint
from services.plate_reader.plate_text import normalise
from services.plate_reader.read_fusion import read_voted
from services.plate_reader.small_plates import find_in_tiles, tile_side, unseen
from services.plate_reader.stage_timing import timed
from services.plate_reader.text_lines import TextLineFinder
from services.plate_reader.tuned_tail import TailMismatch
from services.plate_reader.types import (
    BoundingBox,
    Candidate,
    Detection,
    OcrResult,
    PlateReading,
    ReadRequest,
)

log = logging.getLogger(__name__)


class PlateRecognizer:
    def __init__(
        self,
        detector: PlateDetector,
        ocr: PlateOCR,
        *,
        review_threshold: float,
        retry_imgsz: int = 0,
        tile: int = 0,
        text_lines: TextLineFinder | None = None,
        tuned_ocr: PlateOCR | None = None,
    ) -> None:
        self.detector = detector
        self.ocr = ocr
        # A second, plate-tuned recogniser reading every number line as ocr's equal
        # (read_fusion.fuse_equals; None: ocr reads alone). Only with text_lines.
        self.tuned_ocr = tuned_ocr
        # Finds the plate number's text line(s) in each crop, so only they are read, twice where
        # unsure (read_fusion.py; None: each crop is read whole, once).
        self.text_lines = text_lines
        self.review_threshold = review_threshold
        # Photos where the detector found nothing are run again at this larger input size
        # (0: never): a small plate in a large photo is often found there.
        self.retry_imgsz = retry_imgsz
        # Large photos where nothing was found even then are searched in tiles of this many
        # pixels (small_plates.py; 0: never): a far plate in a phone photo.
        self.tile = tile

    @property
    def fused(self) -> bool:
        """Whether a plate-tuned recogniser reads beside the base (a grafted tail or a whole model)."""
        return self.ocr.has_tail or self.tuned_ocr is not None

    @classmethod
    def from_files(
        cls,
        detector_path: str | Path,
        ocr_path: str | Path,
        *,
        review_threshold: float,
        detector_imgsz: int = 640,
        retry_imgsz: int = 0,
        tile: int = 0,
        text_detector_path: str | Path | None = None,
        tuned_ocr_dir: str | Path | None = None,
        tuned_temperature: float = 1.0,
    ) -> PlateRecognizer:
        """`tuned_ocr_dir`: a stored plate-tuned version read as the recogniser's equal: its
        tail.onnx grafted on the recogniser (tuned_tail.py; read in the same calls), else its
        whole model.onnx (its own session and calls)."""
        folder = Path(tuned_ocr_dir) if tuned_ocr_dir else None
        tail = folder / "tail.onnx" if folder and (folder / "tail.onnx").exists() else None
        whole = folder / "model.onnx" if folder and (folder / "model.onnx").exists() else None
        try:
            ocr = PlateOCR(ocr_path, tail_path=tail, tail_temperature=tuned_temperature)
        except TailMismatch as exc:  # trained on another recogniser: its whole model, or nothing
            log.warning("%s", exc)
            ocr, tail = PlateOCR(ocr_path), None
        if tail is not None:
            whole = None  # read in the recogniser's own calls
        return cls(
            PlateDetector(detector_path, imgsz=detector_imgsz),
            ocr,
            review_threshold=review_threshold,
            retry_imgsz=retry_imgsz,
            tile=tile,
            text_lines=TextLineFinder(text_detector_path) if text_detector_path else None,
            tuned_ocr=PlateOCR(whole, temperature=tuned_temperature) if whole else None,
        )

    def read(
        self,
        images: Sequence[np.ndarray],
        *,
        min_score: float = 0.25,
        regions: Sequence[str] = (),
        rules: bool = True,
    ) -> list[list[PlateReading]]:
        return self.read_batch(
            [ReadRequest(image, min_score, tuple(regions)) for image in images], rules=rules
        )

    def read_batch(self, requests: Sequence[ReadRequest], *, rules: bool = True) -> list[list[PlateReading]]:
        """Read every plate in every image, all images' plates together in each stage."""
        if not requests:
            return []
        with timed("batch"):
            return self._read_batch(requests, rules)

    def _read_batch(self, requests: Sequence[ReadRequest], rules: bool) -> list[list[PlateReading]]:
        found = [_in_whole(dets, r) for dets, r in zip(self._detect(requests, None), requests)]
        readings = self._read_found(requests, found, rules)
        # Nothing read surely at the first size (nothing found, or a sign beside a smaller plate):
        # the photo is looked at again at the retry size, and what that finds anew is read.
        retry = self.retry_imgsz and self.retry_imgsz > self.detector.imgsz  # 0: off
        again = [
            i
            for i, request in enumerate(requests)
            if retry
            and all(r.review for r in readings[i])
            and max(request.image.shape[:2]) > self.detector.imgsz
        ]
        if again:
            subset = [requests[i] for i in again]
            more = [
                unseen(_in_whole(d, r), [x.box for x in readings[i]])
                for d, r, i in zip(self._detect(subset, self.retry_imgsz), subset, again)
            ]
            for i, extra in zip(again, self._read_found(subset, more, rules)):
                readings[i] = sorted([*readings[i], *extra], key=_main_plate_first)
        for i, request in enumerate(requests):
            if self.needs_tiles(request, readings[i]):
                readings[i] = self._with_tiles(request, readings[i], rules)
        return readings

    def needs_tiles(self, request: ReadRequest, readings: Sequence[PlateReading]) -> bool:
        """A photo in which nothing was found is searched again in tiles where tiles would see it
        larger than the whole-photo passes did: its plate may be a far one they could not see. So
        is a large one (960-px tiles) in which nothing was read surely: a sign read unsurely may be
        all those passes found. A smaller photo with only flagged readings gets the retry size's
        second look alone: in 640-px tiles, a dashcam photo's four unsure motorbike plates cost
        0.6 s a request instead of 0.13 (README, "Small plates in large photos")."""
        if not request.tiles or not all(r.review for r in readings):
            return False
        side = self._tile_side(request)
        return side > 0 and (not readings or side == self.tile)

    def _tile_side(self, request: ReadRequest) -> int:
        if self.tile <= 0:  # off
            return 0
        whole = request.whole
        long_side = max(whole.width, whole.height) if whole else max(request.image.shape[:2])
        best_pass = max(self.detector.imgsz, self.retry_imgsz)
        return tile_side(long_side, self.tile, self.detector.imgsz, best_pass)

    def read_in_tiles(self, request: ReadRequest, readings: Sequence[PlateReading]) -> list[PlateReading]:
        """The tile search alone, for a photo whose batch read found nothing sure (``readings``;
        the server runs it after that batch has answered, in a thread of its own:
        photo_reading.py), merged with what the batch read."""
        with timed("batch"):
            return self._with_tiles(request, readings, rules=True)

    def _with_tiles(
        self, request: ReadRequest, readings: Sequence[PlateReading], rules: bool
    ) -> list[PlateReading]:
        found = unseen(self._find_in_tiles(request), [r.box for r in readings])
        extra = self._read_found([request], [found], rules)[0]
        return sorted([*readings, *extra], key=_main_plate_first)

    def _find_in_tiles(self, request: ReadRequest) -> list[Detection]:
        whole, image = request.whole, request.image
        if whole is not None:  # a large photo kept small: decoded again, at the tiles' scale
            size, pixels_at = (whole.width, whole.height), whole.scaled
        else:
            size, pixels_at = (image.shape[1], image.shape[0]), lambda side: shrunk(image, side)
        side = self._tile_side(request)
        return find_in_tiles(self.detector, size, pixels_at, side=side, min_score=request.min_score)

    def _read_found(
        self, requests: Sequence[ReadRequest], found: list[list[Detection]], rules: bool
    ) -> list[list[PlateReading]]:
        """Each request's plates found (boxes in the whole photo's pixels) cut out and read."""
        plates = [(i, d) for i, dets in enumerate(found) for d in dets]
        with timed("crop"):
            crops = _cut_crops(requests, plates)
        ranked = self._read_crops(crops, [requests[i].regions for i, _ in plates], rules)
        readings: list[list[PlateReading]] = [[] for _ in requests]
        for (i, detection), candidates in zip(plates, ranked):
            threshold = requests[i].review_threshold
            readings[i].append(
                self._reading(
                    candidates,
                    detection.box,
                    detection.confidence,
                    self.review_threshold if threshold is None else threshold,
                )
            )
        return [sorted(found, key=_main_plate_first) for found in readings]

    def _detect(self, requests: Sequence[ReadRequest], imgsz: int | None) -> list[list[Detection]]:
        lowest = min(r.min_score for r in requests)
        found = self.detector.detect([r.image for r in requests], min_score=lowest, imgsz=imgsz)
        return [[d for d in dets if d.confidence >= r.min_score] for dets, r in zip(found, requests)]

    def read_crops(
        self, crops: Sequence[np.ndarray], *, regions: Sequence[str] = (), rules: bool = True
    ) -> list[PlateReading]:
        """OCR + plate-text rules on plate crops (RGB uint8), no detector, in one OCR call:
        one reading per crop (its box the whole crop, dscore 1; plate "" when nothing was read)."""
        ranked = self._read_crops(crops, [tuple(regions)] * len(crops), rules)
        return [
            self._reading(
                candidates, BoundingBox(0, 0, crop.shape[1], crop.shape[0]), 1.0, self.review_threshold
            )
            for crop, candidates in zip(crops, ranked)
        ]

    def _read_crops(
        self, crops: Sequence[np.ndarray], regions: Sequence[tuple[str, ...]], rules: bool
    ) -> list[tuple[Candidate, ...]]:
        if self.text_lines is not None:
            return read_voted(
                self.ocr,
                self.text_lines,
                crops,
                lambda text, i, hint: _candidates(text, regions[i], rules, hint),
                self.tuned_ocr,
            )
        return [
            _candidates(text, crop_regions, rules)
            for text, crop_regions in zip(self.ocr.read(crops), regions)
        ]

    @staticmethod
    def _reading(
        candidates: tuple[Candidate, ...], box: BoundingBox, dscore: float, review_threshold: float
    ) -> PlateReading:
        # A plate the OCR cannot read at all is still reported (empty text, score 0,
        # review): the caller learns a plate is there and a human should look.
        best = candidates[0] if candidates else Candidate("", 0.0)
        return PlateReading(
            plate=best.plate,
            score=round(best.confidence, 4),
            dscore=dscore,
            box=box,
            candidates=candidates,
            review=best.confidence < review_threshold,
        )


def _in_whole(detections: list[Detection], request: ReadRequest) -> list[Detection]:
    """Boxes found on a smaller copy, in the whole photo's pixels."""
    height, width = request.image.shape[:2]
    whole = request.whole
    if whole is None or (whole.width, whole.height) == (width, height):
        return detections
    sx, sy = whole.width / width, whole.height / height
    return [
        Detection(
            BoundingBox(
                round(d.box.xmin * sx),
                round(d.box.ymin * sy),
                min(whole.width, round(d.box.xmax * sx)),
                min(whole.height, round(d.box.ymax * sy)),
            ),
            d.confidence,
        )
        for d in detections
    ]


def _cut_crops(requests: Sequence[ReadRequest], plates: Sequence[tuple[int, Detection]]) -> list[np.ndarray]:
    """Each plate cut from its photo at full resolution. A photo kept as a smaller copy is
    decoded again, one at a time, and its crops copied out so the whole is freed at once."""
    crops, image, at = [], requests[0].image, -1
    for i, d in plates:  # grouped by photo, in order
        request = requests[i]
        if i != at:
            image, at = (request.image if request.whole is None else request.whole.whole()), i
        crop = crop_plate(image, (d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax))
        crops.append(crop if image is request.image else crop.copy())
    return crops


def _main_plate_first(reading: PlateReading) -> tuple[bool, bool, bool, bool, float]:
    """Text no plate holds last (a CCTV timestamp, however large and sure); then text that fits
    a plate format before text that fits none (a sign, a sticker); then a reading the reader
    stands behind before one it flags (a sign read unsurely as "TAX1"
    beside the car's clearly read plate); then text that fits as read before a word fitted
    through look-alike guesses ("EXIT" as "EXI7"); then the largest sure box: the car's own
    plate is near, a background plate far and small. On 400 synthetic photos (seed 2) the
    guess step read 8 more plates exactly (53.5% -> 55.5%) at the same precision."""
    fits = bool(reading.candidates) and reading.candidates[0].region is not None
    guessed = bool(reading.candidates) and reading.candidates[0].guessed > 0
    area = reading.box.width * reading.box.height * reading.dscore
    return is_non_plate_text(reading.plate), not fits, reading.review, guessed, -area


def _candidates(
    text: OcrResult, regions: tuple[str, ...], rules: bool, hint: RegionHint | None = None
) -> tuple[Candidate, ...]:
    if not rules:
        plate = normalise(text.text)
        weakest = min(
            (c for char, c in zip(text.text, text.char_confidences) if normalise(char)), default=0.0
        )
        return (Candidate(plate, text.confidence, None, weakest),) if plate else ()
    return tuple(c for c in rank_with_hint(text, hint, regions=regions) if c.plate)
