"""Draw plate boxes and readings onto a copy of the photo (the caller's array is untouched)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from services.core.api_errors import ApiError
from services.plate_reader.types import PlateReading

OK_COLOUR = (40, 200, 80)
REVIEW_COLOUR = (250, 170, 20)  # orange: a human should check this reading
JPEG_MAX_SIDE = 65_500  # libjpeg cannot write a wider or taller image
# Labels scale with the photo (1/40 of its long side), up to this: an 8000 px photo's. FreeType
# refuses sizes near 65,000 ("invalid argument"), which a 1x2,600,000 image asked for.
MAX_FONT_SIZE = 200


def check_drawable(width: int, height: int) -> None:
    """ApiError (413) for an image the annotated JPEG cannot hold."""
    if max(width, height) > JPEG_MAX_SIDE:
        raise ApiError(
            413,
            f"the annotated answer is a JPEG, whose sides stop at {JPEG_MAX_SIDE:,} "
            f"px, and this image is {width}x{height}: read its plates with "
            "/v1/plate-reader, or send it downscaled",
            code="too_large_to_annotate",
            param="upload",
        )


def annotate(image: np.ndarray, readings: Sequence[PlateReading], *, quality: int = 90) -> bytes:
    """JPEG bytes of `image` with each plate's box, text and score drawn on it."""
    canvas = Image.fromarray(image).copy()
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(max(canvas.size) / 400))
    font = ImageFont.load_default(size=min(MAX_FONT_SIZE, max(14, round(max(canvas.size) / 40))))  # bundled
    for reading in readings:
        box = reading.box
        colour = REVIEW_COLOUR if reading.review else OK_COLOUR
        draw.rectangle((box.xmin, box.ymin, box.xmax, box.ymax), outline=colour, width=line)
        label = f"{reading.plate} {reading.score:.2f}" + (" ?" if reading.review else "")
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        y = box.ymin - (bottom - top) - 2 * line if box.ymin > (bottom - top) + 2 * line else box.ymax
        draw.rectangle(
            (box.xmin, y, box.xmin + right - left + 2 * line, y + bottom - top + 2 * line), fill=colour
        )
        draw.text((box.xmin + line, y + line - top), label, fill=(0, 0, 0), font=font)
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=quality)
    return out.getvalue()
