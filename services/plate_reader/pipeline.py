"""The plate-reading pipeline: detector -> crops -> OCR -> plate-text rules. No HTTP here.

    >>> recognizer = PlateRecognizer.from_files("detector.onnx", "ocr.onnx")  # doctest: +SKIP
    >>> recognizer.read([photo])[0][0].plate  # doctest: +SKIP
    'AD799KB'

Components are passed in (a detector, an OCR), so tests and other models slot in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.plate_reader.detector import BoundingBox, PlateDetector
from services.plate_reader.ocr import PlateOCR
from services.plate_reader.plate_text import Candidate, rank_candidates


@dataclass(frozen=True)
class PlateReading:
    plate: str  # best candidate, A-Z0-9 only
    score: float  # how sure the reading is (0-1)
    dscore: float  # how sure the detector is that this box is a plate (0-1)
    box: BoundingBox
    candidates: tuple[Candidate, ...]  # ranked, best first; plate == candidates[0].plate
    review: bool  # score below the review threshold: a human should check it


@dataclass(frozen=True)
class ReadRequest:
    image: np.ndarray  # RGB uint8
    min_score: float
    regions: tuple[str, ...] = ()


class PlateRecognizer:
    def __init__(self, detector: PlateDetector, ocr: PlateOCR, *, review_threshold: float) -> None:
        self.detector = detector
        self.ocr = ocr
        self.review_threshold = review_threshold

    @classmethod
    def from_files(cls, detector_path: str | Path, ocr_path: str | Path, *,
                   review_threshold: float = 0.8, detector_imgsz: int = 640) -> PlateRecognizer:
        return cls(PlateDetector(detector_path, imgsz=detector_imgsz), PlateOCR(ocr_path),
                   review_threshold=review_threshold)

    def read(self, images: Sequence[np.ndarray], *, min_score: float = 0.25,
             regions: Sequence[str] = ()) -> list[list[PlateReading]]:
        return self.read_batch([ReadRequest(image, min_score, tuple(regions)) for image in images])

    def read_batch(self, requests: Sequence[ReadRequest]) -> list[list[PlateReading]]:
        """Read every plate in every image: one detector call, one OCR call for all crops."""
        if not requests:
            return []
        lowest = min(r.min_score for r in requests)
        found = self.detector.detect([r.image for r in requests], min_score=lowest)
        found = [[d for d in dets if d.confidence >= r.min_score] for dets, r in zip(found, requests)]
        crops = [(i, d) for i, dets in enumerate(found) for d in dets]
        texts = self.ocr.read_plates([(requests[i].image, d.box) for i, d in crops])
        readings: list[list[PlateReading]] = [[] for _ in requests]
        for (i, detection), text in zip(crops, texts):
            candidates = tuple(c for c in rank_candidates(text, regions=requests[i].regions) if c.plate)
            # A plate the OCR cannot read at all is still reported (empty text, score 0,
            # review): the caller learns a plate is there and a human should look.
            best = candidates[0] if candidates else Candidate("", 0.0)
            readings[i].append(PlateReading(
                plate=best.plate, score=round(best.score, 4), dscore=detection.confidence,
                box=detection.box, candidates=candidates,
                review=best.score < self.review_threshold,
            ))
        return readings
