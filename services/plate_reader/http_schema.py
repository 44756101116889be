"""The plate reader's JSON response shape (as in commercial plate APIs) and its OpenAPI docs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from services.plate_reader.types import PlateReading


class BoxJSON(BaseModel):
    xmin: int
    ymin: int
    xmax: int
    ymax: int


class CandidateJSON(BaseModel):
    plate: str
    score: float


class PlateJSON(BaseModel):
    plate: str = Field(description="best reading, A-Z0-9")
    score: float = Field(description="confidence of the reading, 0-1")
    dscore: float = Field(description="detector confidence that the box is a plate, 0-1")
    box: BoxJSON
    candidates: list[CandidateJSON] = Field(description="ranked readings, best first")
    review: bool = Field(description="true when score is below the review threshold")


class PlateReaderJSON(BaseModel):
    filename: str
    processing_time: float = Field(description="milliseconds spent reading (batch wait included)")
    results: list[PlateJSON]


def to_json(filename: str, readings: Sequence[PlateReading], processing_ms: float) -> dict[str, Any]:
    return {
        "filename": filename,
        "processing_time": round(processing_ms, 2),
        "results": [
            {
                "plate": r.plate, "score": r.score, "dscore": r.dscore,
                "box": {"xmin": r.box.xmin, "ymin": r.box.ymin, "xmax": r.box.xmax, "ymax": r.box.ymax},
                "candidates": [{"plate": c.plate, "score": round(c.score, 4)} for c in r.candidates],
                "review": r.review,
            }
            for r in readings
        ],
    }


_OPTIONS = {
    "regions": {"type": "array", "items": {"type": "string"},
                "description": "plate formats to prefer, e.g. [\"uk\"] (see plate_formats.yaml)"},
    "min_score": {"type": "number", "minimum": 0, "maximum": 1,
                  "description": "detector confidence threshold (default 0.25)"},
    "review_threshold": {"type": "number", "minimum": 0, "maximum": 1,
                         "description": "readings less sure than this get review: true (default "
                                        "0.95: see the README for what each value gives)"},
}
# The route reads the body itself (one route, two content types), so FastAPI cannot infer
# the request schema: spell it out for the /v1/docs page.
OPENAPI_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["upload"],
                "properties": {"upload": {"type": "array", "items": {"type": "string", "format": "binary"},
                                          "description": "one or more images (JPEG, PNG, WebP, BMP)"},
                               **_OPTIONS},
            }},
            "application/json": {"schema": {
                "type": "object",
                "properties": {"image": {"type": "string", "format": "byte",
                                         "description": "the image file, base64"},
                               "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
                               **_OPTIONS},
            }},
        },
    }
}
