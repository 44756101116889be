"""Recording photos for review after the answer has gone out, from a bounded queue.

    recorder = ReviewRecorder(review_store_or_none, max_queued=32, repeat_window_s=300)
    recorder.submit(photo, readings, camera_id="gate-1", models=(detector_tag, ocr_tag))  # never blocks
    recorder.close()  # at shutdown: what is queued is written first

Writing a flagged photo (JPEG-encoding it and its crops, one transaction) took 4.1 -> 5.5
images/s off the reader when it ran before each answer (issue 20). Here one thread writes
while requests go on. A photo identical to one recorded from the same camera within
`repeat_window_s` (same file bytes: a parked car seen again and again) is not recorded twice.
A full queue drops the photo (logged, counted in modelport_review_record_failures_total):
a read never waits for or fails because of recording.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.plate_reader.image_decoding import Photo
from services.plate_reader.review_api import RECORD_FAILURES, refresh_gauges
from services.plate_reader.review_store import ReviewStore
from services.plate_reader.types import PlateReading

logger = logging.getLogger("bentoml.modelport.reviews")


@dataclass(frozen=True)
class _Job:
    photo: Photo
    readings: tuple[PlateReading, ...]
    camera_id: str | None
    models: tuple[str, str]


class ReviewRecorder:
    def __init__(
        self,
        store: Callable[[], ReviewStore | None],
        *,
        max_queued: int,
        repeat_window_s: float,
        store_images: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store  # called in the writer thread: None when recording is off or down
        self.store_images = store_images  # off (MODELPORT_PLATE_STORE_IMAGES): text only
        self.repeat_window_s = repeat_window_s
        self.clock = clock
        self._queue: queue.Queue[_Job | None] = queue.Queue(max_queued)
        self._seen: collections.OrderedDict[tuple[str, str | None], float] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._write, name="review-recorder", daemon=True)
        self._thread.start()

    def submit(
        self,
        photo: Photo,
        readings: Sequence[PlateReading],
        *,
        camera_id: str | None,
        models: tuple[str, str],
    ) -> bool:
        """Queue `photo` if any of its readings needs a look (or it is drawn for audit);
        whether it was queued. Never blocks, never raises."""
        try:
            store = self.store()
            chosen = store.to_record(readings) if store is not None else []
            if not chosen or self._closed or self._seen_recently(photo.digest, camera_id):
                return False
            self._queue.put_nowait(_Job(photo, tuple(chosen), camera_id, models))
            return True
        except queue.Full:
            with self._lock:
                self._seen.pop((photo.digest, camera_id), None)
            RECORD_FAILURES.inc()
            logger.warning(
                "review queue full (%d photos): a photo to review was not recorded", self._queue.maxsize
            )
        except Exception:
            RECORD_FAILURES.inc()
            logger.exception("could not queue a photo for review")
        return False

    def close(self, timeout_s: float = 60.0) -> None:
        """Write what is queued, then stop the writer (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)  # after every job queued before it
        self._thread.join(timeout_s)

    def join(self) -> None:
        """Wait until everything queued so far is written (tests, benchmarks)."""
        self._queue.join()

    def _seen_recently(self, digest: str, camera_id: str | None) -> bool:
        now = self.clock()
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - self.repeat_window_s:
                self._seen.popitem(last=False)  # oldest first: insertion order is time order
            key = (digest, camera_id)
            if key in self._seen:
                return True
            self._seen[key] = now
            return False

    def _write(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                store = self.store()
                if store is not None:
                    pixels = job.photo.whole() if self.store_images else None
                    store.record(pixels, job.readings, camera_id=job.camera_id, models=job.models)
                    if self._queue.empty():  # once per burst: the count is a query
                        refresh_gauges(store)
            except Exception:  # the store is down or full: logged and counted, reading goes on
                RECORD_FAILURES.inc()
                logger.exception("could not record a photo for review")
            finally:
                del job  # the photo's pixels go back to the in-flight budget now
                self._queue.task_done()
