"""Plate readings across frames -> one event per vehicle. Pure: no I/O, no clock, bounded memory.

    tracker = VehicleTracker(settings)                     # services.plate_reader.settings.Settings
    for t, frame in sampled_frames:                        # t: seconds, increasing; frame: RGB uint8
        readings = recognizer.read([frame])[0]             # PlateReadings of this frame
        for event in tracker.update(t, readings, frame):   # tracks that have just ended
            send(event.to_json())
    for event in tracker.flush():                          # end of clip / stream: the rest
        send(event.to_json())

Used by POST /v1/plate-reader/video (video_reading.py) and by live streams. Frames may come at
any spacing (a stream skips motionless ones): motion is per second, not per frame.

Association (one frame's readings to the open tracks): each pair scores box overlap (IoU of the
reading's box with the track's box moved on by its velocity) plus text similarity (difflib's
ratio of the two plates); a pair needs some overlap, or similar text near the predicted box.
Pairs are chosen by the Hungarian method (scipy's linear_sum_assignment). supervision's
ByteTrack was the candidate library; it is not used because (1) its association is boxes only
(IoU after a Kalman step) and text is what tells two crossing cars' plates apart, (2) its Kalman
model steps per frame, not per second, while frames here come irregularly, and (3) it would
bring matplotlib, requests and pydeprecate into the serving image for ~60 lines of matching.

A track unmatched for `track_max_gap_s` has ended: its readings are voted (plate_voting.py)
into a VehicleEvent. Memory: at most `track_max_live` open tracks (beyond it the stalest ends
early), `track_max_readings` readings each (the surest kept) and one best crop each.
"""

from __future__ import annotations

import difflib
import io
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from services.plate_reader.plate_text import load_formats
from services.plate_reader.plate_voting import vote
from services.plate_reader.settings import Settings
from services.plate_reader.types import BoundingBox, Candidate, PlateReading

MIN_IOU = 0.05  # boxes overlapping this much (IoU) may be one plate whatever their text
MIN_TEXT_SIMILARITY = 0.6  # difflib ratio: 4 of 7 characters in common, in order
# "Near" the predicted box: centres within NEAR plate widths, plus REACH_PER_S widths a second
# since the track was last seen (its speed is unknown until it is seen twice). A small plate far
# away moves more than its own height between samples: by IoU alone, the dev clips' approaching
# cars broke into one track per frame until they came close.
NEAR = 3.0
REACH_PER_S = 10.0
TEXT_WEIGHT = 0.5  # text similarity's share of a pair's affinity beside IoU
NEAR_WEIGHT = 0.5  # nearness's share (1 at the predicted centre, 0 at the edge of "near")
# Direction of travel from the first and last box: the plate's height grew (approaching) or
# shrank (receding) by this factor, else its centre moved this share of the frame's width.
SIZE_CHANGE = 1.25
SIDEWAYS = 0.05
# A plate touching the frame's edge may be cut by it ("FX06" of FXO6S32 entering the frame, read
# at 0.988 on the dev clips): its readings count at this share of their score, in the vote too.
EDGE_FACTOR = 0.5
EDGE_PX = 2
SAME_PLATE = 0.7  # two boxes of one frame with the same text, the smaller this much inside: one plate
CROP_CONTEXT = (1.0, 2.0)  # the best crop: the plate with this many widths/heights around it
CROP_JPEG_QUALITY = 85


@dataclass(frozen=True)
class VehicleEvent:
    """One vehicle: the plate voted over its frames, when and where it was seen."""

    id: str  # unique; names the best crop (GET /v1/plate-reader/video/crops/{id})
    plate: str
    score: float  # the photos' measure (0-1), agreement across frames counting as evidence
    review: bool  # score below the review threshold: a human should check it
    candidates: tuple[Candidate, ...]  # the voted plate first, then other plates frames read
    first_seen: float  # seconds (into the clip, or the stream's clock)
    last_seen: float
    frames_read: int  # frames in which the plate was read
    agreeing: int  # of them, frames that read exactly `plate`
    box: BoundingBox  # the best frame's box, in that frame's pixels
    direction: str  # approaching, receding, left, right or stationary (from box size and motion)
    best_crop: bytes | None = field(default=None, repr=False)  # JPEG around the best reading
    crop_box: BoundingBox | None = None  # the plate's box inside best_crop
    watchlist: tuple[dict[str, Any], ...] = ()  # matches, attached by the caller (watchlist_match)

    def to_json(self, crop_url: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "plate": self.plate,
            "score": self.score,
            "review": self.review,
            "candidates": [{"plate": c.plate, "score": c.confidence} for c in self.candidates],
            "first_seen": round(self.first_seen, 3),
            "last_seen": round(self.last_seen, 3),
            "frames_read": self.frames_read,
            "agreeing": self.agreeing,
            "box": {
                "xmin": self.box.xmin,
                "ymin": self.box.ymin,
                "xmax": self.box.xmax,
                "ymax": self.box.ymax,
            },
            "direction": self.direction,
            "crop": crop_url if self.best_crop is not None else None,
            "watchlist": list(self.watchlist),
        }


