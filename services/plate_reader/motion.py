"""Which camera frames are worth reading: a frame is read only where something moved.

    gate = MotionGate()
    if gate.moving(small_grey, t_seconds):   # a ~160-pixel-wide grey copy of the frame
        read(frame)

The frame is compared with a running average of the past ones (the background), on a grey
copy about 160 pixels wide (FFmpeg scales it while converting, ~0.1 ms): a pixel moved when it
differs by more than PIXEL_DELTA grey levels, and the frame moved when more than
MOVED_FRACTION of its pixels did. A car's plate at a gate spans ~150 of the 14,400 pixels of
160x90; sensor noise and H.264 blocking stay under PIXEL_DELTA. A slow change (the sun, dusk)
is absorbed into the background at BACKGROUND_RATE per sample instead of reading as motion;
the rate is high enough that a car that left stops reading as motion ~1.5 s later (at 5
samples/s: its ghost fades as 0.75^n, under PIXEL_DELTA after ~7 samples; at 0.05 the ghost
of a plate crossing the test clip kept every sample "moving" for 8 s after it left).
After motion, frames are still read for HOLD_S, so a car that stops at the barrier is read
stopped too. The first frame after (re)connecting is always read: a car may already be there.
"""

from __future__ import annotations

import numpy as np

WIDTH = 160  # the grey copy's width; its height keeps the frame's aspect
PIXEL_DELTA = 18.0  # grey levels (of 255) a pixel must differ from the background by
MOVED_FRACTION = 0.002  # of the copy's pixels: 29 of 160x90
BACKGROUND_RATE = 0.25  # a sample's weight in the running background
HOLD_S = 1.0


class MotionGate:
    def __init__(
        self,
        *,
        pixel_delta: float = PIXEL_DELTA,
        moved_fraction: float = MOVED_FRACTION,
        background_rate: float = BACKGROUND_RATE,
        hold_s: float = HOLD_S,
    ) -> None:
        self.pixel_delta = pixel_delta
        self.moved_fraction = moved_fraction
        self.background_rate = background_rate
        self.hold_s = hold_s
        self._background: np.ndarray | None = None
        self._last_motion: float | None = None

    def reset(self) -> None:
        """A new connection: the next frame is read, and becomes the background."""
        self._background = None
        self._last_motion = None

    def moving(self, grey: np.ndarray, t: float) -> bool:
        """Whether to read the frame whose grey copy is `grey` (uint8, 2-D), seen at `t` s."""
        sample = grey.astype(np.float32)
        if self._background is None or self._background.shape != sample.shape:
            self._background = sample
            self._last_motion = t
            return True
        moved = np.count_nonzero(np.abs(sample - self._background) > self.pixel_delta)
        # In place: no new array per sample (a camera samples for hours).
        self._background *= 1.0 - self.background_rate
        self._background += self.background_rate * sample
        if moved > self.moved_fraction * sample.size:
            self._last_motion = t
            return True
        return self._last_motion is not None and t - self._last_motion <= self.hold_s
