"""Turn a plate-reader HTTP request (multipart `upload` or JSON base64 `image`) into images
and options, enforcing every limit in Settings with a 4xx that says what to fix.

Nothing here unpickles; the one fetch is `upload_url`, only from the hosts in
MODELPORT_PLATE_UPLOAD_URL_HOSTS and only by upload_url.fetch_image's rules.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from services.core.api_errors import ApiError
from services.plate_reader import snapshot_api
from services.plate_reader.image_decoding import Photo, decode_photos
from services.plate_reader.settings import Settings
from services.plate_reader.snapshot_api import SnapshotOptions
from services.plate_reader.upload_url import fetch_image

# Images are decoded here, off the event loop (a 39 Mpx PNG froze /livez for 0.9 s on it), one
# request's at a time: one thread grows one malloc arena and holds one large decode.
DECODER = ThreadPoolExecutor(1, thread_name_prefix="decode")
# Per-request options that are numbers from 0 to 1 (their defaults: the service's settings).
UNIT_OPTIONS = ("min_score", "review_threshold")


@dataclass(frozen=True)
class ReadOptions:
    min_score: float  # detector threshold
    review_threshold: float  # readings less sure than this get review: true
    regions: tuple[str, ...]
    camera_id: str | None = None  # recorded with review items, so reviewers can filter by camera
    snapshot: SnapshotOptions = field(
        default_factory=SnapshotOptions
    )  # Plate Recognizer's fields (snapshot_api)


async def parse_request(request: Request, settings: Settings) -> tuple[list[tuple[str, Photo]], ReadOptions]:
    """(filename, photo) pairs and the read options from a multipart or JSON request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        # The body is already whole and within max_request_bytes (services/core/body_limit.py,
        # installed by traffic.install); body() keeps it for the form parser.
        await request.body()
        try:
            # Count files ourselves (below) for a precise message; the body size is already capped.
            # A text field may hold a whole base64 image: parts as large as the body's cap.
            form = await request.form(
                max_files=1000, max_fields=1000, max_part_size=settings.max_request_bytes
            )
        except Exception as exc:  # malformed multipart: Starlette raises several types
            raise ApiError(400, f"could not parse the multipart body: {exc}", code="bad_multipart") from None
        uploads = form.getlist("upload")  # files, or text holding base64 (Plate Recognizer's clients)
        fetched = await _upload_url(form, settings, also_sent="upload" if uploads else None)
        if not uploads and fetched is None:
            sent = sorted(set(form.keys())) or "none"
            raise ApiError(
                400,
                f"no image in field `upload` (fields sent: {sent}). Send the file "
                "as multipart field `upload`, e.g. curl -F upload=@car.jpg ...",
                code="missing_upload",
                param="upload",
            )
        raw = (
            [fetched]
            if fetched is not None
            else [
                (u.filename or f"image-{i}", await u.read())
                if isinstance(u, UploadFile)
                else (f"image-{i}", _b64decode(u, i, settings, field="upload"))
                for i, u in enumerate(uploads)
            ]
        )
        options: dict[str, Any] = {
            "regions": form.getlist("regions") or None,
            "camera_id": form.get("camera_id"),
            **{name: form.get(name) for name in UNIT_OPTIONS + snapshot_api.FIELDS},
        }
    elif content_type == "application/json":
        body = await request.body()  # whole and capped by body_limit, as above
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}", code="invalid_json") from None
        except RecursionError:  # Python's parser recurses per level: ~1,000 levels is its end
            raise ApiError(
                400,
                "body is JSON nested too deeply: send a flat object with `image` "
                "(or `images`) and the options",
                code="invalid_json",
            ) from None
        has_image = isinstance(payload, dict) and ("image" in payload or "images" in payload)
        fetched = (
            await _upload_url(payload, settings, also_sent="image" if has_image else None)
            if isinstance(payload, dict)
            else None
        )
        if fetched is not None:
            raw = [fetched]
        else:
            if not has_image:
                raise ApiError(
                    400,
                    "JSON body needs `image`: the image file as a base64 string "
                    "(or `images`: a list of them)",
                    code="missing_image",
                    param="image",
                )
            encoded = payload.get("images", payload.get("image"))
            encoded = encoded if isinstance(encoded, list) else [encoded]
            if not encoded:
                raise ApiError(
                    400,
                    "`images` is an empty list: send at least one base64 image",
                    code="missing_image",
                    param="images",
                )
            raw = [(f"image-{i}", _b64decode(value, i, settings)) for i, value in enumerate(encoded)]
        options = {
            "regions": payload.get("regions"),
            "camera_id": payload.get("camera_id"),
            **{name: payload.get(name) for name in UNIT_OPTIONS + snapshot_api.FIELDS},
        }
    else:
        raise ApiError(
            415,
            f"unsupported content type {content_type or '(none)'!r}: send "
            "multipart/form-data with the image in field `upload`, or application/json "
            "with a base64 `image`",
            code="unsupported_media_type",
        )
    if len(raw) > settings.max_images:
        raise ApiError(
            400,
            f"{len(raw)} images sent; at most {settings.max_images} per request",
            code="too_many_images",
            param="upload",
        )
    min_score = _unit_number(options["min_score"], settings.min_score, "min_score")
    snapshot = snapshot_api.parse_options(options)  # regions (its codes or ours), timestamp, mmc, config
    decode = functools.partial(
        decode_photos,
        [data for _, data in raw],
        settings,
        param="image" if content_type == "application/json" else "upload",
    )
    photos = await asyncio.get_running_loop().run_in_executor(DECODER, decode)
    images = [(name, photo) for (name, _), photo in zip(raw, photos)]
    return images, ReadOptions(
        min_score=min_score if snapshot.threshold_d is None else snapshot.threshold_d,
        review_threshold=_unit_number(
            options["review_threshold"], settings.review_threshold, "review_threshold"
        ),
        regions=snapshot.regions.regions,
        camera_id=_camera_id(options["camera_id"]),
        snapshot=snapshot,
    )