@dataclass
class _Track:
    first_t: float
    first_box: BoundingBox
    last_t: float
    last_box: BoundingBox
    frame_width: int
    readings: list[PlateReading]
    best: PlateReading
    crop: tuple[np.ndarray, BoundingBox]
    frames_read: int = 1
    velocity: tuple[float, float] = (0.0, 0.0)  # box centre, pixels per second

    def predicted(self, t: float) -> BoundingBox:
        dt = t - self.last_t
        dx, dy = round(self.velocity[0] * dt), round(self.velocity[1] * dt)
        b = self.last_box
        return BoundingBox(b.xmin + dx, b.ymin + dy, b.xmax + dx, b.ymax + dy)

    def text(self) -> str:
        return self.best.plate


class VehicleTracker:
    def __init__(self, settings: Settings) -> None:
        self.max_gap_s = settings.track_max_gap_s
        self.max_live = settings.track_max_live
        self.max_readings = settings.track_max_readings
        self.review_threshold = settings.review_threshold
        self.keep_crops = settings.store_images
        self._tracks: list[_Track] = []

    def update(self, t_seconds: float, readings: list[PlateReading], frame: np.ndarray) -> list[VehicleEvent]:
        """Add one frame's readings (`frame`: the RGB image they were read from); the events of
        tracks that ended by `t_seconds` (unseen for track_max_gap_s)."""
        ended = [tr for tr in self._tracks if t_seconds - tr.last_t > self.max_gap_s]
        self._tracks = [tr for tr in self._tracks if tr not in ended]
        readings = [_edge_discounted(r, frame.shape[1], frame.shape[0]) for r in _distinct(readings)]
        matched = self._associate(t_seconds, readings)
        for i, reading in enumerate(readings):
            track = matched.get(i)
            if track is None:
                self._tracks.append(self._start(t_seconds, reading, frame))
            else:
                self._extend(track, t_seconds, reading, frame)
        while len(self._tracks) > self.max_live:  # the one seen longest ago ends early
            stalest = min(self._tracks, key=lambda tr: tr.last_t)
            self._tracks.remove(stalest)
            ended.append(stalest)
        return [e for e in (self._event(tr) for tr in ended) if e is not None]

    def flush(self) -> list[VehicleEvent]:
        """End every open track (end of the clip or stream): their events."""
        ended, self._tracks = self._tracks, []
        return [e for e in (self._event(tr) for tr in ended) if e is not None]

    @property
    def open_tracks(self) -> int:
        return len(self._tracks)

    def _associate(self, t: float, readings: list[PlateReading]) -> dict[int, _Track]:
        if not readings or not self._tracks:
            return {}
        # here, not at import: scipy.optimize costs a photo-only worker ~23 MB
        from scipy.optimize import linear_sum_assignment

        affinity = np.zeros((len(readings), len(self._tracks)))
        for j, track in enumerate(self._tracks):
            predicted = track.predicted(t)
            for i, reading in enumerate(readings):
                overlap = _iou(predicted, reading.box)
                similar = _similarity(reading.plate, track.text())
                reach = max(predicted.width, reading.box.width, 1) * (NEAR + REACH_PER_S * (t - track.last_t))
                near = max(0.0, 1 - _centre_distance(predicted, reading.box) / reach)
                # Text that differs rules a pair out only when both texts are long enough to judge.
                differs = similar < MIN_TEXT_SIMILARITY and min(len(reading.plate), len(track.text())) >= 4
                if overlap >= MIN_IOU or (near > 0 and not differs):
                    affinity[i, j] = (
                        overlap + TEXT_WEIGHT * similar + NEAR_WEIGHT * near + 1e-3
                    )  # > 0: allowed
        rows, cols = linear_sum_assignment(-affinity)
        return {int(i): self._tracks[int(j)] for i, j in zip(rows, cols) if affinity[i, j] > 0}

    def _start(self, t: float, reading: PlateReading, frame: np.ndarray) -> _Track:
        return _Track(
            t, reading.box, t, reading.box, frame.shape[1], [reading], reading, self._crop(frame, reading)
        )

    def _extend(self, track: _Track, t: float, reading: PlateReading, frame: np.ndarray) -> None:
        dt = t - track.last_t
        if dt > 0:
            (x0, y0), (x1, y1) = _centre(track.last_box), _centre(reading.box)
            track.velocity = ((x1 - x0) / dt, (y1 - y0) / dt)
        track.last_t, track.last_box = t, reading.box
        track.frames_read += 1
        track.readings.append(reading)
        if len(track.readings) > self.max_readings:  # keep the surest for the vote
            track.readings.remove(min(track.readings, key=lambda r: r.score))
        if reading.score > track.best.score or not track.best.plate:
            track.best, track.crop = reading, self._crop(frame, reading)

    def _crop(self, frame: np.ndarray, reading: PlateReading) -> tuple[np.ndarray, BoundingBox]:
        """The plate with context around it (a copy: the frame is freed), and its box in it."""
        b = reading.box
        if not self.keep_crops:
            return np.zeros((0, 0, 3), np.uint8), b
        mx, my = round(b.width * CROP_CONTEXT[0]), round(b.height * CROP_CONTEXT[1])
        h, w = frame.shape[:2]
        x0, y0 = max(0, b.xmin - mx), max(0, b.ymin - my)
        crop = frame[y0 : min(h, b.ymax + my), x0 : min(w, b.xmax + mx)].copy()
        return crop, BoundingBox(b.xmin - x0, b.ymin - y0, b.xmax - x0, b.ymax - y0)

    def _event(self, track: _Track) -> VehicleEvent | None:
        voted = vote(track.readings, review_threshold=self.review_threshold)
        # Boxes no frame read a plate's worth of characters in: nothing to report. One character
        # is no plate of any format: PP-OCRv6 read a "1" in a box on the empty test street
        # (score 0.41) where PP-OCRv4 read nothing, and it became a vehicle.
        if len(voted.plate) < load_formats().shortest:
            return None
        pixels, crop_box = track.crop
        crop = _jpeg(pixels) if pixels.size else None
        return VehicleEvent(
            id=uuid.uuid4().hex,
            plate=voted.plate,
            score=voted.score,
            review=voted.review,
            candidates=voted.candidates,
            first_seen=track.first_t,
            last_seen=track.last_t,
            frames_read=track.frames_read,
            agreeing=voted.agreeing,
            box=track.best.box,
            direction=_direction(track),
            best_crop=crop,
            crop_box=crop_box if crop is not None else None,
        )


