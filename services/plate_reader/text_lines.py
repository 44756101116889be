"""Read only the characters: find the text lines in each plate crop, keep the plate number's.

    finder = TextLineFinder("ch_PP-OCRv4_det_infer.onnx")
    [lines] = finder.find([crop])        # every text line found in the crop (TextLine)
    rows = plate_rows(lines)             # [] (no line), [number] or [top row, bottom row]
    images = [cut_line(crop, row) for row in rows]   # upright line images for the recogniser

A US plate carries more text than its number: the state name above it, a slogan below, the
registration sticker in a corner, the dealer's frame around it. Read as one line they were
joined into the plate ("CALIFORNIA 5UVR090" read SEPCALIFORMIA5UVR090). PP-OCRv4's text
detector (a DB segmentation net, ONNX, from the same package as the recogniser) finds every
line; the number is the tallest line of plate-like shape, and a second line about as tall,
above or below it, is the other row of a two-row plate. Smaller lines never reach the
recogniser. A crop where no line is found is read whole, as before.

Crops go through the detector at LINE_INPUT_HEIGHT pixels high (those narrower than
SQUARE_ASPECT, most two-row plates, at SQUARE_INPUT_HEIGHT), those of one input size together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from services.plate_reader.crops import split_rows, trim_bands
from services.plate_reader.onnx_session import indices_by_shape, onnx_session
from services.plate_reader.stage_timing import timed

# Crops are run through the detector this many pixels high (a multiple of 32, as the net
# needs), width in proportion up to MAX_INPUT_WIDTH. A state name is ~15% of a US plate's
# height: ~19 px here, within what the detector finds.
LINE_INPUT_HEIGHT, MAX_INPUT_WIDTH = 128, 640
# A crop narrower than SQUARE_ASPECT (most two-row plates: motorbike, EU square, Vietnamese; their
# dev crops are 0.6-1.35 wide for 1 high, 95% under 1.25; and the squarest US crops) goes
# through at SQUARE_INPUT_HEIGHT: at 128 px each of
# its rows is ~40 px high, and the detector missed both rows of clear Brazilian motorbike plates
# (HCU6N98, HEM0A70 on dev camera crops), leaving the "BRASIL" band to be read as the plate.
# Dev seed 5: camera crops 633 -> 651 right and unflagged, Brazil exact 74.5 -> 76.8%. At 1.6
# most US street crops (1.0-1.8, median 1.4) went too: as many read, 14-15 s against 10-12 for 400.
SQUARE_ASPECT, SQUARE_INPUT_HEIGHT = 1.25, 256
# DB post-processing, PaddleOCR's / RapidOCR's defaults: pixels above PIXEL_THRESHOLD are
# text; a region whose mean probability is below BOX_THRESHOLD is dropped; each region is
# grown by area * UNCLIP_RATIO / perimeter on every side (the net is trained on shrunk text).
PIXEL_THRESHOLD, BOX_THRESHOLD, UNCLIP_RATIO = 0.3, 0.5, 1.6
# A line at least this share of the tallest line's height is part of the number (a row, or a
# piece of a row the detector split at a wide gap); smaller ones are side text. The detector
# boxes a two-row plate's short lower row lower than the number (0.64-0.74 as tall on dev camera
# crops): at 0.75 BL036VI's "VI" was cut off and "BL036" auto-accepted; at 0.6 a US dealer
# frame's "SUNTRUP" joined the number. 0.65 on the dev sets: 2 fewer wrong auto-accepts, as many
# right ones (a lower row boxed 0.64 as tall is still cut off).
ROW_SHARE = 0.65
# Two pieces are one row when their centres are within this share of their height vertically.
SAME_ROW = 0.5
# Lines narrower than this share of their height are not plate text (a sticker's column, a bolt).
MIN_ASPECT = 0.8
# ... except a two-row plate's short lower row ("IH", "EL": two letters, one an I), boxed 0.70-0.79
# as wide as tall on dev camera crops, as tall as the number and under it: left out, BA756IH was
# read BA756 and auto-accepted (truncation.py). Such a line at least this wide, at least
# ROW_SHARE as tall as the one row found and centred within its span above or below it, is the
# plate's other row.
SHORT_ROW_ASPECT = 0.5
# Context kept around a line when it is cut, as a share of its height (the recogniser was
# trained on lines with a little margin).
CUT_MARGIN = 0.08
CUT_HEIGHT = 48


@dataclass(frozen=True)
class TextLine:
    """One text line in a crop: its centre, length along the text, height, tilt, all in crop pixels."""

    cx: float
    cy: float
    length: float
    height: float
    angle: float  # degrees, counter-clockwise tilt of the text direction
    score: float  # the detector's mean text probability over the line

    @property
    def top(self) -> float:
        return self.cy - self.height / 2

    @property
    def bottom(self) -> float:
        return self.cy + self.height / 2

    @property
    def left(self) -> float:
        return self.cx - self.length / 2

    @property
    def right(self) -> float:
        return self.cx + self.length / 2


class TextLineFinder:
    """PP-OCR's DB text detector on ONNX Runtime, run on plate crops."""

    def __init__(self, model_path: str | Path, *, providers: Sequence[str] | None = None) -> None:
        self._session = onnx_session(model_path, providers)
        self._input_name = self._session.get_inputs()[0].name

    def find(self, crops: Sequence[np.ndarray]) -> list[list[TextLine]]:
        """The text lines of each crop (RGB uint8), in one detector call per input size.

        Padded to a wider crop's width in a shared batch, a crop's lines came out different (on
        40 US street dev crops in batches of 8: another number of lines on 5, boxes moved up to
        7 px; the net sees the padding), so a plate's reading depended on the other photos in
        its batch. Crops of one input size need no padding."""
        found: list[list[TextLine]] = [[] for _ in crops]
        by_size = indices_by_shape(_input_size(crop) for crop in crops)
        with timed("text_lines"):
            for size, indices in by_size.items():
                batch, scales = _to_batch([crops[i] for i in indices], size)
                probabilities = self._session.run(None, {self._input_name: batch})[0][:, 0]
                for i, p, s in zip(indices, probabilities, scales):
                    found[i] = _lines(p, s)
        return found

    def rows(self, crops: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """Each crop's plate rows as upright line images (top row first), for the recogniser.
        A crop where no plate-like line was found is given whole, as the OCR reads it alone
        (blue bands trimmed, split in two rows where it has a gap)."""
        return [
            [cut_line(crop, row) for row in rows] if rows else split_rows(trim_bands(crop))
            for crop, rows in zip(crops, map(plate_rows, self.find(crops)))
        ]


def plate_rows(lines: Sequence[TextLine]) -> list[TextLine]:
    """The plate number's rows among a crop's lines, top first: [] when no line is plate-like,
    [line] for a one-row plate, [top, bottom] for a two-row one."""
    candidates = [line for line in lines if line.length >= MIN_ASPECT * line.height]
    if not candidates:
        return []
    tallest = max(line.height for line in candidates)
    rows = _join_rows([line for line in candidates if line.height >= ROW_SHARE * tallest])
    if len(rows) == 1:
        rows += _short_rows(lines, rows[0])[:1]
    rows.sort(key=lambda row: row.cy)
    if len(rows) > 2:  # a plate has at most two rows: the tallest and the taller one next to it
        main = max(range(len(rows)), key=lambda i: rows[i].height)
        beside = max((i for i in (main - 1, main + 1) if 0 <= i < len(rows)), key=lambda i: rows[i].height)
        rows = [rows[min(main, beside)], rows[max(main, beside)]]
    return rows


def _short_rows(lines: Sequence[TextLine], row: TextLine) -> list[TextLine]:
    """Lines too narrow for MIN_ASPECT that are the short other row of a two-row plate whose
    number is ``row``: as tall, above or below it, centred within its span; tallest first."""
    short = [
        line
        for line in lines
        if SHORT_ROW_ASPECT * line.height <= line.length < MIN_ASPECT * line.height
        and line.height >= ROW_SHARE * row.height
        and row.left <= line.cx <= row.right
        and abs(line.cy - row.cy) > SAME_ROW * max(line.height, row.height)
    ]
    return sorted(short, key=lambda line: -line.height)


def _join_rows(lines: list[TextLine]) -> list[TextLine]:
    """Pieces of one row (the detector splits "ABC 1234" at a wide gap) joined into one line."""
    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda line: line.cx):
        for row in rows:
            if abs(row[0].cy - line.cy) <= SAME_ROW * max(row[0].height, line.height):
                row.append(line)
                break
        else:
            rows.append([line])
    return [_union(row) for row in rows]


