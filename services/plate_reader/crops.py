"""Turn detector boxes into recogniser input: crop with a margin, split two-row plates, batch.

    crop = crop_plate(image, (x1, y1, x2, y2))   # RGB uint8, margin of 5% of the box
    crop = trim_bands(crop)                     # without the EU band's country letter
    lines = split_rows(crop)                    # [crop] or [top_row, bottom_row]
    batch = to_batch(lines)                     # (N, 3, 48, W) float32 for PP-OCR
    padded_width(line)                          # the W the reader pads a line to

Measured on 31 real crops (tests/data/fetch_plates.py): splitting two-row plates took
exact plates from 22/31 to 29/31; autocontrast, bicubic/Lanczos resizing and
edge-replicated margins around the crops gained nothing or lost plates, so they are not here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

# The recogniser's input height (PP-OCRv4 rec: 3 x 48 x W).
LINE_HEIGHT = 48
# Each line is padded right to the next multiple of this width, whatever else is in its batch:
# the neck's attention sees the padding, so padding to a batch's widest line made a plate read
# differently beside a wider one (KRW301 read KRN 301 alone, KRYN 301 beside AD799KB), and one
# client's photo could change another's reading in a shared batch. PaddleOCR pads every line
# to 320 px (its training shape, a 6.7:1 line), but plate lines are 2.5-5:1: most of each batch
# was padding, and the recogniser cost 1.4-2.5x as much on the benchmark's street photos.
LINE_WIDTH_STEP = 64
# Margin around a detector box, as a share of its width and height. Label boxes read the
# same with 0 to 15% (18 photos); 25% let neighbouring text in and lost 4 of 18 plates.
BOX_MARGIN = 0.05
# One-row plates are 3.5:1 (US, 2:1 with its state name and slogan) to 5:1 (EU); two-row ones
# 1.3:1 to 2:1, their crops on the dev sets 0.6-1.35:1 (a box's margin, an oblique view). Wider
# crops are never split.
TWO_ROW_MAX_ASPECT = 3.0
# Split where a row crosses fewer strokes than this share of a typical text row. Two-row
# test plates measured 0.21-0.74, one-row ones 1.3 and up; 0.8-1.2 all read the same.
GAP_RATIO = 1.0


def crop_plate(
    image: np.ndarray, box: tuple[float, float, float, float], *, margin: float = BOX_MARGIN
) -> np.ndarray:
    """Cut ``box`` (x1, y1, x2, y2 in pixels) out of ``image`` with ``margin`` added on each side."""
    x1, y1, x2, y2 = box
    pad_x, pad_y = margin * (x2 - x1), margin * (y2 - y1)
    height, width = image.shape[:2]
    left, top = max(0, round(x1 - pad_x)), max(0, round(y1 - pad_y))
    right, bottom = min(width, round(x2 + pad_x)), min(height, round(y2 + pad_y))
    return image[top:bottom, left:right]


# A column (row) is part of a blue band when this share of its pixels is clearly blue; a
# band is searched for in the outer BAND_SEARCH share of the crop's width (height).
BAND_BLUE_SHARE, BAND_SEARCH = 0.35, 0.22


def trim_bands(crop: np.ndarray, edges: tuple[int, int, int] | None = None) -> np.ndarray:
    """The crop without blue bands at its left, right or top edge (the EU band with its country
    letter, FR/IT's right band, Mercosur's "BRASIL" band): the recogniser reads their letters
    into the plate otherwise. ``edges``: the crop's band_edges, where the caller has them."""
    top, left, right = band_edges(crop) if edges is None else edges
    return crop[top:, left:right]


