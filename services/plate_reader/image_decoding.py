"""Decode uploaded image bytes safely, or say exactly what is wrong with them.

Checks run cheapest first: size, then the header (format, pixel count), and only then the
full decode, so a decompression bomb is refused before it costs memory.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.core.api_errors import ApiError
from services.plate_reader.settings import Settings


def decode_image(data: bytes, settings: Settings, *, param: str = "upload") -> np.ndarray:
    """Return the image as an RGB uint8 array (EXIF rotation applied), or raise ApiError."""
    if not data:
        raise ApiError(400, f"`{param}` is empty (0 bytes): send the image file's contents",
                       code="empty_image", param=param)
    if len(data) > settings.max_image_bytes:
        raise ApiError(413, f"`{param}` is {len(data):,} bytes; the limit is "
                       f"{settings.max_image_bytes:,}. Send a smaller or more compressed image",
                       code="image_too_large", param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        image = None
    except OSError:
        image = None
    if image is None:
        raise ApiError(415, f"`{param}` is not an image this service can read (first bytes: "
                       f"{data[:8]!r}). Send one of: {', '.join(settings.allowed_formats)}",
                       code="unsupported_image", param=param)
    if image.format not in settings.allowed_formats:
        raise ApiError(415, f"`{param}` is a {image.format} image; send one of: "
                       f"{', '.join(settings.allowed_formats)}", code="unsupported_image", param=param)
    width, height = image.size
    if width * height > settings.max_pixels:
        raise ApiError(413, f"`{param}` is {width}x{height} = {width * height:,} pixels; the limit "
                       f"is {settings.max_pixels:,}. Downscale it first",
                       code="too_many_pixels", param=param)
    try:
        image.load()
        image = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(400, f"`{param}` is a truncated or corrupt {image.format} file ({exc}); "
                       "send the complete file", code="corrupt_image", param=param) from None
    return np.asarray(image)
