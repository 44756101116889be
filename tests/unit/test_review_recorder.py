"""Recording for review after the answer: submit never waits, close() writes what is queued,
the same photo from the same camera is recorded once in the window, a full queue drops."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.core.database import database_engine
from services.plate_reader.image_decoding import Photo, decode_photos
from services.plate_reader.review_recorder import ReviewRecorder
from services.plate_reader.review_store import ReviewStore
from services.plate_reader.settings import Settings
from services.plate_reader.types import BoundingBox, Candidate, PlateReading

MODELS = ("plate-detector:test", "plate-ocr:test")
BOX = BoundingBox(10, 10, 90, 40)
FLAGGED = [PlateReading("KRW301", 0.6, 0.9, BOX, (Candidate("KRW301", 0.6, None, 0.6),), review=True)]
SURE = [PlateReading("AB12CDE", 0.99, 0.9, BOX, (Candidate("AB12CDE", 0.99, "uk", 0.99),), review=False)]


def photo(seed: int) -> Photo:
    pixels = np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    [decoded] = decode_photos([out.getvalue()], Settings(detector_model="unused", ocr_model="unused"))
    return decoded


class GatedStore(ReviewStore):
    """A fake: the real SQLite store, but each record() waits until the test opens the gate."""

    gate: threading.Event
    entered: threading.Event

    def record(self, *args, **kwargs):
        self.entered.set()
        self.gate.wait(10)
        return super().record(*args, **kwargs)


@pytest.fixture
def store(tmp_path: Path) -> GatedStore:
    store = GatedStore(
        database_engine(f"sqlite:///{tmp_path / 'reviews.sqlite3'}"), tmp_path / "images", audit_share=0.0
    )
    store.gate, store.entered = threading.Event(), threading.Event()
    return store


def count(store: ReviewStore, camera_id: str | None = None) -> int:
    return len(store.list(camera_id=camera_id, limit=1000)[0])


def test_submit_does_not_wait_for_the_write_and_close_writes_what_is_queued(store: GatedStore) -> None:
    recorder = ReviewRecorder(lambda: store, max_queued=8, repeat_window_s=300)
    started = time.perf_counter()
    for seed in range(5):
        assert recorder.submit(photo(seed), FLAGGED, camera_id="gate-1", models=MODELS)
    assert not recorder.submit(photo(9), SURE, camera_id="gate-1", models=MODELS)  # nothing to look at
    assert time.perf_counter() - started < 5  # the store is shut: waiting on it would take 10 s a photo
    assert count(store) == 0
    store.gate.set()
    recorder.close()  # what a SIGTERM'd server runs after its last answer
    assert count(store, "gate-1") == 5
    [item] = store.list(camera_id="gate-1", limit=1)[0]
    assert store.image(item, "photo").exists() and store.image(item, "crop").exists()


def test_the_same_photo_from_the_same_camera_is_recorded_once_in_the_window(store: GatedStore) -> None:
    store.gate.set()
    now = [0.0]
    recorder = ReviewRecorder(lambda: store, max_queued=8, repeat_window_s=300, clock=lambda: now[0])
    parked = photo(1)
    assert recorder.submit(parked, FLAGGED, camera_id="gate-1", models=MODELS)
    assert not recorder.submit(photo(1), FLAGGED, camera_id="gate-1", models=MODELS)  # same bytes
    assert recorder.submit(parked, FLAGGED, camera_id="gate-2", models=MODELS)  # another camera
    assert recorder.submit(photo(2), FLAGGED, camera_id="gate-1", models=MODELS)  # another photo
    now[0] = 301.0
    assert recorder.submit(parked, FLAGGED, camera_id="gate-1", models=MODELS)  # the window has passed
    recorder.close()
    assert (count(store, "gate-1"), count(store, "gate-2")) == (3, 1)


def test_a_full_queue_drops_the_photo_and_the_read_goes_on(store: GatedStore) -> None:
    recorder = ReviewRecorder(lambda: store, max_queued=2, repeat_window_s=300)
    assert recorder.submit(photo(0), FLAGGED, camera_id="busy", models=MODELS)
    assert store.entered.wait(10)  # being written, held at the gate
    results = [recorder.submit(photo(seed), FLAGGED, camera_id="busy", models=MODELS) for seed in range(1, 5)]
    assert results == [True, True, False, False]  # two wait in the queue; the rest are dropped
    store.gate.set()
    recorder.join()
    assert count(store, "busy") == 3
    # A dropped photo is not marked as seen: sent again, it is recorded.
    assert recorder.submit(photo(4), FLAGGED, camera_id="busy", models=MODELS)
    recorder.close()
    assert count(store, "busy") == 4
    assert not recorder.submit(photo(5), FLAGGED, camera_id="busy", models=MODELS)  # closed


def test_a_store_that_fails_is_logged_and_counted_not_raised(tmp_path: Path) -> None:
    def broken() -> ReviewStore:
        raise RuntimeError("database unreachable")

    recorder = ReviewRecorder(broken, max_queued=2, repeat_window_s=300)
    assert recorder.submit(photo(1), FLAGGED, camera_id=None, models=MODELS) is False
    recorder.close()


def test_store_images_off_records_text_only(store: GatedStore) -> None:
    store.gate.set()
    recorder = ReviewRecorder(lambda: store, max_queued=8, repeat_window_s=300, store_images=False)
    assert recorder.submit(photo(3), FLAGGED, camera_id="gate-private", models=MODELS)
    recorder.close()
    [item] = store.list(camera_id="gate-private", limit=1)[0]
    assert (item.plate, item.score, item.photo_path, item.crop_path) == ("KRW301", 0.6, "", "")
    assert not store.images_dir.exists() or not any(store.images_dir.rglob("*.jpg"))
