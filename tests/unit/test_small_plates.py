"""Small plates in large photos (services/plate_reader/small_plates.py): the tiling logic, and the
served read path (a large photo kept at the detector's size, decoded again) with real weights."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from services.plate_reader.batching import MicroBatcher
from services.plate_reader.image_decoding import decode_photos
from services.plate_reader.photo_reading import PhotoReader
from services.plate_reader.pipeline import PlateRecognizer
from services.plate_reader.settings import Settings
from services.plate_reader.small_plates import (
    MAX_TILES,
    OVERLAP,
    find_in_tiles,
    merge_duplicates,
    tile_boxes,
    tile_side,
    worth_tiling,
)
from services.plate_reader.types import BoundingBox, Detection, ReadRequest
from tests.scenes import iou, plate_on_street


@pytest.mark.parametrize("size", [(4032, 3024), (2560, 1536), (1000, 3000), (961, 700)])
def test_tiles_cover_the_photo_in_one_shape_and_overlap(size: tuple[int, int]) -> None:
    width, height, side = *size, 960
    tiles = tile_boxes(width, height, side)
    assert len({(x1 - x0, y1 - y0) for x0, y0, x1, y1 in tiles}) == 1  # one shape: shared calls
    assert all(min(x0, y0) >= 0 and x1 <= width and y1 <= height for x0, y0, x1, y1 in tiles)
    for axis, length in ((0, width), (1, height)):
        starts = sorted({t[axis] for t in tiles})
        ends = sorted({t[axis + 2] for t in tiles})
        assert starts[0] == 0 and ends[-1] == length  # the borders are reached
        # neighbours overlap by at least OVERLAP of a side: a plate that wide lies whole in one
        assert all(end - start >= OVERLAP * min(side, length) - 1 for start, end in zip(starts[1:], ends))


def test_a_very_large_photo_is_searched_in_at_most_max_tiles_at_a_smaller_scale() -> None:
    calls: list[int] = []
    asked: list[int] = []

    class Nothing:  # a fake detector that finds nothing, counting the tiles it is given
        imgsz = 640

        def detect(self, images, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(len(images))
            assert {i.shape for i in images} == {(640, 640, 3)}  # at the detector's size: no resize
            return [[] for _ in images]

    def pixels_at(side: int) -> np.ndarray:
        asked.append(side)
        return np.zeros((side, side, 3), np.uint8)

    # 36 Mpx: 64 tiles of 960 px; the tiles grow instead, and the photo is decoded once, smaller
    found = find_in_tiles(Nothing(), (6000, 6000), pixels_at, side=960, min_score=0.25)  # type: ignore[arg-type]
    assert found == []
    assert MAX_TILES - 8 <= sum(calls) <= MAX_TILES
    assert len(asked) == 1 and 1800 < asked[0] < 2400  # 6000 px at 640 / (960 grown to ~1,870)


def test_the_same_plate_from_two_tiles_and_a_cut_off_piece_are_one_plate() -> None:
    whole = Detection(BoundingBox(1000, 800, 1100, 830), 0.9)
    again = Detection(BoundingBox(1001, 801, 1099, 831), 0.8)  # the overlapping tile's view
    piece = Detection(BoundingBox(1050, 800, 1100, 830), 0.6)  # a tile's edge cut it
    other = Detection(BoundingBox(1200, 800, 1300, 830), 0.5)  # a second plate beside it
    assert merge_duplicates([piece, again, other, whole]) == [whole, other]


class FakeDetector:
    """Sees one plate at fixed photo coordinates: in a tile holding all of it, the whole box; in
    a tile whose edge cuts it, the piece inside, surer than the whole (as happened for real:
    `51F86988` read `51F869` at 0.99 from the piece)."""

    imgsz = 640

    def __init__(self, plate: BoundingBox, tiles: list[tuple[int, int, int, int]]) -> None:
        self.plate, self.tiles = plate, iter(tiles)

    def detect(self, images, **kwargs):  # type: ignore[no-untyped-def]
        found = []
        for _ in images:
            x0, y0, x1, y1 = next(self.tiles)
            p = self.plate
            cut = BoundingBox(max(p.xmin, x0), max(p.ymin, y0), min(p.xmax, x1), min(p.ymax, y1))
            if cut.width <= 0 or cut.height <= 0:
                found.append([])
                continue
            whole = cut == p
            local = BoundingBox(cut.xmin - x0, cut.ymin - y0, cut.xmax - x0, cut.ymax - y0)
            found.append([Detection(local, 0.8 if whole else 0.95)])
        return found


def test_a_plate_cut_by_a_tiles_edge_is_taken_from_the_tile_that_holds_it_whole() -> None:
    width, height = 2560, 1440
    tiles = tile_boxes(width, height, 640)  # side 640: the tiles' scale is the photo's own
    inner_edge = tiles[0][2]  # the first tile's right edge, inside the second tile
    plate = BoundingBox(inner_edge - 60, 1300, inner_edge + 20, 1325)
    image = np.zeros((height, width, 3), np.uint8)
    found = find_in_tiles(
        FakeDetector(plate, tiles),  # type: ignore[arg-type]
        (width, height),
        lambda side: image,
        side=640,
        min_score=0.25,
    )
    assert found == [Detection(plate, 0.8)]


def test_tiles_only_where_they_see_the_photo_larger_than_the_whole_photo_passes() -> None:
    # 640 over 960-px tiles is 2/3 of the photo's scale; the 960-px retry saw a 1,440-px photo so
    assert not worth_tiling(1440, 960, 640, 960)
    assert worth_tiling(1600, 960, 640, 960)
    assert not worth_tiling(4032, 0, 640, 960)  # off


@pytest.mark.parametrize(
    ("long_side", "side"),
    [(4032, 960), (1600, 960), (1440, 640), (1280, 640), (961, 640), (960, 0), (640, 0)],
)
def test_a_photo_too_small_for_960_px_tiles_is_searched_at_its_own_scale(long_side: int, side: int) -> None:
    # 960-px tiles see a photo at 2/3 of its scale: larger than the 960-px pass only past 1,440 px.
    # Below, tiles of the detector's own 640 px see it whole-size, larger than that pass's 3/4.
    assert tile_side(long_side, 960, 640, 960) == side
    assert tile_side(long_side, 0, 640, 960) == 0  # the setting's 0 turns the search off


class CountingDetector:
    """The real detector, counting the images it is given (a spy, not a fake)."""

    def __init__(self, detector) -> None:  # type: ignore[no-untyped-def]
        self.detector, self.images = detector, 0
        self.imgsz = detector.imgsz

    def detect(self, images, **kwargs):  # type: ignore[no-untyped-def]
        self.images += len(images)
        return self.detector.detect(images, **kwargs)


def read_served_way(recognizer: PlateRecognizer, jpeg: bytes) -> list:
    """As service.py reads an upload: a large photo kept at 960 px, decoded again when needed."""
    photo = decode_photos([jpeg], Settings())[0]
    return recognizer.read_batch([ReadRequest(photo.pixels, 0.25, whole=photo)])[0]


def recognizer_with(plate_models: dict[str, Path], *, tile: int, text_lines: bool = False) -> PlateRecognizer:
    """The served pipeline's parts on the store's real models (the 960-px retry on, as served)."""
    return PlateRecognizer.from_files(
        plate_models["plate-detector"],
        plate_models["plate-ocr"],
        review_threshold=0.93,
        retry_imgsz=960,
        tile=tile,
        text_detector_path=plate_models["plate-text-detector"] if text_lines else None,
    )


def test_a_far_plate_in_a_large_photo_is_found_in_tiles(plate_models: dict[str, Path]) -> None:
    recognizer = recognizer_with(plate_models, tile=0, text_lines=True)
    # A real plate crop 91 px wide in a 2560x1536 photo: 23 px at the 640-px pass, 34 px at the
    # 960-px retry, and neither finds it.
    scene = plate_on_street(canvas=(2560, 1536), at=(1200, 1100), scale=0.6)
    assert read_served_way(recognizer, scene.jpeg) == []
    recognizer.tile = 960
    readings = read_served_way(recognizer, scene.jpeg)
    assert readings[0].plate == "AD799KB"
    box = readings[0].box
    assert iou((box.xmin, box.ymin, box.xmax, box.ymax), scene.box) > 0.5  # in the whole photo's pixels


def with_sign(jpeg: bytes, text: str) -> bytes:
    """The photo with a shop sign painted near its top left: black text on a white board."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default(size=90)
    width = draw.textlength(text, font=font)
    draw.rectangle((280, 285, 320 + width, 432), fill="white", outline="black", width=6)
    draw.text((300, 300), text, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92)
    return out.getvalue()


