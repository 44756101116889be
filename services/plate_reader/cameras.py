"""The cameras the served plate reader watches (MODELPORT_PLATE_CAMERAS), and their routes.

    MODELPORT_PLATE_CAMERAS='[{"camera_id": "gate-1", "url": "rtsp://cam.lan/live"}]'
    MODELPORT_PLATE_CAMERA_PRIVATE_HOSTS=cam.lan
    GET /v1/plate-reader/streams                      # each camera's state and counters
    GET /v1/plate-reader/streams/gate-1/events        # its latest vehicle events, newest last

A malformed setting (not JSON, a camera without an id or url, two cameras of one id, a scheme
other than rtsp/rtsps/http/https) stops the service from starting, with the reason. A camera
whose host is not allowed (stream_url.py) does not stop the others: its state is
"refused: ..." in GET /v1/plate-reader/streams, and it is not retried (the setting must change).
Each camera reads its moving frames through the service's MicroBatcher, beside photo requests.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter

from services.core import api_errors
from services.core.api_errors import ApiError
from services.plate_reader.settings import Settings
from services.plate_reader.stream_source import StreamSource
from services.plate_reader.stream_url import StreamRefused, check_form
from services.plate_reader.stream_watch import CameraWatch, Tracker
from services.plate_reader.types import PlateReading

CAMERA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Camera:
    camera_id: str
    url: str


def parse_cameras(text: str) -> tuple[Camera, ...]:
    """MODELPORT_PLATE_CAMERAS's cameras; ValueError saying what is wrong with the setting."""
    if not text.strip():
        return ()
    where = "MODELPORT_PLATE_CAMERAS"
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not JSON ({exc}): give a list of {{camera_id, url}}") from None
    if not isinstance(items, list):
        raise ValueError(f"{where} must be a JSON list of {{camera_id, url}}, not {type(items).__name__}")
    cameras: list[Camera] = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"camera_id", "url"}:
            raise ValueError(
                f"{where}[{n}] must be an object with exactly camera_id and url, not {item!r:.200}"
            )
        camera_id, url = item["camera_id"], item["url"]
        if not isinstance(camera_id, str) or not CAMERA_ID.fullmatch(camera_id):
            raise ValueError(
                f"{where}[{n}].camera_id {camera_id!r:.100}: 1-64 letters, digits, '_', '.' or '-'"
            )
        if any(c.camera_id == camera_id for c in cameras):
            raise ValueError(f"{where}: camera_id {camera_id!r} is given twice")
        if not isinstance(url, str):
            raise ValueError(f"{where}[{n}].url must be text")
        try:
            check_form(url)
        except StreamRefused as exc:
            raise ValueError(f"{where}[{n}]: {exc}") from None
        cameras.append(Camera(camera_id, url))
    return tuple(cameras)


class Cameras:
    """Every configured camera watched on the server's event loop, from `start()` to `stop()`."""

    def __init__(
        self,
        cameras: tuple[Camera, ...],
        settings: Settings,
        read: Callable[[str, np.ndarray], Awaitable[list[PlateReading]]],
        tracker: Callable[[], Tracker],
        *,
        finish: Callable[[Any, str], Any] | None = None,
        crop_path: str | None = None,
        on_event: Callable[[dict[str, Any], Any], None] | None = None,
    ) -> None:
        self.cameras = cameras
        self.settings = settings
        self.read = read  # (camera_id, RGB frame) -> its readings
        self.watches: dict[str, CameraWatch] = {}
        self._new_tracker = tracker
        self._finish = finish  # (event, camera_id) -> the event to emit
        self._crop_path = crop_path
        self._on_event = on_event
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for camera in self.cameras:
            wake = asyncio.Event()
            source = StreamSource(
                camera.url,
                fps=self.settings.camera_fps,
                private_hosts=self.settings.camera_private_hosts,
                idle_keyframes=self.settings.camera_idle_keyframes,
                on_sample=_waker(loop, wake),
            )
            finish = _for_camera(self._finish, camera.camera_id) if self._finish else None
            watch = CameraWatch(
                camera.camera_id,
                source,
                self._new_tracker(),
                finish=finish,
                crop_path=self._crop_path,
                on_event=self._on_event,
            )
            self.watches[camera.camera_id] = watch
            source.start()
            read = functools.partial(self.read, camera.camera_id)
            self._tasks.append(loop.create_task(watch.run_async(read, wake)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(w.source.stop) for w in self.watches.values()))

    def status(self) -> list[dict[str, Any]]:
        return [watch.status() for watch in self.watches.values()]

    def events(self, camera_id: str) -> list[dict[str, Any]]:
        watch = self.watches.get(camera_id)
        if watch is None:
            raise ApiError(
                404,
                f"no camera {camera_id!r} is watched here (cameras: "
                f"{', '.join(self.watches) or 'none; see MODELPORT_PLATE_CAMERAS'})",
                code="camera_not_found",
                param="camera_id",
            )
        return list(watch.recent)


def _for_camera(finish: Callable[[Any, str], Any], camera_id: str) -> Callable[[Any], Any]:
    return lambda event: finish(event, camera_id)


def _waker(loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> Callable[[], None]:
    """Called in the source's thread: wakes the camera's task on the event loop."""

    def wake_up() -> None:
        loop.call_soon_threadsafe(wake.set)

    return wake_up


router = APIRouter()
_cameras: Cameras | None = None


def serve_cameras(cameras: Cameras) -> None:
    """The routes answer for these cameras (the service's, once started)."""
    global _cameras
    _cameras = cameras


def _watched() -> Cameras:
    if _cameras is None:
        raise ApiError(503, "the plate reader is still starting", code="not_ready", type="server_error")
    return _cameras


@router.get("/plate-reader/streams", summary="Cameras watched (MODELPORT_PLATE_CAMERAS): state, counters")
async def streams() -> dict[str, Any]:
    return {"cameras": _watched().status()}


@router.get(
    "/plate-reader/streams/{camera_id}/events",
    summary="A camera's latest vehicle events",
    responses=api_errors.error_responses(404),  # a camera not watched here
)
async def stream_events(camera_id: str) -> dict[str, Any]:
    return {"camera_id": camera_id, "events": _watched().events(camera_id)}
