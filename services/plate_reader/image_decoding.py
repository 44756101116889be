"""Decode uploaded image bytes safely, or say exactly what is wrong with them.

    photos = decode_photos([data, ...], settings, param="upload")   # in a worker thread
    photo.pixels    # what the detector reads
    photo.whole()   # full resolution, for plate crops, the annotated image and review photos

Checks run cheapest first: size, then the header (format, pixel count, the request's pixel
budget and the pixels held in memory by every request in flight), and only then the decode,
so a decompression bomb is refused before it costs memory.

A large photo is not kept whole: 8 photos of 6000x6000 held 864 MB until their batch ran.
It is decoded straight to the detector's size (JPEG: Pillow's draft mode decodes at 1/2,
1/4 or 1/8 scale; other formats: `reduce`), its file is kept, and `whole()` decodes it
again (in the batch thread) only when plates are found in it.
"""

from __future__ import annotations

import hashlib
import io
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.core.api_errors import ApiError
from services.plate_reader.settings import Settings

# Pillow's own bomb check calls a header over 179 Mpx "not an image" (DecompressionBombError);
# settings.max_pixels is checked on the header instead, with a 413 that gives the size.
Image.MAX_IMAGE_PIXELS = None
# One decode at a time in this process, whichever thread asks: the decode thread's, a batch
# lane's (a large photo decoded again for its crops) and the tile search's (Photo.scaled). A PNG
# is decoded whole, 108 MB at 36 Mpx; two at once took 3 requests of 8 such photos past 1 GiB.
DECODING = threading.Lock()


@dataclass(frozen=True, eq=False)
class Photo:
    """A decoded upload. `pixels` is the whole image, or, for one over
    settings.whole_image_max_pixels, a copy whose long side is the detector's largest input."""

    pixels: np.ndarray  # RGB uint8, EXIF rotation applied
    width: int  # the whole image's, after EXIF rotation
    height: int
    digest: str  # SHA-256 of the file: the same photo sent again has the same one
    data: bytes | None = None  # the file, kept when `pixels` is a smaller copy

    def whole(self) -> np.ndarray:
        """The image at full resolution (decoded again from `data` when only a copy was kept)."""
        if self.data is None:
            return self.pixels
        with DECODING, Image.open(io.BytesIO(self.data)) as image:
            return _rgb(image)

    def scaled(self, side: int) -> np.ndarray:
        """The image at about `side` px on its long side (whole where that is not smaller). A
        JPEG is decoded at a reduced scale (draft mode), never whole: the tile search of a 36 Mpx
        photo held its 108 MB whole twice over and took the server past its 1 GiB."""
        if self.data is None or side >= max(self.width, self.height):
            return shrunk(self.whole(), side)
        with DECODING, Image.open(io.BytesIO(self.data)) as image:
            image.thumbnail((side, side), Image.Resampling.BILINEAR)
            return _rgb(image)

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from `pixels` coordinates to the whole image's."""
        return self.width / self.pixels.shape[1], self.height / self.pixels.shape[0]