def _union(pieces: list[TextLine]) -> TextLine:
    if len(pieces) == 1:
        return pieces[0]
    left, right = min(p.left for p in pieces), max(p.right for p in pieces)
    top, bottom = min(p.top for p in pieces), max(p.bottom for p in pieces)
    weights = [p.length for p in pieces]
    return TextLine(
        (left + right) / 2,
        (top + bottom) / 2,
        right - left,
        bottom - top,
        float(np.average([p.angle for p in pieces], weights=weights)),
        float(np.average([p.score for p in pieces], weights=weights)),
    )


def cut_line(crop: np.ndarray, line: TextLine) -> np.ndarray:
    """The line as an upright RGB image, its tilt undone (one affine resampling)."""
    zoom, width, height = _cut_size(line.length, line.height, CUT_MARGIN * line.height)
    theta = math.radians(line.angle)
    cos, sin = math.cos(theta) / zoom, math.sin(theta) / zoom
    # Output pixel (u, v) comes from the crop at centre + rotation of (u - w/2, v - h/2):
    # the image y axis points down, so a counter-clockwise tilt is a -theta rotation there.
    a, b = cos, sin
    d, e = -sin, cos
    c = line.cx - a * width / 2 - b * height / 2
    f = line.cy - d * width / 2 - e * height / 2
    return _affine_cut(crop, (width, height), (a, b, c, d, e, f))


