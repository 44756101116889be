"""A camera stream, read in its own thread: the latest sampled frame, and only when it moved.

    source = StreamSource("rtsp://cam.lan/live", fps=5, private_hosts=("cam.lan",))
    source.start()
    sample = source.take(timeout=1.0)   # Sample(t, frame (RGB, only if moving), moving) or None
    source.stop()

The thread decodes every frame (H.264 needs them all), and at `fps` samples one: a ~160-pixel
grey copy goes through motion.MotionGate, and only a moving sample is converted to a whole
RGB frame. The consumer gets the latest sample: one slot, overwritten when it falls behind
(`dropped` counts moving samples never read), so memory stays one frame however long it runs.
When the stream ends or fails, the thread reconnects after a backoff that doubles from
BACKOFF_MIN_S to BACKOFF_MAX_S, back to the minimum once a connection has lasted STABLE_S.
Every (re)connect checks the URL again by stream_url's rules; a refused one stops the source
with state "refused: ..." (the operator must change the setting; retrying cannot help).

`idle_keyframes` (MODELPORT_PLATE_CAMERA_IDLE_KEYFRAMES): after IDLE_AFTER_S without motion,
only keyframes are decoded (FFmpeg's skip_frame), and motion is looked for on them; the
first keyframe that moved turns every frame back on. Decoding an idle stream then costs ~3.7x
less CPU (40 s of a noisy 1080p stream: 0.68 s instead of 2.49), but a car is noticed up to one
keyframe interval (the camera's GOP, often 1-2 s) late, and one in view for less than that
can be missed: for gates and car parks, where cars slow down, not for fast roads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.plate_reader.motion import WIDTH, MotionGate
from services.plate_reader.stream_url import (
    Resolver,
    StreamRefused,
    check_stream_url,
    shown_url,
    system_resolver,
)

logger = logging.getLogger("bentoml.modelport.plate_reader.streams")
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 10.0  # a connection that lasted this long was not a flapping one: backoff starts over
OPEN_TIMEOUT_S = 10.0  # connect + the stream's first packets
READ_TIMEOUT_S = 10.0  # no packet for this long: the stream is dead, reconnect
IDLE_AFTER_S = 2.0  # idle_keyframes: no motion for this long, and only keyframes are decoded


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the source started
    frame: np.ndarray | None  # RGB uint8, only when `moving`
    moving: bool


@dataclass
class SourceStats:
    state: str = "starting"  # connecting, streaming, reconnecting in N s, refused: ..., stopped
    frames_decoded: int = 0
    samples: int = 0
    samples_moving: int = 0
    dropped: int = 0  # moving samples overwritten before the reader took them
    reconnects: int = 0
    keyframes_only: bool = False  # idle_keyframes: decoding keyframes only now
    keyframe_periods: int = 0  # idle_keyframes: times it went to keyframes only
    last_error: str | None = None
    width: int = 0
    height: int = 0


class StreamSource:
    def __init__(
        self,
        url: str,
        *,
        fps: float,
        private_hosts: tuple[str, ...] = (),
        on_sample: Callable[[], None] | None = None,
        gate: MotionGate | None = None,
        resolve: Resolver = system_resolver,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        idle_keyframes: bool = False,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"the sampling rate must be above 0 frames/s, not {fps}")
        self.url = url
        self.shown = shown_url(url)  # without user:password@
        self.interval = 1.0 / fps
        self.idle_keyframes = idle_keyframes
        self.private_hosts = private_hosts
        self.on_sample = on_sample  # called (in the source's thread) after each new sample
        self.gate = gate or MotionGate()
        self.resolve = resolve
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.stats = SourceStats()
        self._slot: Sample | None = None
        self._ready = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="camera-source", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = READ_TIMEOUT_S + 1) -> None:
        """Stop reading; a read blocked on a silent camera ends within READ_TIMEOUT_S."""
        self._stopping.set()
        with self._ready:
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.stats.state = "stopped" if not self.stats.state.startswith("refused") else self.stats.state

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def take(self, timeout: float) -> Sample | None:
        """The latest sample not yet taken, waiting up to `timeout` s for one; None if none."""
        with self._ready:
            if self._slot is None and not self._stopping.is_set():
                self._ready.wait(timeout)
            sample, self._slot = self._slot, None
        return sample

    def _publish(self, sample: Sample) -> None:
        with self._ready:
            if self._slot is not None and self._slot.moving:
                self.stats.dropped += 1
            self._slot = sample
            self._ready.notify_all()
        if self.on_sample is not None:
            self.on_sample()

    def _run(self) -> None:
        backoff = self.backoff_min_s
        while not self._stopping.is_set():
            self.stats.state = "connecting"
            started = time.monotonic()
            try:
                target = check_stream_url(self.url, self.private_hosts, resolve=self.resolve)
                self._read(target.open_url)
                self.stats.last_error = "the stream ended"
            except StreamRefused as exc:
                self.stats.state = f"refused: {exc}"
                self.stats.last_error = str(exc)
                logger.error("camera %s refused: %s", self.shown, exc)
                with self._ready:
                    self._ready.notify_all()
                return
            except Exception as exc:  # any failure of the stream: reconnect (logged, counted)
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if self._stopping.is_set():
                break
            if time.monotonic() - started >= STABLE_S:
                backoff = self.backoff_min_s
            self.stats.state = f"reconnecting in {backoff:g} s"
            self.stats.reconnects += 1
            logger.warning("camera %s: %s; reconnecting in %g s", self.shown, self.stats.last_error, backoff)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    def _read(self, open_url: str) -> None:
        import av  # PyAV: FFmpeg's demuxers and decoders, with timeouts

        options = {"rtsp_transport": "tcp"}  # UDP loses packets under load: smeared frames
        with av.open(open_url, options=options, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S)) as container:
            stream = container.streams.video[0]
            # Frame threads decode packets ahead: those skipped while idle are then missing, and
            # the frames after a keyframe that moved came out wrong until the next keyframe (17 of
            # 20 on the test clip). Slice threads decode each frame whole: no artefacts.
            stream.thread_type = "SLICE" if self.idle_keyframes else "AUTO"
            self.gate.reset()
            self.stats.state = "streaming"
            next_sample = last_moving = self.now()
            keyframes_only = False
            for frame in container.decode(stream):
                if self._stopping.is_set():
                    return
                self.stats.frames_decoded += 1
                t = self.now()
                if t < next_sample:
                    continue
                # At most one sample per interval; after a stall, the next frame, not a burst.
                next_sample = max(next_sample + self.interval, t)
                self.stats.width, self.stats.height = frame.width, frame.height
                height = max(2, round(WIDTH * frame.height / max(1, frame.width)))
                grey = frame.reformat(width=WIDTH, height=height, format="gray").to_ndarray()
                moving = self.gate.moving(grey, t)
                last_moving = t if moving else last_moving
                idle = not moving and t - last_moving >= IDLE_AFTER_S
                if self.idle_keyframes and idle != keyframes_only:
                    # Still for IDLE_AFTER_S: decode keyframes only. Motion on a keyframe: every
                    # frame again from the next one (they reference this keyframe: no artefacts).
                    keyframes_only = idle
                    stream.codec_context.skip_frame = "NONKEY" if idle else "DEFAULT"
                    self.stats.keyframes_only = idle
                    self.stats.keyframe_periods += idle
                self.stats.samples += 1
                self.stats.samples_moving += moving
                self._publish(Sample(t, frame.to_ndarray(format="rgb24") if moving else None, moving))
