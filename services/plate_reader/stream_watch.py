"""One camera watched: sampled moving frames read, readings tracked, one event per vehicle.

    watch = CameraWatch("gate-1", source, VehicleTracker(settings), on_event=print)
    watch.run(recognizer_read, until=lambda: stopped)         # the CLI: reads in this thread
    await watch.run_async(read_async)                         # the server: through its MicroBatcher

A moving sample is read (the same PlateRecognizer the photo routes use) and its readings go to
the tracker; a motionless one is not read, but still tells the tracker the time, so a car that
left ends its track (after track_max_gap_s) and its event comes out while the camera is quiet.
Events are JSON (VehicleEvent.to_json, plus `camera_id` and a UTC `timestamp` of its last
sighting); the last RECENT_EVENTS are kept for the served GET .../streams/{camera_id}/events.

The tracker runs on a *read clock*: between two samples it advances by the time between them,
but by at most MAX_STEP_SAMPLES sample intervals. A reader that falls behind (reads slower
than the samples come, so samples are dropped) would otherwise end a car's track between two
of its slow reads: with 8 engineers' jobs on 2 cores a read took 1.4 s, over the 1 s
track_max_gap_s, and one car became several events of a frame or two each. Events' first_seen
and last_seen are mapped back to the stream's own seconds.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from services.plate_reader import webhooks
from services.plate_reader.stream_source import Sample, StreamSource
from services.plate_reader.types import PlateReading

logger = logging.getLogger("bentoml.modelport.plate_reader.streams")
RECENT_EVENTS = 100  # per camera, for GET .../events; older ones are dropped (memory over hours)
NO_FRAME = np.zeros((0, 0, 3), np.uint8)  # a motionless sample's frame: no readings crop it
MAX_STEP_SAMPLES = 2
SEEN_TIMES = 10_000  # read-clock -> stream seconds of recent readings (~30 min of a busy camera)


class VehicleEventLike(Protocol):
    def to_json(self, crop_url: str | None = None) -> dict[str, Any]: ...


class Tracker(Protocol):
    """vehicle_tracks.VehicleTracker's interface (a fake stands in for it in unit tests)."""

    def update(
        self, t_seconds: float, readings: list[PlateReading], frame: np.ndarray
    ) -> list[Any]: ...  # VehicleEvents of the tracks that ended

    def flush(self) -> list[Any]: ...


def publish_vehicle(body: dict[str, Any], event: Any) -> None:
    """An event to the webhook targets that want `vehicle` events of this camera (the outbox
    keeps it until delivered; webhooks.py). Never blocks: the outbox's writer thread writes it."""
    webhooks.publish("vehicle", body["camera_id"], [body], None, body["timestamp"])


