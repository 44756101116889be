"""POST /v1/plate-reader/video: a clip in, one event per vehicle out. No routes here; the
service calls `VideoReader.read(request)`.

    clip (multipart `upload`) -> video_decoding.open_clip (header: size, duration, pixels)
      -> frames sampled at video_sample_fps, decoded in one thread off the event loop, 4 at a time
      -> the photos' MicroBatcher / PlateRecognizer.read_batch (the same batches as photos)
      -> vehicle_tracks.VehicleTracker (plates across frames, voted per vehicle)
      -> each event: watchlist matches, its best crop kept (event_crops), a flagged one queued
         for review with its crop, a `vehicle` webhook.

The next frames are decoded while the current ones are read, so decoding and reading overlap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import Request
from PIL import Image
from starlette.datastructures import UploadFile

from services.core.api_errors import ApiError
from services.plate_reader import watchlists, webhooks
from services.plate_reader.batching import MicroBatcher
from services.plate_reader.event_crops import EventCrops
from services.plate_reader.image_decoding import Photo
from services.plate_reader.inputs import _camera_id, _unit_number
from services.plate_reader.plate_text import known_regions
from services.plate_reader.review_recorder import ReviewRecorder
from services.plate_reader.settings import Settings
from services.plate_reader.types import PlateReading, ReadRequest
from services.plate_reader.vehicle_tracks import VehicleEvent, VehicleTracker
from services.plate_reader.video_decoding import Clip, open_clip

# One clip decodes at a time (its own thread, so photos' decodes never wait behind a clip).
VIDEO_DECODER = ThreadPoolExecutor(1, thread_name_prefix="video-decode")
# Frames decoded ahead and read together: 4 x 1080p = 25 MB held; fills two batches of 2.
CHUNK = 4
CROPS_PATH = "/v1/plate-reader/video/crops/"
# Clips read at once; the others wait their turn (their bodies are already capped by body_limit).
# Each holds two chunks of frames, ~50 MB at 1080p: 16 clips in flight would hold 800 MB.
CLIPS_AT_ONCE = 2
# The request body for the /v1/docs page (the route reads the form itself).
VIDEO_REQUEST = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["upload"],
                    "properties": {
                        "upload": {
                            "type": "string",
                            "format": "binary",
                            "description": "the clip: MP4, MOV, MKV, WebM, AVI or MJPEG",
                        },
                        "camera_id": {"type": "string", "maxLength": 200},
                        "regions": {"type": "array", "items": {"type": "string"}},
                        "min_score": {"type": "number", "minimum": 0, "maximum": 1},
                        "review_threshold": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                }
            }
        },
    }
}


@dataclass(frozen=True)
class VideoOptions:
    min_score: float
    review_threshold: float
    regions: tuple[str, ...]
    camera_id: str | None


class VideoReader:
    def __init__(
        self,
        settings: Settings,
        batcher: MicroBatcher[ReadRequest, list[PlateReading]],
        recorder: ReviewRecorder,
        models: tuple[str, str],
    ) -> None:
        self.settings, self.batcher, self.recorder, self.models = settings, batcher, recorder, models
        self.crops = EventCrops(max_bytes=settings.video_crop_store_bytes)
        self._slots = asyncio.Semaphore(CLIPS_AT_ONCE)

    async def read(self, request: Request) -> dict[str, Any]:
        started = datetime.now(UTC)
        filename, data, options = await _parse(request, self.settings)
        loop = asyncio.get_running_loop()
        clip = await loop.run_in_executor(VIDEO_DECODER, lambda: open_clip(data, self.settings))
        try:
            async with self._slots:  # a clip over the limits was refused above, without waiting
                events = await self._events(clip, options)
        finally:
            await loop.run_in_executor(VIDEO_DECODER, clip.close)
        events = [self.finish(e, options.camera_id) for e in events]
        vehicles = [e.to_json(CROPS_PATH + e.id if e.best_crop is not None else None) for e in events]
        if vehicles:
            webhooks.publish("vehicle", options.camera_id, vehicles, filename, started)
        warnings = []
        if clip.limited:
            warnings.append(
                f"read the first {clip.frames_read} sampled frames only "
                "(MODELPORT_PLATE_VIDEO_MAX_FRAMES): send a shorter clip for the rest"
            )
        return {
            "filename": filename,
            "camera_id": options.camera_id,
            "timestamp": started.isoformat().replace("+00:00", "Z"),
            "processing_time": round((datetime.now(UTC) - started).total_seconds() * 1000, 2),
            "duration": round(clip.duration_s, 3) if clip.duration_s is not None else None,
            "frames_read": clip.frames_read,
            "sample_fps": clip.sample_fps,
            "truncated": clip.truncated,
            "vehicles": vehicles,
            "warnings": warnings,
        }

    async def _events(self, clip: Clip, options: VideoOptions) -> list[VehicleEvent]:
        loop = asyncio.get_running_loop()
        frames = clip.sampled(CHUNK)
        tracker = VehicleTracker(
            dataclasses.replace(self.settings, review_threshold=options.review_threshold)
        )
        events: list[VehicleEvent] = []
        pending = loop.run_in_executor(VIDEO_DECODER, next, frames, None)
        try:
            while (chunk := await pending) is not None:
                pending = loop.run_in_executor(VIDEO_DECODER, next, frames, None)  # decoded meanwhile
                readings = await asyncio.gather(
                    *(
                        self.batcher.submit(
                            ReadRequest(
                                frame,
                                options.min_score,
                                options.regions,
                                options.review_threshold,
                                tiles=False,
                            )
                        )
                        for _, frame in chunk
                    )
                )
                for (t, frame), plates in zip(chunk, readings):
                    events += tracker.update(t, plates, frame)
        finally:
            if not pending.done():  # an error or a client gone: let the decode thread finish first
                await asyncio.wait([pending])
            await loop.run_in_executor(VIDEO_DECODER, frames.close)
        return events + tracker.flush()

    def finish(self, event: VehicleEvent, camera_id: str | None) -> VehicleEvent:
        """Watchlist matches attached, the best crop kept, a flagged event queued for review."""
        matches = watchlists.watchlist_matches(event.plate, [c.plate for c in event.candidates[1:]])
        event = dataclasses.replace(event, watchlist=tuple(matches))
        if event.best_crop is not None:
            self.crops.put(event.id, event.best_crop)
        queue_for_review(self.recorder, event, camera_id, self.models)
        return event

    def crop(self, event_id: str) -> bytes:
        jpeg = self.crops.get(event_id)
        if jpeg is None:
            raise ApiError(
                404,
                f"no crop for vehicle {event_id!r}: crops are kept for the last vehicles only "
                "(MODELPORT_PLATE_VIDEO_CROP_STORE_BYTES), and none when "
                "MODELPORT_PLATE_STORE_IMAGES=off",
                code="crop_not_found",
                param="id",
            )
        return jpeg


def queue_for_review(
    recorder: ReviewRecorder, event: VehicleEvent, camera_id: str | None, models: tuple[str, str]
) -> None:
    """A flagged vehicle to the review queue, with its best crop (clips, served cameras and
    `modelport watch` alike)."""
    if event.review:
        recorder.submit(*_for_review(event), camera_id=camera_id, models=models)


def _for_review(event: VehicleEvent) -> tuple[Photo, list[PlateReading]]:
    """The event as the review queue takes a photo: its best crop (or, with images off, a blank
    the size of its box) and one reading, the voted plate, boxed in it."""
    if event.best_crop is not None and event.crop_box is not None:
        pixels = np.asarray(Image.open(io.BytesIO(event.best_crop)).convert("RGB"))
        box, digest = event.crop_box, hashlib.sha256(event.best_crop).hexdigest()
    else:
        pixels = np.zeros((max(event.box.height, 1), max(event.box.width, 1), 3), np.uint8)
        box = dataclasses.replace(event.box, xmin=0, ymin=0, xmax=pixels.shape[1], ymax=pixels.shape[0])
        digest = event.id
    reading = PlateReading(event.plate, event.score, 1.0, box, event.candidates, event.review)
    return Photo(pixels, pixels.shape[1], pixels.shape[0], digest), [reading]


async def _parse(request: Request, settings: Settings) -> tuple[str, bytes, VideoOptions]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ApiError(
            415,
            f"unsupported content type {content_type or '(none)'!r}: send multipart/form-data "
            "with the clip in field `upload`, e.g. curl -F upload=@clip.mp4 ...",
            code="unsupported_media_type",
        )
    await request.body()  # whole and capped by body_limit (max_request_bytes)
    try:
        form = await request.form(max_files=2, max_fields=20, max_part_size=settings.max_request_bytes)
    except Exception as exc:  # malformed multipart: Starlette raises several types
        raise ApiError(400, f"could not parse the multipart body: {exc}", code="bad_multipart") from None
    upload = form.get("upload")
    if not isinstance(upload, UploadFile):
        raise ApiError(
            400,
            "no video file in field `upload`: send it as a file, e.g. curl -F upload=@clip.mp4 ...",
            code="missing_upload",
            param="upload",
        )
    regions = tuple(str(r) for r in form.getlist("regions"))
    unknown = sorted(set(regions) - known_regions())
    if unknown:
        raise ApiError(
            400,
            f"unknown region(s) {unknown}; valid: {sorted(known_regions())}",
            code="invalid_regions",
            param="regions",
        )
    options = VideoOptions(
        min_score=_unit_number(form.get("min_score"), settings.min_score, "min_score"),
        review_threshold=_unit_number(
            form.get("review_threshold"), settings.review_threshold, "review_threshold"
        ),
        regions=regions,
        camera_id=_camera_id(form.get("camera_id")),
    )
    return upload.filename or "video", await upload.read(), options