def _distinct(readings: list[PlateReading]) -> list[PlateReading]:
    """One reading per plate: the detector sometimes boxes a plate twice (the plate, and it with
    some of the car around it; seen on the dev clips), which would open two tracks for one car.
    The surer score stays, on the smaller box: the event's `box` is the plate's, not the car's
    (the wider box read 0.9946 against the plate's 0.9928 on a seed-3 clip, and the event's box,
    twice the plate's width, matched no vehicle)."""
    kept: list[PlateReading] = []
    for r in sorted(readings, key=lambda r: -r.score):
        same = next((k for k in kept if r.plate == k.plate and _contained(r.box, k.box) >= SAME_PLATE), None)
        if same is None:
            kept.append(r)
        elif _area(r.box) < _area(same.box):
            kept[kept.index(same)] = replace(same, box=r.box)
    return kept


def _edge_discounted(reading: PlateReading, width: int, height: int) -> PlateReading:
    b = reading.box
    if b.xmin > EDGE_PX and b.ymin > EDGE_PX and b.xmax < width - EDGE_PX and b.ymax < height - EDGE_PX:
        return reading
    return replace(reading, score=round(reading.score * EDGE_FACTOR, 4), review=True)


def _direction(track: _Track) -> str:
    grew = track.last_box.height / max(track.first_box.height, 1)
    if grew >= SIZE_CHANGE:
        return "approaching"
    if grew <= 1 / SIZE_CHANGE:
        return "receding"
    moved = (_centre(track.last_box)[0] - _centre(track.first_box)[0]) / max(track.frame_width, 1)
    if abs(moved) >= SIDEWAYS:
        return "right" if moved > 0 else "left"
    return "stationary"


def _jpeg(crop: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(crop).save(out, format="JPEG", quality=CROP_JPEG_QUALITY)
    return out.getvalue()


def _centre(b: BoundingBox) -> tuple[float, float]:
    return (b.xmin + b.xmax) / 2, (b.ymin + b.ymax) / 2


def _centre_distance(a: BoundingBox, b: BoundingBox) -> float:
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    return float(np.hypot(ax - bx, ay - by))


def _area(b: BoundingBox) -> int:
    return b.width * b.height


def _contained(a: BoundingBox, b: BoundingBox) -> float:
    """The share of the smaller box that lies inside the other."""
    ix = max(0, min(a.xmax, b.xmax) - max(a.xmin, b.xmin))
    iy = max(0, min(a.ymax, b.ymax) - max(a.ymin, b.ymin))
    smaller = min(_area(a), _area(b))
    return ix * iy / smaller if smaller > 0 else 0.0


def _iou(a: BoundingBox, b: BoundingBox) -> float:
    ix = max(0, min(a.xmax, b.xmax) - max(a.xmin, b.xmin))
    iy = max(0, min(a.ymax, b.ymax) - max(a.ymin, b.ymin))
    inter = ix * iy
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio() if a and b else 0.0