def cut_sheared(crop: np.ndarray, line: TextLine) -> np.ndarray:
    """The line levelled by a shear, not a rotation: each crop column moved up or down so that
    the baseline is level, the characters' verticals left vertical. A plate seen from the side
    tilts its baseline, not its characters' strokes; rotated level, those strokes lean."""
    theta = math.radians(line.angle)
    # Along x the line spans length x cos; straight down its band is height / cos.
    cos = math.cos(theta)
    zoom, width, height = _cut_size(line.length * cos, line.height / cos, CUT_MARGIN * line.height)
    # Output (u, v) comes from crop x = cx + (u - w/2) / zoom, y = cy + (v - h/2) / zoom minus
    # the baseline's rise over that x (image y points down: a counter-clockwise tilt rises).
    slope = math.tan(theta)
    a, b, d, e = 1 / zoom, 0.0, -slope / zoom, 1 / zoom
    c = line.cx - width / (2 * zoom)
    f = line.cy - height / (2 * zoom) + slope * width / (2 * zoom)
    return _affine_cut(crop, (width, height), (a, b, c, d, e, f))


def _cut_size(length: float, height: float, margin: float) -> tuple[float, int, int]:
    """(zoom, width, height) of a cut of `length` x `height` crop pixels with `margin` around
    them: cut straight at the recogniser's height where the line is smaller, in one resampling."""
    zoom = max(1.0, CUT_HEIGHT / (height + 2 * margin)) if CUT_HEIGHT else 1.0
    return zoom, max(1, round((length + 2 * margin) * zoom)), max(1, round((height + 2 * margin) * zoom))


def _affine_cut(
    crop: np.ndarray, size: tuple[int, int], coefficients: tuple[float, float, float, float, float, float]
) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(crop))
    return np.asarray(
        image.transform(
            size,
            Image.Transform.AFFINE,
            coefficients,
            resample=Image.Resampling.BILINEAR,
            fillcolor=(127, 127, 127),
        )
    )


def _input_size(crop: np.ndarray) -> tuple[int, int]:
    """(height, width) the crop goes through the detector at: LINE_INPUT_HEIGHT high, or
    SQUARE_INPUT_HEIGHT for a crop narrower than SQUARE_ASPECT; the width in proportion, a
    multiple of 32 up to MAX_INPUT_WIDTH."""
    height, width = crop.shape[:2]
    aspect = width / max(height, 1)
    input_height = SQUARE_INPUT_HEIGHT if aspect < SQUARE_ASPECT else LINE_INPUT_HEIGHT
    return input_height, min(MAX_INPUT_WIDTH, max(32, round(input_height * aspect / 32) * 32))


