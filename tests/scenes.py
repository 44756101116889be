"""Test scenes: a REAL plate crop pasted onto a REAL street photo at a known box.

No photo with a readable plate ships in a package we can use here, so the scene tests
build one: fast-plate-ocr's "AD 799 KB" crop, scaled 2x, on Ultralytics' bus.jpg.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from tests.assets import asset


@dataclass(frozen=True)
class Scene:
    jpeg: bytes
    plate: str
    box: tuple[int, int, int, int]  # where the plate was pasted: xmin, ymin, xmax, ymax
    size: tuple[int, int]


# Real plate crops (fast-plate-ocr's tests) and their text. PP-OCRv4 reads KRW 301's W as N
# with a weak character: the hard one.
PLATES = {"plate_ad799kb": "AD799KB", "plate_krw301": "KRW301"}


def plate_on_street(
    *,
    at: tuple[int, int] = (300, 700),
    scale: float = 2.0,
    canvas: tuple[int, int] | None = None,
    plate_asset: str = "plate_ad799kb",
) -> Scene:
    return street_with_plates([(plate_asset, at, scale)], canvas=canvas)


def street_with_plates(
    placements: list[tuple[str, tuple[int, int], float]], *, canvas: tuple[int, int] | None = (1280, 720)
) -> Scene:
    """Real plate crops on the street photo (resized to `canvas`; None: as it is): (crop asset,
    top-left, scale) each. The Scene's `plate` is the first one's text and `box` its box."""
    street = Image.open(asset("bus")).convert("RGB")
    if canvas is not None:
        street = street.resize(canvas)
    boxes = []
    for plate_asset, at, scale in placements:
        plate = Image.open(asset(plate_asset)).convert("RGB")
        plate = plate.resize((round(plate.width * scale), round(plate.height * scale)))
        street.paste(plate, at)
        boxes.append((at[0], at[1], at[0] + plate.width, at[1] + plate.height))
    out = io.BytesIO()
    street.save(out, format="JPEG", quality=92)
    return Scene(out.getvalue(), PLATES[placements[0][0]], boxes[0], street.size)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0