def _b64decode(value: Any, index: int, settings: Settings, field: str = "image") -> bytes:
    if not isinstance(value, str):
        raise ApiError(
            400,
            f"`{field}` #{index} must be a base64 string, not {type(value).__name__}",
            code="invalid_base64",
            param=field,
        )
    if value.startswith("data:") and "," in value:  # accept data URLs from browsers
        value = value.split(",", 1)[1]
    if len(value) > settings.max_image_bytes * 4 // 3 + 4:
        raise ApiError(
            413,
            f"`{field}` #{index} is over {settings.max_image_bytes:,} bytes",
            code="image_too_large",
            param=field,
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400,
            f"`{field}` #{index} is not valid base64: send the file's bytes "
            "base64-encoded (standard alphabet, with padding)"
            + (", or the file itself" if field == "upload" else ""),
            code="invalid_base64",
            param=field,
        ) from None


async def _upload_url(fields: Any, settings: Settings, also_sent: str | None) -> tuple[str, bytes] | None:
    """(name, bytes) of the image at `upload_url` when one was sent, else None. Off (400)
    unless MODELPORT_PLATE_UPLOAD_URL_HOSTS lists hosts; then fetched by upload_url's rules."""
    if "upload_url" not in fields:
        return None
    if not settings.upload_url_hosts:
        raise ApiError(
            400,
            "`upload_url` is turned off on this server (the operator enables it "
            "for chosen hosts with MODELPORT_PLATE_UPLOAD_URL_HOSTS): send the image "
            "itself in `upload`, as a file or base64",
            code="upload_url_disabled",
            param="upload_url",
        )
    if also_sent:
        raise ApiError(
            400,
            f"send the image either in `{also_sent}` or as `upload_url`, not both",
            code="upload_url_and_image",
            param="upload_url",
        )
    url = fields.get("upload_url")
    data = await fetch_image(url, settings.upload_url_hosts, settings.max_image_bytes)
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "upload_url"
    return name, data


def _unit_number(value: Any, default: float, name: str) -> float:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise ApiError(
            400,
            f"`{name}` must be a number from 0 to 1, not {snapshot_api.shown(value)}",
            code=f"invalid_{name}",
            param=name,
        )
    return number


def _camera_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise ApiError(
            400,
            "`camera_id` must be text of at most 200 characters",
            code="invalid_camera_id",
            param="camera_id",
        )
    return value