def _to_batch(
    crops: Sequence[np.ndarray], size: tuple[int, int]
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """(N, 3, H, W) float32 for the detector from crops whose input size (_input_size) is
    ``size``, and per crop its (x, y) scale back to crop pixels."""
    new_height, new_width = size
    resized, scales = [], []
    for crop in crops:
        height, width = crop.shape[:2]
        image = Image.fromarray(np.ascontiguousarray(crop)).resize(
            (new_width, new_height), Image.Resampling.BILINEAR
        )
        resized.append(np.asarray(image))
        scales.append((width / new_width, height / new_height))
    # PaddleOCR's detector is trained on OpenCV's BGR images scaled to [-1, 1].
    bgr = np.stack(resized)[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    return bgr / 127.5 - 1.0, scales


def _lines(probability: np.ndarray, scale: tuple[float, float]) -> list[TextLine]:
    """DB post-processing of one crop's probability map: a rotated box per text region,
    grown back to the text's size, in crop pixels."""
    mask = ndimage.binary_dilation(probability > PIXEL_THRESHOLD, structure=np.ones((2, 2), bool))
    labels, _ = ndimage.label(mask)
    lines = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        ys, xs = np.nonzero(labels[region] == index)
        if len(xs) < 4:
            continue
        score = float(probability[region][ys, xs].mean())
        if score < BOX_THRESHOLD:
            continue
        ys, xs = ys + region[0].start, xs + region[1].start
        line = _rotated_box(xs.astype(np.float64), ys.astype(np.float64), score)
        if line is not None:
            lines.append(_to_crop(line, scale))
    return lines


def _rotated_box(xs: np.ndarray, ys: np.ndarray, score: float) -> TextLine | None:
    """The region's box along its principal axis (pixel centres, so +1 for their extent),
    grown by the DB unclip distance."""
    cx, cy = xs.mean(), ys.mean()
    covariance = np.cov(np.stack([xs - cx, ys - cy])) if len(xs) > 1 else np.zeros((2, 2))
    # Text lines are wider than tall: the principal axis is the text direction, kept within
    # +-45 degrees of horizontal (a short, tall region keeps its horizontal axis).
    angle = 0.5 * math.atan2(2 * covariance[0, 1], covariance[0, 0] - covariance[1, 1])
    if abs(angle) > math.pi / 4:
        angle = 0.0
    cos, sin = math.cos(angle), math.sin(angle)
    along = (xs - cx) * cos + (ys - cy) * sin
    across = -(xs - cx) * sin + (ys - cy) * cos
    length = along.max() - along.min() + 1
    height = across.max() - across.min() + 1
    if min(length, height) < 3:
        return None
    grow = length * height * UNCLIP_RATIO / (2 * (length + height))
    shift_along = (along.max() + along.min()) / 2
    shift_across = (across.max() + across.min()) / 2
    centre_x = cx + shift_along * cos - shift_across * sin
    centre_y = cy + shift_along * sin + shift_across * cos
    # Image y points down: a principal axis at +angle is a clockwise tilt on screen.
    return TextLine(centre_x, centre_y, length + 2 * grow, height + 2 * grow, -math.degrees(angle), score)


def _to_crop(line: TextLine, scale: tuple[float, float]) -> TextLine:
    """From detector-input pixels to crop pixels (x and y scale differ a little)."""
    sx, sy = scale
    theta = math.radians(line.angle)
    # Scale the length and height along their own directions.
    length = line.length * math.hypot(sx * math.cos(theta), sy * math.sin(theta))
    height = line.height * math.hypot(sx * math.sin(theta), sy * math.cos(theta))
    angle = math.degrees(math.atan2(sy * math.sin(theta), sx * math.cos(theta)))
    return TextLine((line.cx + 0.5) * sx, (line.cy + 0.5) * sy, length, height, angle, line.score)