class CameraWatch:
    def __init__(
        self,
        camera_id: str,
        source: StreamSource,
        tracker: Tracker,
        *,
        finish: Callable[[Any], Any] | None = None,
        crop_path: str | None = None,
        on_event: Callable[[dict[str, Any], Any], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.camera_id = camera_id
        self.source = source
        self.tracker = tracker
        # The server's: watchlist matches attached, the best crop kept (served at crop_path + id),
        # a flagged vehicle queued for review (video_reading.VideoReader.finish, as for clips).
        self.finish_event = finish
        self.crop_path = crop_path
        self.on_event = on_event  # (event JSON, the VehicleEvent): print it, publish it, ...
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_EVENTS)
        self.events = 0
        self.reads = 0
        self.read_failures = 0
        self._started_wall = clock() - source.now()  # wall-clock time of the source's t = 0
        self._max_step = MAX_STEP_SAMPLES * source.interval
        self._clock: float | None = None  # the tracker's read clock
        self._last_t = 0.0
        self._seen: collections.OrderedDict[float, float] = collections.OrderedDict()

    def handle(self, sample: Sample, readings: list[PlateReading]) -> list[dict[str, Any]]:
        """Feed one sample's readings to the tracker; the events that ended, as JSON."""
        if self._clock is None:
            self._clock = sample.t
        else:
            self._clock += min(max(0.0, sample.t - self._last_t), self._max_step)
        self._last_t = sample.t
        if readings:  # only readings' times become a track's first/last seen
            self._seen[self._clock] = sample.t
            if len(self._seen) > SEEN_TIMES:
                self._seen.popitem(last=False)
        ended = self.tracker.update(
            self._clock, readings, sample.frame if sample.frame is not None else NO_FRAME
        )
        return [self._emit(event) for event in ended]

    def _stream_time(self, clock: float) -> float:
        return self._seen.get(clock, clock + self._last_t - (self._clock or 0.0))

    def finish(self) -> list[dict[str, Any]]:
        """The stream is over: the vehicles still in view, as events."""
        return [self._emit(event) for event in self.tracker.flush()]

    def _emit(self, event: Any) -> dict[str, Any]:
        if self.finish_event is not None:
            event = self.finish_event(event)
        kept = self.crop_path is not None and getattr(event, "best_crop", None) is not None
        body = event.to_json(f"{self.crop_path}{event.id}" if kept else None)
        first_seen, last_seen = self._stream_time(event.first_seen), self._stream_time(event.last_seen)
        body |= {
            "first_seen": round(first_seen, 3),
            "last_seen": round(last_seen, 3),
            "camera_id": self.camera_id,
            "timestamp": datetime.fromtimestamp(self._started_wall + last_seen, UTC).isoformat(),
        }
        self.events += 1
        self.recent.append(body)
        if self.on_event is not None:
            try:
                self.on_event(body, event)
            except Exception:  # a failing sink (a full outbox, a closed pipe) loses no other event
                logger.exception("camera %s: passing an event on failed", self.camera_id)
        return body

    def run(self, read: Callable[[np.ndarray], list[PlateReading]], until: Callable[[], bool]) -> None:
        """Watch in this thread until `until()` or the source is refused; then the open tracks."""
        while not until() and self.source.running:
            sample = self.source.take(timeout=0.5)
            if sample is not None:
                self.handle(sample, self._read_sync(read, sample))
        self.finish()

    def _read_sync(
        self, read: Callable[[np.ndarray], list[PlateReading]], sample: Sample
    ) -> list[PlateReading]:
        if sample.frame is None:
            return []
        self.reads += 1
        try:
            return read(sample.frame)
        except Exception:  # one frame the pipeline fails on is skipped, the camera goes on
            self.read_failures += 1
            logger.exception("camera %s: reading a frame failed", self.camera_id)
            return []

    async def run_async(
        self, read: Callable[[np.ndarray], Awaitable[list[PlateReading]]], wake: asyncio.Event
    ) -> None:
        """Watch on the event loop (the source's thread sets `wake` on each sample) until cancelled."""
        try:
            while self.source.running:
                try:
                    await asyncio.wait_for(wake.wait(), 1.0)
                except TimeoutError:
                    continue
                wake.clear()
                sample = self.source.take(timeout=0)
                if sample is None:
                    continue
                readings: list[PlateReading] = []
                if sample.frame is not None:
                    self.reads += 1
                    try:
                        readings = await read(sample.frame)
                    except Exception:
                        self.read_failures += 1
                        logger.exception("camera %s: reading a frame failed", self.camera_id)
                self.handle(sample, readings)
        finally:
            self.finish()

    def status(self) -> dict[str, Any]:
        stats = self.source.stats
        return {
            "camera_id": self.camera_id,
            "url": self.source.shown,
            "state": stats.state,
            "width": stats.width,
            "height": stats.height,
            "frames_decoded": stats.frames_decoded,
            "samples": stats.samples,
            "samples_moving": stats.samples_moving,
            "frames_read": self.reads,
            "read_failures": self.read_failures,
            "dropped": stats.dropped,
            "reconnects": stats.reconnects,
            "keyframes_only": stats.keyframes_only,
            "keyframe_periods": stats.keyframe_periods,
            "last_error": stats.last_error,
            "events": self.events,
        }