def band_edges(crop: np.ndarray) -> tuple[int, int, int]:
    """(top, left, right): the rows and columns trim_bands keeps, crop[top:, left:right]."""
    if crop.ndim != 3 or min(crop.shape[:2]) < 8:
        return 0, 0, crop.shape[1]
    rgb = crop.astype(np.int16)
    blue = (rgb[..., 2] - np.maximum(rgb[..., 0], rgb[..., 1]) > 40) & (rgb[..., 2] > 90)
    height, width = blue.shape
    left = _band_end(blue.mean(axis=0)[: int(width * BAND_SEARCH)])
    right = width - _band_end(blue.mean(axis=0)[::-1][: int(width * BAND_SEARCH)])
    top = _band_end(blue.mean(axis=1)[: int(height * 0.4)])
    if right - left > width // 2 and height - top > height // 2:
        return top, left, right
    return 0, 0, width


def _band_end(share: np.ndarray) -> int:
    """Index just past the last band line in ``share`` (lines from the edge inwards), 0 if none.
    Blue up to the end of the searched strip is a blue plate or background, not a band."""
    lines = np.flatnonzero(share > BAND_BLUE_SHARE)
    if not len(lines) or lines[-1] >= len(share) - 1:
        return 0
    return int(lines[-1]) + 1


def split_rows(crop: np.ndarray) -> list[np.ndarray]:
    """``[crop]`` for a one-row plate, ``[top, bottom]`` for a two-row one (motorbike, VN, ...)."""
    height, width = crop.shape[:2]
    if width > TWO_ROW_MAX_ASPECT * height or height < 8:
        return [crop]
    gray = crop.astype(np.float32).mean(axis=2)
    ink = gray < _otsu_threshold(gray)
    # Rows through characters cross many strokes; the gap between two rows crosses almost
    # none. Counting crossings of a binarised crop does not depend on contrast or colour.
    crossings = np.count_nonzero(np.diff(ink, axis=1), axis=1).astype(np.float32)
    crossings = np.convolve(crossings, np.ones(3) / 3, mode="same")
    low, high = int(height * 0.3), int(height * 0.7)
    cut = low + int(crossings[low:high].argmin())
    text_level = min(np.median(crossings[:cut]), np.median(crossings[cut:]))
    if crossings[cut] >= GAP_RATIO * text_level:
        return [crop]
    return [crop[:cut], crop[cut:]]


def line_width(line: np.ndarray) -> int:
    """The line's width once resized to the recogniser's height."""
    height, width = line.shape[:2]
    return max(1, math.ceil(LINE_HEIGHT * width / height))


def padded_width(line: np.ndarray) -> int:
    """The width the reader pads this line to: the next multiple of LINE_WIDTH_STEP."""
    return -(-line_width(line) // LINE_WIDTH_STEP) * LINE_WIDTH_STEP


def to_batch(lines: Sequence[np.ndarray], *, min_width: int = 0) -> np.ndarray:
    """Resize RGB lines to the model height and pad them right to one width, the widest line's
    (at least ``min_width``): (N, 3, 48, W). The reader batches lines of one padded_width."""
    resized = []
    for line in lines:
        image = Image.fromarray(np.ascontiguousarray(line))
        resized.append(np.asarray(image.resize((line_width(line), LINE_HEIGHT), Image.Resampling.BILINEAR)))
    batch_width = max(min_width, *(line.shape[1] for line in resized))
    # Zeros after normalisation are mid-grey, PaddleOCR's padding value.
    batch = np.zeros((len(resized), 3, LINE_HEIGHT, batch_width), dtype=np.float32)
    for index, line in enumerate(resized):
        # PaddleOCR models are trained on OpenCV's BGR images, scaled to [-1, 1].
        bgr = line[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
        batch[index, :, :, : line.shape[1]] = bgr / 127.5 - 1.0
    return batch


def _otsu_threshold(gray: np.ndarray) -> float:
    """The grey level that best separates ink from plate (Otsu's method)."""
    histogram = np.bincount(gray.astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    weight = np.cumsum(histogram)
    mass = np.cumsum(histogram * np.arange(256))
    between = (mass[-1] * weight - mass * weight[-1]) ** 2
    between /= np.maximum(weight * (weight[-1] - weight), 1e-9)
    return float(between.argmax())