def test_a_far_plate_beside_a_sign_read_unsurely_is_found_in_tiles(plate_models: dict[str, Path]) -> None:
    recognizer = recognizer_with(plate_models, tile=0, text_lines=True)
    # The far plate of the test above, and a "SALE 50%" sign the whole-photo passes read as a
    # German-format SALE50, flagged: something was found, but nothing a caller may act on.
    photo = with_sign(plate_on_street(canvas=(2560, 1536), at=(1200, 1100), scale=0.6).jpeg, "SALE 50%")
    without = read_served_way(recognizer, photo)
    assert [r.plate for r in without] == ["SALE50"] and without[0].review
    recognizer.tile = 960
    readings = read_served_way(recognizer, photo)
    assert (readings[0].plate, readings[0].review) == ("AD799KB", False)
    assert "SALE50" in [r.plate for r in readings]  # what the batch read is kept, after the plate


class SignFirstDetector:
    """A fake detector: at its first size it boxes only the sign; at the retry size the plate too
    (a plate too small for the first pass, as in the dev photos behind "ONEW4Y" signs)."""

    imgsz = 640

    def __init__(self, sign: BoundingBox, plate: BoundingBox) -> None:
        self.sign, self.plate, self.sizes = sign, plate, []  # type: list[int | None]

    def detect(self, images, *, min_score=0.25, imgsz=None):  # type: ignore[no-untyped-def]
        self.sizes.append(imgsz)  # boxes in the pixels given: the photo itself, it is small
        return [
            [Detection(b, 0.6) for b in ([self.sign] if imgsz is None else [self.sign, self.plate])]
            for _ in images
        ]