class HeldPixels:
    """Pixels of the decoded photos alive in this process (requests being read, photos waiting
    to be recorded for review): a photo gives its share back when it is garbage-collected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held = 0

    def take(self, pixels: int, limit: int, param: str) -> None:
        with self._lock:
            if self.held + pixels <= limit:
                self.held += pixels
                return
            held = self.held
        if pixels > limit:
            raise ApiError(
                413,
                f"these images need {pixels:,} pixels decoded at once; this server "
                f"holds at most {limit:,} (MODELPORT_PLATE_MAX_PIXELS_IN_FLIGHT). Send "
                "fewer or smaller images per request",
                code="too_many_pixels",
                param=param,
            )
        raise ApiError(
            413,
            f"these images need {pixels:,} pixels decoded, and requests in flight "
            f"hold {held:,} of this server's {limit:,}: retry after a second, or send "
            "smaller images",
            code="too_many_pixels_in_flight",
            param=param,
            headers={"Retry-After": "1"},
        )  # RFC 9110: a 413 that is temporary says when

    def give_back(self, pixels: int) -> None:
        with self._lock:
            self.held -= pixels


HELD = HeldPixels()  # one per serving process


def decode_photos(files: Sequence[bytes], settings: Settings, *, param: str = "upload") -> list[Photo]:
    """Every file of one request as a Photo, or an ApiError for the first that is not fine.
    CPU-bound: call it off the event loop."""
    images = [_open(data, settings, param) for data in files]
    total = sum(image.width * image.height for image in images)
    if total > settings.max_request_pixels:
        raise ApiError(
            413,
            f"the images sent add up to {total:,} pixels; the limit per request is "
            f"{settings.max_request_pixels:,}. Send fewer or smaller images",
            code="too_many_pixels",
            param=param,
        )
    side = _detector_side(settings)
    kept = [_kept_size(image.size, settings, side) for image in images]
    shares = [w * h for w, h in kept]
    HELD.take(sum(shares), settings.max_pixels_in_flight, param)
    photos: list[Photo] = []
    try:
        for image, data, share in zip(images, files, shares):
            with DECODING:
                photo = _decode(image, data, side if share < image.width * image.height else 0, param)
            weakref.finalize(photo, HELD.give_back, share)
            photos.append(photo)
    except BaseException:
        HELD.give_back(sum(shares[len(photos) :]))
        raise
    return photos


def _open(data: bytes, settings: Settings, param: str) -> Image.Image:
    """The image with only its header read, or an ApiError."""
    if not data:
        raise ApiError(
            400,
            f"`{param}` is empty (0 bytes): send the image file's contents",
            code="empty_image",
            param=param,
        )
    if len(data) > settings.max_image_bytes:
        raise ApiError(
            413,
            f"`{param}` is {len(data):,} bytes; the limit is "
            f"{settings.max_image_bytes:,}. Send a smaller or more compressed image",
            code="image_too_large",
            param=param,
        )
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise ApiError(
            415,
            f"`{param}` is not an image this service can read (first bytes: "
            f"{data[:8]!r}). Send one of: {', '.join(settings.allowed_formats)}",
            code="unsupported_image",
            param=param,
        ) from None
    if image.format not in settings.allowed_formats:
        raise ApiError(
            415,
            f"`{param}` is a {image.format} image; send one of: {', '.join(settings.allowed_formats)}",
            code="unsupported_image",
            param=param,
        )
    width, height = image.size
    if width * height > settings.max_pixels:
        raise ApiError(
            413,
            f"`{param}` is {width}x{height} = {width * height:,} pixels; the limit "
            f"is {settings.max_pixels:,}. Downscale it first",
            code="too_many_pixels",
            param=param,
        )
    return image


def _detector_side(settings: Settings) -> int:
    """The long side the detector reads a photo at, its retry size included."""
    return max(settings.detector_imgsz, settings.detector_retry_imgsz)


def _kept_size(size: tuple[int, int], settings: Settings, side: int) -> tuple[int, int]:
    """What a photo of `size` is kept at: whole, or scaled to `side` on its long side."""
    width, height = size
    if width * height <= settings.whole_image_max_pixels or max(size) <= side:
        return size
    scale = side / max(size)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode(image: Image.Image, data: bytes, side: int, param: str) -> Photo:
    """`side` 0: keep the whole image; else decode at (about) `side` on the long side."""
    try:
        if not side:
            pixels = _rgb(image)
            return Photo(pixels, pixels.shape[1], pixels.shape[0], hashlib.sha256(data).hexdigest())
        # thumbnail() uses JPEG draft mode and reduce() before its resize: the whole image
        # is never decoded for a JPEG, and not kept for the others.
        width, height = image.size[::-1] if _rotated(image) else image.size
        image.thumbnail((side, side), Image.Resampling.BILINEAR)
        return Photo(_rgb(image), width, height, hashlib.sha256(data).hexdigest(), data)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(
            400,
            f"`{param}` is a truncated or corrupt {image.format} file ({exc}); send the complete file",
            code="corrupt_image",
            param=param,
        ) from None


def shrunk(image: np.ndarray, long_side: int) -> np.ndarray:
    """`image` scaled down to `long_side` on its long side (as it is where that is not smaller)."""
    height, width = image.shape[:2]
    if long_side >= max(width, height):
        return image
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _rotated(image: Image.Image) -> bool:
    """Whether the EXIF orientation turns the image a quarter (width and height swap)."""
    return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)


def _rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8, upright; no more copies than needed (a 36 Mpx photo is 108 MB each)."""
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
