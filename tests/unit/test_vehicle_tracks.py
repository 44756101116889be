"""Tracking plates across frames into vehicle events. Readings are fakes built here
(fake_reading), not model output; frames are blank arrays."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from services.plate_reader.settings import Settings
from services.plate_reader.types import BoundingBox, Candidate, PlateReading
from services.plate_reader.vehicle_tracks import VehicleTracker

SETTINGS = Settings(track_max_gap_s=1.0, track_max_live=4, track_max_readings=8)
FRAME = np.zeros((720, 1280, 3), np.uint8)


def fake_reading(plate: str, box: tuple[int, int, int, int], score: float = 0.97) -> PlateReading:
    return PlateReading(
        plate, score, 0.9, BoundingBox(*box), (Candidate(plate, score, None, score),), score < 0.93
    )


def test_one_car_approaching_is_one_event_with_its_voted_plate() -> None:
    tracker = VehicleTracker(SETTINGS)
    events = []
    for k in range(6):  # the plate grows and moves down: the car comes closer
        x, y, w = 600 - 10 * k, 300 + 20 * k, 100 + 20 * k
        plate, score = ("AD799K8", 0.4) if k == 2 else ("AD799KB", 0.97)  # one frame misreads, unsure
        events += tracker.update(k * 0.2, [fake_reading(plate, (x, y, x + w, y + w // 4), score)], FRAME)
    assert events == []  # still in view
    (event,) = tracker.flush()
    assert event.plate == "AD799KB" and event.frames_read == 6 and event.agreeing == 5
    assert (event.first_seen, event.last_seen) == (0.0, 1.0)
    assert event.direction == "approaching"
    assert not event.review
    assert Image.open(io.BytesIO(event.best_crop or b"")).format == "JPEG"
    body = event.to_json("/v1/plate-reader/video/crops/" + event.id)
    assert body["plate"] == "AD799KB" and body["crop"].endswith(event.id)


def test_two_cars_crossing_keep_their_own_plates() -> None:
    # One drives right, one left; their boxes overlap mid-way, the text tells them apart.
    tracker = VehicleTracker(SETTINGS)
    for k in range(9):
        a = 200 + 100 * k
        b = 1000 - 100 * k
        tracker.update(
            k * 0.2,
            [fake_reading("AD799KB", (a, 400, a + 120, 430)), fake_reading("KRW301", (b, 410, b + 120, 440))],
            FRAME,
        )
    events = sorted(tracker.flush(), key=lambda e: e.plate)
    assert [(e.plate, e.frames_read, e.direction) for e in events] == [
        ("AD799KB", 9, "right"),
        ("KRW301", 9, "left"),
    ]


def test_a_track_unseen_for_the_gap_ends_with_its_event() -> None:
    tracker = VehicleTracker(SETTINGS)
    tracker.update(0.0, [fake_reading("AD799KB", (100, 100, 200, 130))], FRAME)
    assert tracker.update(0.5, [], FRAME) == []
    (event,) = tracker.update(1.6, [], FRAME)
    assert event.plate == "AD799KB" and tracker.open_tracks == 0


def test_a_box_read_as_less_than_any_plate_is_no_vehicle() -> None:
    # A box on an empty street read "1" (one character: no plate of any format) or nothing.
    tracker = VehicleTracker(SETTINGS)
    tracker.update(0.0, [fake_reading("1", (675, 447, 725, 479), 0.41)], FRAME)
    tracker.update(0.2, [fake_reading("", (100, 100, 150, 130), 0.0)], FRAME)
    tracker.update(0.4, [fake_reading("AB", (900, 400, 960, 420), 0.5)], FRAME)  # as long as "9A", kept
    assert [e.plate for e in tracker.flush()] == ["AB"]


def test_memory_is_bounded() -> None:
    tracker = VehicleTracker(SETTINGS)
    ended = []
    for k in range(10):  # ten plates at once, far apart, texts unlike
        plate = f"{chr(65 + k) * 3}{k}{k}{k}"
        ended += tracker.update(0.0, [fake_reading(plate, (100 * k, 0, 100 * k + 50, 20))], FRAME)
    assert tracker.open_tracks == SETTINGS.track_max_live
    assert len(ended) == 10 - SETTINGS.track_max_live
    for k in range(40):  # one car read 40 times keeps only its surest readings
        tracker.update(0.1 + k * 0.1, [fake_reading("AD799KB", (0, 500, 100, 530), 0.5 + k / 100)], FRAME)
    track = next(tr for tr in tracker._tracks if tr.best.plate == "AD799KB")
    assert len(track.readings) == SETTINGS.track_max_readings and track.frames_read == 40


def test_store_images_off_keeps_no_crop() -> None:
    tracker = VehicleTracker(Settings(store_images=False))
    tracker.update(0.0, [fake_reading("AD799KB", (100, 100, 200, 130))], FRAME)
    (event,) = tracker.flush()
    assert event.best_crop is None and event.to_json("/x")["crop"] is None


def test_a_plate_cut_by_the_frame_edge_is_not_trusted() -> None:
    tracker = VehicleTracker(SETTINGS)
    tracker.update(0.0, [fake_reading("FX06", (1200, 400, 1280, 430), 0.99)], FRAME)  # entering at the right
    (event,) = tracker.flush()
    assert event.plate == "FX06" and event.review and event.score < 0.93


def test_a_plate_boxed_twice_in_a_frame_is_one_vehicle() -> None:
    # The detector sometimes boxes a plate and the plate with some car around it: one track.
    tracker = VehicleTracker(SETTINGS)
    for k in range(3):
        x = 300 + 50 * k
        plate, around = (x, 400, x + 120, 430), (x - 10, 390, x + 130, 445)
        tracker.update(k * 0.2, [fake_reading("RXN76F", around), fake_reading("RXN76F", plate, 0.98)], FRAME)
    (event,) = tracker.flush()
    assert event.frames_read == 3


def test_a_plate_boxed_twice_keeps_the_plates_box_not_the_cars() -> None:
    # The box with car around it read a little surer: the event still boxes the plate.
    tracker = VehicleTracker(SETTINGS)
    plate, around = (182, 431, 278, 459), (181, 422, 373, 462)
    tracker.update(
        0.0, [fake_reading("DDZN296", around, 0.9946), fake_reading("DDZN296", plate, 0.9928)], FRAME
    )
    (event,) = tracker.flush()
    assert (event.box.xmin, event.box.ymin, event.box.xmax, event.box.ymax) == plate
    assert event.score >= 0.99  # the surer score stays


def test_a_far_small_plate_moving_more_than_its_height_stays_one_track() -> None:
    # 16-20 px high, 23 px down between samples: no overlap, garbled far away, then read.
    tracker = VehicleTracker(SETTINGS)
    for k, plate in enumerate(["OA", "M", "I0709", "AD799KB", "AD799KB", "AD799KB"]):
        h = 16 + 2 * k
        x, y = 660 - 12 * k, 290 + 23 * k
        tracker.update(
            0.8 + 0.2 * k, [fake_reading(plate, (x, y, x + 4 * h, y + h), 0.3 if k < 3 else 0.98)], FRAME
        )
    (event,) = tracker.flush()
    assert event.plate == "AD799KB" and event.frames_read == 6 and event.direction == "approaching"
