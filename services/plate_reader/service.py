"""Licence-plate reader: a BentoML service. Photo in, each plate's text, score and box out.

    bentoml serve services.plate_reader.service:PlateReader --port 3000
    curl -F upload=@car.jpg http://localhost:3000/v1/plate-reader

The HTTP API is a FastAPI app mounted on the service, so one route takes both multipart
(`upload`) and JSON (base64 `image`), and every error is a 4xx that says what to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import Response

from services.core import api_errors, memory, traffic
from services.core.admission import Limits
from services.core.api_errors import ApiError
from services.core.container_image import service_image
from services.plate_reader import metrics, snapshot_api, watchlists, webhooks
from services.plate_reader.batching import MicroBatcher
from services.plate_reader.cameras import Cameras, parse_cameras, router as camera_routes, serve_cameras
from services.plate_reader.http_schema import PlateReaderJSON, openapi_request, to_json
from services.plate_reader.inputs import ReadOptions, parse_request
from services.plate_reader.keyed_usage import KeyedUsage
from services.plate_reader.photo_reading import PhotoReader
from services.plate_reader.review_api import review_store, review_store_or_none, router as review_routes
from services.plate_reader.review_page import page_app
from services.plate_reader.review_recorder import ReviewRecorder
from services.plate_reader.review_store import ReviewSettings
from services.plate_reader.settings import Settings
from services.plate_reader.stream_watch import publish_vehicle
from services.plate_reader.types import ReadRequest
from services.plate_reader.video_reading import CROPS_PATH, VIDEO_REQUEST, VideoReader
from services.plate_reader.watchlist_api import router as watchlist_routes

logger = logging.getLogger("bentoml.modelport.plate_reader")  # BentoML only shows INFO under "bentoml"
settings = Settings.from_env()
memory.map_large_blocks(settings.malloc_mmap_threshold)  # before any model or photo is loaded
LIMITS = Limits.of(settings)  # in flight, queued, queue wait: beyond them 429 + Retry-After
app = FastAPI(
    title="modelport plate reader",
    version="1",
    description="Licence-plate text, confidence and box from a photo.",
)
api_errors.install(app)
OPENAPI_REQUEST = openapi_request(settings)  # the request body, with this server's limits
READ_RESPONSES = api_errors.error_responses(400, 413, 415, 429)  # + 401, 500, 503, 504
app.include_router(review_routes)
app.include_router(watchlist_routes)
app.include_router(snapshot_api.router)  # GET /v1/statistics/, as Plate Recognizer's
app.include_router(camera_routes)  # GET /v1/plate-reader/streams[/{camera_id}/events]
CAMERAS = parse_cameras(settings.cameras)  # a malformed MODELPORT_PLATE_CAMERAS stops the start here
webhooks.check(settings)  # so does a malformed MODELPORT_PLATE_WEBHOOKS (not a worker restarting)


@bentoml.service(
    name="plate-reader",
    # A clip at the limits (60 s read at 5 frames/s): ~30 s on 2 cores; 8 large photos: a few s
    traffic=traffic.bentoml_traffic(LIMITS, longest_request_s=60),
    resources={"cpu": "2", "memory": "1Gi"},
    image=service_image(),  # core dependencies only: ONNX Runtime, no torch
)
@bentoml.asgi_app(app, path="/v1")
@bentoml.asgi_app(page_app, path="/review")
class PlateReader:
    detector_model = bentoml.models.BentoModel(settings.detector_model)
    ocr_model = bentoml.models.BentoModel(settings.ocr_model)
    # Read beside it as an equal when settings.ocr_tuned_model names a plate-tuned version
    tuned_ocr_tag = settings.tuned_ocr_model()
    tuned_ocr_model = bentoml.models.BentoModel(tuned_ocr_tag) if tuned_ocr_tag else None
    text_detector_model = bentoml.models.BentoModel(settings.text_detector_model)

    def __init__(self) -> None:
        from services.plate_reader.pipeline import PlateRecognizer

        self.recognizer = PlateRecognizer.from_files(
            self.detector_model.path_of("model.onnx"),
            self.ocr_model.path_of("model.onnx"),
            review_threshold=settings.review_threshold,
            detector_imgsz=settings.detector_imgsz,
            retry_imgsz=settings.detector_retry_imgsz,
            tile=settings.detector_tile,
            text_detector_path=(
                self.text_detector_model.path_of("model.onnx") if settings.text_lines else None
            ),
            tuned_ocr_dir=self.tuned_ocr_model.path if self.tuned_ocr_model else None,
            tuned_temperature=settings.ocr_tuned_temperature,
        )
        self.batcher = MicroBatcher(
            self.recognizer.read_batch,
            max_size=settings.batch_max_size,
            lanes=settings.batch_lanes,
        )
        self.photos = PhotoReader(self.batcher, self.recognizer)  # large photos: then in tiles
        reviews = ReviewSettings.from_env()
        self.recorder = ReviewRecorder(
            review_store_or_none,
            max_queued=reviews.queue_size,
            repeat_window_s=reviews.repeat_window_s,
            store_images=settings.store_images,  # off: review items keep text only
        )
        with contextlib.suppress(Exception):  # unreachable: logged and counted when a photo needs it
            review_store()  # opened now: at the first read, its migrations held the event loop ~1 s
        watchlists.start()  # every reading's `watchlist` matches, kept current from the database
        webhooks.start(settings)  # bad MODELPORT_PLATE_WEBHOOKS fails the start; pending events resume
        # What read each review item: the recogniser, "+" the plate-tuned version read with it
        ocr = str(self.ocr_model.tag)
        if self.tuned_ocr_model is not None and self.recognizer.fused:
            ocr += f"+{self.tuned_ocr_model.tag}"
        self.models = (str(self.detector_model.tag), ocr)
        self.videos = VideoReader(settings, self.batcher, self.recorder, self.models)  # POST .../video
        logger.info(
            "plate reader ready: detector %s, ocr %s",
            self.detector_model.tag,
            ocr,
        )

    def __is_ready__(self) -> bool:
        return hasattr(self, "batcher")

    @bentoml.on_startup
    def watch_cameras(self) -> None:
        """Each camera of MODELPORT_PLATE_CAMERAS watched on this event loop (stream_watch.py)."""
        from services.plate_reader.vehicle_tracks import VehicleTracker

        self.cameras = Cameras(
            CAMERAS,
            settings,
            self._read_frame,
            lambda: VehicleTracker(settings),
            finish=self.videos.finish,  # as a clip's vehicles: watchlists, the crop kept, review
            crop_path=CROPS_PATH,
            on_event=publish_vehicle,
        )
        self.cameras.start()
        serve_cameras(self.cameras)

    async def _read_frame(self, camera_id: str, frame: Any) -> list[Any]:
        plates = await self.batcher.submit(ReadRequest(frame, settings.min_score, tiles=False))
        metrics.observe(plates, camera_id)
        return plates

    @bentoml.on_shutdown
    async def stop_cameras(self) -> None:
        await self.cameras.stop()

    @bentoml.on_shutdown
    async def finish_recording(self) -> None:
        """After the last answer (SIGTERM included): photos queued for review are written."""
        await asyncio.to_thread(self.recorder.close)
        await asyncio.to_thread(webhooks.close)

    async def _read(self, request: Request) -> tuple[list[tuple[str, Any]], list[Any], float, ReadOptions]:
        images, options = await parse_request(request, settings)
        started = time.perf_counter()
        readings = await asyncio.gather(
            *(
                self.photos.read(
                    ReadRequest(
                        photo.pixels,
                        options.min_score,
                        options.regions,
                        options.review_threshold,
                        whole=photo,
                    )
                )
                for _, photo in images
            )
        )
        readings = [snapshot_api.keep(plates, options.snapshot) for plates in readings]  # threshold_o, strict
        for plates in readings:
            metrics.observe(plates, options.camera_id)
        for (_, photo), plates in zip(images, readings):  # written after the answer (review_recorder)
            self.recorder.submit(
                photo,
                plates,
                camera_id=options.camera_id,
                models=self.models,
            )
        return images, readings, (time.perf_counter() - started) * 1000, options

    @app.post(
        "/plate-reader",
        openapi_extra=OPENAPI_REQUEST,
        responses=READ_RESPONSES,
        response_model=PlateReaderJSON | list[PlateReaderJSON],
    )
    async def read_plates(self, request: Request) -> Any:
        return await self._answer(request, lowercase=False)

    # Plate Recognizer's URL, slash included (README, "Plate Recognizer clients"): the same read
    # and fields, plates in lowercase as Plate Recognizer writes them (its clients compare as given).
    @app.post(
        "/plate-reader/",
        openapi_extra=OPENAPI_REQUEST,
        responses=READ_RESPONSES,
        response_model=PlateReaderJSON | list[PlateReaderJSON],
        summary="Read plates (Plate Recognizer Snapshot API: plates in lowercase)",
    )
    async def read_plates_snapshot(self, request: Request) -> Any:
        return await self._answer(request, lowercase=True)

    async def _answer(self, request: Request, *, lowercase: bool) -> Any:
        images, readings, elapsed_ms, options = await self._read(request)
        usage = snapshot_api.usage_source.record(request)
        bodies = [
            snapshot_api.to_response(
                to_json(name, plates, elapsed_ms),
                plates,
                options.snapshot,
                options.camera_id,
                usage,
                lowercase=lowercase,
            )
            for (name, _), plates in zip(images, readings)
        ]
        await webhooks.record_answers(bodies)  # in the outbox before the answer goes (webhooks.py)
        return bodies[0] if len(bodies) == 1 else bodies

    @app.post(
        "/plate-reader/annotated",
        openapi_extra=OPENAPI_REQUEST,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, **READ_RESPONSES},
    )
    async def annotated(self, request: Request) -> Response:
        from services.plate_reader.draw import annotate, check_drawable

        images, readings, _, _ = await self._read(request)
        if len(images) != 1:
            raise ApiError(
                400,
                f"send exactly one image to /annotated (got {len(images)})",
                code="one_image_only",
                param="upload",
            )
        photo = images[0][1]
        check_drawable(photo.width, photo.height)
        snapshot_api.usage_source.record(request)
        jpeg = await asyncio.to_thread(lambda: annotate(photo.whole(), readings[0]))
        return Response(jpeg, media_type="image/jpeg")

    @app.post("/plate-reader/video", openapi_extra=VIDEO_REQUEST, responses=READ_RESPONSES)
    async def read_video(self, request: Request) -> Any:
        """A clip (MP4, MKV, AVI, MJPEG) in, one event per vehicle out (README, "Video")."""
        return await self.videos.read(request)

    @app.get(
        "/plate-reader/video/crops/{event_id}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, **api_errors.error_responses(404)},
    )
    async def video_crop(self, event_id: str) -> Response:
        """A vehicle event's best crop (its `crop` URL), while kept."""
        return Response(self.videos.crop(event_id), media_type="image/jpeg")


# Shutdown grace, API keys, bodies read whole, admission; deciding a review or changing a
# watchlist is not a call.
traffic.install(
    PlateReader,
    app,
    LIMITS,
    max_request_bytes=settings.max_request_bytes,
    uncounted=("/reviews", "/watchlists"),
)
snapshot_api.set_usage_source(KeyedUsage(snapshot_api.usage_source))  # usage per key, when keys are on
