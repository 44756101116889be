"""The values the plate reader's parts pass each other, all frozen dataclasses, in one place.

    detector  -> Detection(box=BoundingBox, confidence)
    OCR       -> OcrResult(text, confidence, char_confidences, alternatives=CharAlternative...)
    rules     -> Candidate(plate, score, region, confidence)
    pipeline  -> PlateReading (one per detected plate), from a ReadRequest (one per image)

No behaviour and no imports from the rest of the plate reader: every part may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class BoundingBox:
    """A detector box in image pixels."""

    xmin: int
    ymin: int
    xmax: int
    ymax: int

    @property
    def width(self) -> int:
        return self.xmax - self.xmin

    @property
    def height(self) -> int:
        return self.ymax - self.ymin


@dataclass(frozen=True)
class Detection:
    box: BoundingBox
    confidence: float


@dataclass(frozen=True)
class CharAlternative:
    char: str
    probability: float


@dataclass(frozen=True)
class OcrResult:
    """One plate's reading; ``char_confidences`` and ``alternatives`` align with ``text``."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    alternatives: tuple[tuple[CharAlternative, ...], ...] = ()
    # How surely the line holds a symbol no plate carries ("%" of "SALE 50%", "@", a Chinese
    # character): the text itself keeps only plate characters. 0 when none was read.
    foreign: float = 0.0
    # Where such a symbol sits: for each gap of ``text`` (before each character, then after the
    # last; len(text) + 1 values) the highest probability of a foreign symbol in the frames read
    # as no character there. A coat of arms between a plate's letters and digits shows here
    # (ZG [arms] 1234-AB). Empty: not known.
    symbol_gaps: tuple[float, ...] = ()


@dataclass(frozen=True)
class Candidate:
    plate: str  # A-Z0-9 only
    score: float  # 0-1: geometric mean of the (fixed) character confidences, format-adjusted
    # (with the rules off: the OCR's own confidence in its raw text)
    region: str | None = None  # the region whose format it fits, None for none
    # How sure the reader is that this plate is exactly right (0-1): the weakest
    # character's confidence, format-adjusted (with the rules off: the OCR's weakest character)
    confidence: float = 0.0
    # Characters the formats' look-alike table supplied where the OCR never offered them
    # ("EXIT" fitted as "EXI7"): a plate-like word more often than a plate
    guessed: int = 0


@dataclass(frozen=True)
class PlateReading:
    plate: str  # best candidate, A-Z0-9 only
    score: float  # how sure the reading is (0-1): the best candidate's confidence
    dscore: float  # how sure the detector is that this box is a plate (0-1)
    box: BoundingBox
    candidates: tuple[Candidate, ...]  # ranked, best first; plate == candidates[0].plate
    review: bool  # score below the review threshold: a human should check it


class WholeImage(Protocol):
    """A photo at full resolution, decoded on demand (image_decoding.Photo)."""

    @property
    def width(self) -> int: ...  # read-only: Photo's are fixed when it is decoded

    @property
    def height(self) -> int: ...

    def whole(self) -> np.ndarray: ...

    def scaled(self, side: int) -> np.ndarray: ...  # at about `side` px on its long side


@dataclass(frozen=True)
class ReadRequest:
    image: np.ndarray  # RGB uint8: what the detector reads
    min_score: float
    regions: tuple[str, ...] = ()
    review_threshold: float | None = None  # None: the recognizer's own
    # When `image` is a smaller copy of a large photo: boxes are given in the whole photo's
    # pixels, and plates are cut from it (decoded again, one photo at a time).
    whole: WholeImage | None = None
    # Search a large photo in tiles where nothing was found (small_plates.py). Off for video and
    # camera frames: a far vehicle comes nearer in the next frames, and a moving frame without
    # a plate would pay for every tile.
    tiles: bool = True
