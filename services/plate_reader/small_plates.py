"""Small plates in large photos: where nothing was read surely, search the photo again in tiles.

    found = find_in_tiles(detector, whole_photo, side=960, min_score=0.25)   # whole-photo pixels

A plate 60-100 px wide in a 3-12 Mpx phone photo shrinks to 10-25 px at the detector's 640-px
input (and 14-37 px at the 960-px retry), too small to be found: real dev plates pasted at
100 px into a 4032x3024 photo were found in 0 of 24 photos, and at 70 px into a 1600x1200 one
in 9 of 24 (README, "Small plates in large photos"). Cut into tiles of `side` px, each run at the
detector's own size, the photo is searched at 640/side of its scale instead. Only photos where
nothing was found, or only what a person must check (a sign read as "SALE50" hid a far plate the
tiles would have read), pay for it, and only where the tiles' scale beats the whole-photo passes'.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from services.plate_reader.detector import PlateDetector
from services.plate_reader.types import BoundingBox, Detection

OVERLAP = 0.25  # of a tile's side: a plate up to this wide lies whole in some tile
# At most this many tiles a photo: a 12 Mpx 4032x3024 photo's at 960 px (~1.5 s on 2 cores); a
# 36 Mpx one would need 64. Beyond it the tiles grow, and so does the smallest plate they find.
MAX_TILES = 24
CHUNK = 2  # tiles per detector call: as many as a batch's photos, so ONNX Runtime's arena grows no larger
EDGE = 2  # px: a box this near a tile's inner edge was cut by it
SAME_PLATE = 0.5  # a box this much inside a surer one is that plate again (or a piece of it)


def worth_tiling(long_side: int, side: int, detector_imgsz: int, best_pass_imgsz: int) -> bool:
    """True when tiles see the photo at a larger scale than the largest whole-photo pass did."""
    return side > 0 and long_side * detector_imgsz / side > best_pass_imgsz


def tile_side(long_side: int, side: int, detector_imgsz: int, best_pass_imgsz: int) -> int:
    """The tiles to search a photo in: of `side` px where they see it larger than the whole-photo
    passes did, else of the detector's own size (the photo at its own scale: a 1280x960 photo,
    which the 960-px pass saw at 3/4), where that does; 0 for none (or `side` 0: off). On dev
    crops pasted 50-60 px wide into 1280x960 and 1440x1080 photos, 640-px tiles found 14 -> 19,
    4 -> 18, 12 -> 20 and 5 -> 20 of 24 (README, "Small plates in large photos")."""
    if side <= 0:
        return 0
    return next(
        (s for s in (side, detector_imgsz) if worth_tiling(long_side, s, detector_imgsz, best_pass_imgsz)), 0
    )


def tile_boxes(width: int, height: int, side: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of square tiles of `side` (the photo's own side where it is smaller)
    covering the photo, neighbours overlapping by at least OVERLAP; the last tile of each row and
    column ends at the border, so all tiles have one shape and share detector calls."""

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        overlap = round(side * OVERLAP)
        count = math.ceil((length - overlap) / (side - overlap))
        step = (length - side) / (count - 1)
        return [round(k * step) for k in range(count)]

    tile_w, tile_h = min(side, width), min(side, height)
    return [(x, y, x + tile_w, y + tile_h) for y in starts(height) for x in starts(width)]


def find_in_tiles(
    detector: PlateDetector,
    size: tuple[int, int],
    pixels_at: Callable[[int], np.ndarray],
    *,
    side: int,
    min_score: float,
) -> list[Detection]:
    """Plates found tile by tile in a photo of `size` (width, height), in its pixels, one per plate.

    `pixels_at(long_side)` gives the photo (RGB uint8) at about that long side: it is asked once,
    at the tiles' scale (detector.imgsz / side), so the tiles need no resizing and the whole photo
    is never held (a JPEG is decoded straight at a reduced scale: image_decoding.Photo.scaled)."""
    width, height = size
    while len(tile_boxes(width, height, side)) > MAX_TILES:  # larger photos: a smaller scale
        side = round(side * 1.1)
    image = pixels_at(round(max(size) * min(1.0, detector.imgsz / side)))
    sx, sy = width / image.shape[1], height / image.shape[0]
    boxes = tile_boxes(image.shape[1], image.shape[0], detector.imgsz)
    found: list[Detection] = []
    for at in range(0, len(boxes), CHUNK):
        chunk = boxes[at : at + CHUNK]
        tiles = [image[y0:y1, x0:x1] for x0, y0, x1, y1 in chunk]
        for tile, detections in zip(chunk, detector.detect(tiles, min_score=min_score)):
            x0, y0 = tile[:2]
            found += [
                Detection(
                    BoundingBox(
                        round((d.box.xmin + x0) * sx),
                        round((d.box.ymin + y0) * sy),
                        min(width, round((d.box.xmax + x0) * sx)),
                        min(height, round((d.box.ymax + y0) * sy)),
                    ),
                    d.confidence,
                )
                for d in detections
                if not _cut_by_tile_edge(d.box, tile, image.shape[1], image.shape[0])
            ]
    return merge_duplicates(found)


def _cut_by_tile_edge(box: BoundingBox, tile: tuple[int, int, int, int], width: int, height: int) -> bool:
    """A box (in the tile's pixels) touching an edge the tile shares with a neighbour: a piece of
    a plate that lies whole in that neighbour (they overlap by more than a small plate's width).
    Kept, the piece was read surely as a shorter plate: `51F86988` as `51F869` at 0.99."""
    x0, y0, x1, y1 = tile
    return (
        (x0 > 0 and box.xmin <= EDGE)
        or (y0 > 0 and box.ymin <= EDGE)
        or (x1 < width and box.xmax >= x1 - x0 - EDGE)
        or (y1 < height and box.ymax >= y1 - y0 - EDGE)
    )


def merge_duplicates(detections: list[Detection]) -> list[Detection]:
    """Surest first; a box lying mostly inside one kept (the same plate seen by two overlapping
    tiles, or the piece of it a tile's edge cut off) is dropped."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.confidence):
        if all(_intersection(d.box, k.box) < SAME_PLATE * _area(d.box) for k in kept):
            kept.append(d)
    return kept


def unseen(detections: list[Detection], read: list[BoundingBox]) -> list[Detection]:
    """The detections of a second look (the retry size, tiles) that are no plate already read: a
    box mostly inside one of ``read``, or holding one, is that plate again. Read again, a photo's
    four flagged motorbike plates cost 1.1 s instead of 0.13 (README, "Small plates in large
    photos"); a new box is what a second look is for."""
    return [
        d
        for d in detections
        if all(_intersection(d.box, box) < SAME_PLATE * min(_area(d.box), _area(box)) for box in read)
    ]


def _area(box: BoundingBox) -> int:
    return max(1, box.width * box.height)


def _intersection(a: BoundingBox, b: BoundingBox) -> int:
    width = min(a.xmax, b.xmax) - max(a.xmin, b.xmin)
    height = min(a.ymax, b.ymax) - max(a.ymin, b.ymin)
    return max(0, width) * max(0, height)