def test_a_plate_beside_a_sign_read_unsurely_is_looked_for_at_the_retry_size(
    plate_models: dict[str, Path],
) -> None:
    near = plate_on_street(canvas=(960, 720), at=(500, 500), scale=1.0)
    photo = Image.open(io.BytesIO(with_sign(near.jpeg, "SALE 50%"))).convert("RGB")
    sign = BoundingBox(280, 285, 700, 432)
    detector = SignFirstDetector(sign, BoundingBox(*near.box))
    recognizer = recognizer_with(plate_models, tile=0, text_lines=True)
    recognizer.detector = detector  # type: ignore[assignment]
    readings = recognizer.read([np.asarray(photo)])[0]
    assert detector.sizes == [None, 960]  # the first pass read only the sign, flagged: a second look
    assert (readings[0].plate, readings[0].review) == ("AD799KB", False)
    assert [r.plate for r in readings[1:]] == ["SALE50"]  # the sign, found twice, reported once


def test_a_photo_whose_plate_was_found_pays_for_no_tiles(plate_models: dict[str, Path]) -> None:
    recognizer = recognizer_with(plate_models, tile=960)
    spy = CountingDetector(recognizer.detector)
    recognizer.detector = spy  # type: ignore[assignment]
    scene = plate_on_street(canvas=(2560, 1536), at=(700, 900), scale=1.5)  # near: found at once
    assert read_served_way(recognizer, scene.jpeg)[0].plate == "AD799KB"
    assert spy.images == 1


def test_video_and_camera_frames_are_not_tiled(plate_models: dict[str, Path]) -> None:
    # Read as served (the number's line cut): read whole, PP-OCRv6 joins the EU band's edge
    # to this plate (ZAD799KB, flagged).
    recognizer = recognizer_with(plate_models, tile=960, text_lines=True)
    spy = CountingDetector(recognizer.detector)
    recognizer.detector = spy  # type: ignore[assignment]
    scene = plate_on_street(canvas=(2560, 1536), at=(1200, 1100), scale=0.6)  # found only in tiles
    frame = decode_photos([scene.jpeg], Settings(whole_image_max_pixels=10**8))[0].pixels
    assert recognizer.read_batch([ReadRequest(frame, 0.25, tiles=False)]) == [[]]
    assert spy.images == 2  # the first pass and the 960-px retry, no tiles
    assert recognizer.read_batch([ReadRequest(frame, 0.25)])[0][0].plate == "AD799KB"


def test_the_server_reads_the_batch_first_and_tiles_on_their_own_thread(
    plate_models: dict[str, Path],
) -> None:
    recognizer = recognizer_with(plate_models, tile=960, text_lines=True)
    batches: list[list[bool]] = []  # each batch's requests' `tiles`
    tile_threads: list[str] = []

    def read_batch(requests):  # type: ignore[no-untyped-def]
        batches.append([r.tiles for r in requests])
        return recognizer.read_batch(requests)

    def read_in_tiles(request, readings):  # type: ignore[no-untyped-def]
        tile_threads.append(threading.current_thread().name)
        return PlateRecognizer.read_in_tiles(recognizer, request, readings)

    recognizer.read_in_tiles = read_in_tiles  # type: ignore[method-assign]
    far = plate_on_street(canvas=(2560, 1536), at=(1200, 1100), scale=0.6)  # found only in tiles
    # Read surely, so no tiles (KRW301 is read with its W flagged, and would be searched too).
    near = plate_on_street(canvas=(1280, 720), at=(500, 450), scale=1.5)

    async def go() -> list[list]:
        photos = PhotoReader(MicroBatcher(read_batch, max_size=2), recognizer)
        requests = [
            ReadRequest(p.pixels, 0.25, whole=p) for p in decode_photos([far.jpeg, near.jpeg], Settings())
        ]
        return await asyncio.gather(*(photos.read(r) for r in requests))

    far_readings, near_readings = asyncio.run(go())
    assert far_readings[0].plate == "AD799KB"
    assert (near_readings[0].plate, near_readings[0].review) == ("AD799KB", False)
    assert batches == [[False, False]]  # one batch for both, no tile search inside it
    assert tile_threads == ["tiles_0"]  # the far photo's search, on the tile thread
