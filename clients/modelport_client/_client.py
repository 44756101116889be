"""Sync and async clients. Both are context managers with a finite default timeout.

    from modelport_client import Client

    with Client("http://localhost:3000") as plates:          # the plate reader
        for plate in plates.read_plates("car.jpg").results:
            print(plate.plate, plate.score, "check me" if plate.review else "")

    with Client("http://localhost:3001") as text:            # the autocompleter
        print(text.complete("The capital of France is", max_tokens=5).text)

One client class serves both services: each call names its own route.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import httpx

from modelport_client._autocomplete import AsyncAutocompleteCalls, AutocompleteCalls
from modelport_client._errors import raise_for_status, translate
from modelport_client._plates import (
    PLATE_READER_PATH,
    VIDEO_PATH,
    ImageInput,
    PlateReading,
    Vehicle,
    VideoReading,
    build_request,
    build_video_request,
    parse_readings,
)

DEFAULT_TIMEOUT = 30.0  # seconds; a CPU server reading 8 large photos still answers well inside it


def _headers(api_key: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    """`api_key` (else MODELPORT_API_KEY) as a Bearer token, under any headers given."""
    key = api_key or os.environ.get("MODELPORT_API_KEY")
    return {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}


class Client(AutocompleteCalls):
    def __init__(
        self,
        base_url: str = "http://localhost:3000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, headers=_headers(api_key, headers), transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise translate(exc, str(self._http.base_url.join(path))) from exc
        raise_for_status(response)
        return response

    def is_ready(self) -> bool:
        """True once the service has loaded its models (its /readyz answers 200)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def read_plates(
        self, image: ImageInput, *, regions: Sequence[str] | None = None, min_score: float | None = None
    ) -> PlateReading:
        """Read every plate in one photo (a path, bytes or a binary file object)."""
        return self.read_plates_many([image], regions=regions, min_score=min_score)[0]

    def read_plates_many(
        self,
        images: Sequence[ImageInput],
        *,
        regions: Sequence[str] | None = None,
        min_score: float | None = None,
    ) -> list[PlateReading]:
        """Read several photos in one request; results come back in the same order."""
        response = self._request("POST", PLATE_READER_PATH, **build_request(images, regions, min_score))
        return parse_readings(response.json())

    def annotate_plates(
        self, image: ImageInput, *, regions: Sequence[str] | None = None, min_score: float | None = None
    ) -> bytes:
        """The photo as JPEG bytes with each plate's box and reading drawn on it."""
        response = self._request(
            "POST", f"{PLATE_READER_PATH}/annotated", **build_request([image], regions, min_score)
        )
        return response.content

    def read_video(self, video: ImageInput, *, camera_id: str | None = None) -> VideoReading:
        """One event per vehicle of a clip (MP4, MKV, AVI, MJPEG: a path, bytes or a file object);
        `client.video_crop(vehicle)` fetches a vehicle's best crop."""
        response = self._request("POST", VIDEO_PATH, **build_video_request(video, camera_id))
        return VideoReading.from_json(response.json())

    def video_crop(self, vehicle: Vehicle) -> bytes:
        """The vehicle's best crop, JPEG (NotFound once the server no longer keeps it)."""
        return self._request("GET", vehicle.crop or f"{VIDEO_PATH}/crops/{vehicle.id}").content


class AsyncClient(AsyncAutocompleteCalls):
    def __init__(
        self,
        base_url: str = "http://localhost:3000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=_headers(api_key, headers), transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise translate(exc, str(self._http.base_url.join(path))) from exc
        raise_for_status(response)
        return response

    async def is_ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def read_plates(
        self, image: ImageInput, *, regions: Sequence[str] | None = None, min_score: float | None = None
    ) -> PlateReading:
        return (await self.read_plates_many([image], regions=regions, min_score=min_score))[0]

    async def read_plates_many(
        self,
        images: Sequence[ImageInput],
        *,
        regions: Sequence[str] | None = None,
        min_score: float | None = None,
    ) -> list[PlateReading]:
        response = await self._request("POST", PLATE_READER_PATH, **build_request(images, regions, min_score))
        return parse_readings(response.json())

    async def annotate_plates(
        self, image: ImageInput, *, regions: Sequence[str] | None = None, min_score: float | None = None
    ) -> bytes:
        response = await self._request(
            "POST", f"{PLATE_READER_PATH}/annotated", **build_request([image], regions, min_score)
        )
        return response.content

    async def read_video(self, video: ImageInput, *, camera_id: str | None = None) -> VideoReading:
        response = await self._request("POST", VIDEO_PATH, **build_video_request(video, camera_id))
        return VideoReading.from_json(response.json())

    async def video_crop(self, vehicle: Vehicle) -> bytes:
        return (await self._request("GET", vehicle.crop or f"{VIDEO_PATH}/crops/{vehicle.id}")).content
