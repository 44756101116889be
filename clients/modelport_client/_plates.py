"""Plate-reader request building and typed results, shared by the sync and async clients."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union

ImageInput = Union[str, "os.PathLike[str]", bytes, IO[bytes]]
PLATE_READER_PATH = "/v1/plate-reader"
VIDEO_PATH = "/v1/plate-reader/video"


@dataclass(frozen=True)
class Box:
    xmin: int
    ymin: int
    xmax: int
    ymax: int


@dataclass(frozen=True)
class Candidate:
    plate: str
    score: float


@dataclass(frozen=True)
class Plate:
    plate: str
    score: float  # how sure the reading is, 0-1
    dscore: float  # how sure the detector is that this is a plate, 0-1
    box: Box
    candidates: tuple[Candidate, ...]
    review: bool  # the server says a human should check this one
    # Listed plates it matches (/v1/watchlists): {"list", "plate", "distance", "matched",
    # "note", "tags"} each, closest first; () from a server without watchlists
    watchlist: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plate:
        return cls(
            plate=data["plate"],
            score=data["score"],
            dscore=data["dscore"],
            box=Box(**data["box"]),
            candidates=tuple(Candidate(**c) for c in data["candidates"]),
            review=data["review"],
            watchlist=tuple(data.get("watchlist", ())),
        )


@dataclass(frozen=True)
class PlateReading:
    filename: str
    processing_time: float  # milliseconds, measured by the server
    results: tuple[Plate, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlateReading:
        return cls(
            filename=data["filename"],
            processing_time=data["processing_time"],
            results=tuple(Plate.from_json(p) for p in data["results"]),
        )


@dataclass(frozen=True)
class Vehicle:
    """One vehicle of a clip: its plate voted across the frames it was read in."""

    id: str
    plate: str
    score: float  # how sure the vote is, 0-1 (agreement across frames counts)
    review: bool  # the server says a human should check this one
    candidates: tuple[Candidate, ...]
    first_seen: float  # seconds into the clip
    last_seen: float
    frames_read: int
    box: Box  # in the best frame
    direction: str  # approaching, receding, left, right or stationary
    crop: str | None  # the best crop's path on the server (GET it), None when not kept
    watchlist: tuple[dict[str, Any], ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vehicle:
        return cls(
            id=data["id"],
            plate=data["plate"],
            score=data["score"],
            review=data["review"],
            candidates=tuple(Candidate(**c) for c in data["candidates"]),
            first_seen=data["first_seen"],
            last_seen=data["last_seen"],
            frames_read=data["frames_read"],
            box=Box(**data["box"]),
            direction=data["direction"],
            crop=data["crop"],
            watchlist=tuple(data["watchlist"]),
        )


@dataclass(frozen=True)
class VideoReading:
    filename: str
    processing_time: float  # milliseconds, measured by the server
    duration: float | None  # seconds, from the clip's header
    frames_read: int
    truncated: bool  # the file ended early: what decoded was read
    vehicles: tuple[Vehicle, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoReading:
        return cls(
            filename=data["filename"],
            processing_time=data["processing_time"],
            duration=data["duration"],
            frames_read=data["frames_read"],
            truncated=data["truncated"],
            vehicles=tuple(Vehicle.from_json(v) for v in data["vehicles"]),
        )


def _file_tuple(image: ImageInput, index: int) -> tuple[str, bytes]:
    if isinstance(image, bytes):
        return f"image-{index}.jpg", image
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return path.name, path.read_bytes()
    return Path(getattr(image, "name", f"image-{index}")).name, image.read()


def build_request(
    images: Sequence[ImageInput], regions: Sequence[str] | None, min_score: float | None
) -> dict[str, Any]:
    """httpx keyword arguments for a multipart plate-reader request."""
    files = [("upload", _file_tuple(image, i)) for i, image in enumerate(images)]
    data: dict[str, Any] = {}
    if regions:
        data["regions"] = list(regions)
    if min_score is not None:
        data["min_score"] = str(min_score)
    return {"files": files, "data": data}


def build_video_request(video: ImageInput, camera_id: str | None) -> dict[str, Any]:
    """httpx keyword arguments for a multipart video request."""
    name, data = _file_tuple(video, 0)
    return {
        "files": [("upload", (name if name != "image-0.jpg" else "video.mp4", data))],
        "data": {"camera_id": camera_id} if camera_id else {},
    }


def parse_readings(body: Any) -> list[PlateReading]:
    items = body if isinstance(body, list) else [body]
    return [PlateReading.from_json(item) for item in items]
