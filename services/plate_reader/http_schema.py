"""The plate reader's JSON response shape (as in commercial plate APIs) and its OpenAPI docs."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from services.plate_reader.settings import Settings
from services.plate_reader.types import PlateReading
from services.plate_reader.watchlists import watchlist_matches

# A form field is text: what snapshot_api reads as true or false (any case, 1/0, empty: false).
FORM_BOOLEAN = r"^\s*([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)?\s*$"


class BoxJSON(BaseModel):
    xmin: int
    ymin: int
    xmax: int
    ymax: int


class CandidateJSON(BaseModel):
    plate: str
    score: float = Field(
        description="how sure the reader is that this reading is exactly right, "
        "0-1: the same measure as the plate's score (the first "
        "candidate's is the plate's)"
    )


class RegionJSON(BaseModel):
    code: str | None = Field(
        description="Plate Recognizer region code of the plate format the "
        "reading fits (e.g. gb, fr, us-ca); null when it fits none"
    )
    score: float = Field(description="1/n when the reading fits the formats of n regions, 0 for none")


class VehicleJSON(BaseModel):
    type: str = Field(description='always "Unknown": modelport has no vehicle model')
    score: float = Field(description="always 0")
    box: BoxJSON = Field(description='always all zeros (Plate Recognizer\'s "no vehicle found")')


class UsageJSON(BaseModel):
    calls: int = Field(description="calls this calendar month (UTC)")
    max_calls: int = Field(description="the monthly quota; 2147483647 when there is none")


class WatchlistMatchJSON(BaseModel):
    list: str = Field(description="the watchlist's name")
    plate: str = Field(description="the listed plate")
    distance: int = Field(description="edits between it and `matched` (look-alikes such as O/0 cost 0)")
    matched: str = Field(description="the reading's text that matched: `plate` or one of its candidates")
    note: str | None
    tags: builtins.list[str]  # `list` is a field here


class PlateJSON(BaseModel):
    plate: str = Field(description="best reading, A-Z0-9 (a-z0-9 on /plate-reader/)")
    score: float = Field(description="confidence of the reading, 0-1")
    dscore: float = Field(description="detector confidence that the box is a plate, 0-1")
    box: BoxJSON
    candidates: list[CandidateJSON] = Field(description="ranked readings, best first")
    review: bool = Field(description="true when score is below the review threshold")
    region: RegionJSON
    vehicle: VehicleJSON
    watchlist: list[WatchlistMatchJSON] = Field(
        description="listed plates this reading or one of its candidates matches, closest first "
        "(/v1/watchlists)"
    )


class PlateReaderJSON(BaseModel):
    filename: str
    processing_time: float = Field(description="milliseconds spent reading (batch wait included)")
    version: int = Field(description="response version, 1 (Plate Recognizer's)")
    camera_id: str | None = Field(description="the request's camera_id")
    timestamp: str = Field(description="the request's timestamp, else when it arrived: ISO 8601, UTC")
    results: list[PlateJSON]
    usage: UsageJSON
    warnings: list[str] = Field(description="request options accepted but not applied, and why")


class StatisticsUsageJSON(UsageJSON):
    month: int
    year: int
    resets_on: str = Field(description="when calls start again from 0: ISO 8601, UTC")


class StatisticsJSON(BaseModel):
    usage: StatisticsUsageJSON
    total_calls: int = Field(description="the monthly quota, as Plate Recognizer reports it")


def to_json(filename: str, readings: Sequence[PlateReading], processing_ms: float) -> dict[str, Any]:
    return {
        "filename": filename,
        "processing_time": round(processing_ms, 2),
        "results": [
            {
                "plate": r.plate,
                "score": r.score,
                "dscore": r.dscore,
                "box": {"xmin": r.box.xmin, "ymin": r.box.ymin, "xmax": r.box.xmax, "ymax": r.box.ymax},
                # Each candidate's confidence, the plate's `score` measure (candidates are
                # ranked by the format-adjusted mean, which orders them, but means less).
                "candidates": [{"plate": c.plate, "score": round(c.confidence, 4)} for c in r.candidates],
                "review": r.review,
                "watchlist": watchlist_matches(r.plate, [c.plate for c in r.candidates]),
            }
            for r in readings
        ],
    }


_OPTIONS: dict[str, dict[str, Any]] = {
    "regions": {
        "type": "array",
        "items": {"type": "string"},
        "description": 'plate formats to prefer, e.g. ["uk"] (see plate_formats.yaml)',
    },
    "min_score": {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "description": "detector confidence threshold (default 0.25)",
    },
    "review_threshold": {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "description": "readings less sure than this get review: true (default "
        f"{Settings.review_threshold}: see the README for what each "
        "value gives)",
    },
    # Plate Recognizer's fields (README, "Plate Recognizer clients")
    "camera_id": {"type": "string", "maxLength": 200, "description": "echoed in the response"},
    "timestamp": {
        "type": "string",
        "anyOf": [{"format": "date-time"}, {"maxLength": 0}],
        "description": "when the photo was taken, ISO 8601 (UTC if no offset); empty: "
        "when the request arrived",
    },
    "mmc": {"type": "boolean", "description": "accepted; no make/model/colour model here"},
    "config": {
        "type": "string",
        "description": "a JSON object: threshold_d (detector), "
        "threshold_o (drop readings below), region "
        '"strict", mode "fast"',
    },
}
_UPLOAD_URL = {
    "type": "string",
    "format": "uri",
    "description": "instead of `upload`: an https URL of the image, on a host the "
    "operator listed (MODELPORT_PLATE_UPLOAD_URL_HOSTS)",
}


def openapi_request(settings: Any) -> dict[str, Any]:
    """The request body for the /v1/docs page and generated clients. The route reads the body
    itself (one route, two content types), so FastAPI cannot infer it. It says what the server
    requires: an image (`upload`, or `image`/`images` in JSON), 1 to `max_images` of them, or,
    only where this server enables it, `upload_url` instead (never both)."""
    images = {"minItems": 1, "maxItems": settings.max_images}
    multipart: dict[str, Any] = {
        "type": "object",
        "required": ["upload"],
        "properties": {
            "upload": {
                "type": "array",
                **images,
                "items": {"type": "string", "format": "binary"},
                "description": "one or more images (JPEG, PNG, WebP, BMP): "
                "files, or text fields holding base64",
            },
            **_OPTIONS,
            "mmc": {"type": "string", "pattern": FORM_BOOLEAN, "description": _OPTIONS["mmc"]["description"]},
        },
    }
    json_body: dict[str, Any] = {
        "type": "object",
        "properties": {
            "image": {"type": "string", "format": "byte", "description": "the image file, base64"},
            "images": {
                "type": "array",
                **images,
                "items": {"type": "string", "format": "byte"},
                "description": "several image files, base64 (instead of `image`)",
            },
            **_OPTIONS,
        },
        "anyOf": [{"required": ["image"]}, {"required": ["images"]}],
    }
    if settings.upload_url_hosts:  # else `upload_url` is a 400 here: not offered
        for schema, image_fields in ((multipart, ["upload"]), (json_body, ["image", "images"])):
            schema["properties"]["upload_url"] = _UPLOAD_URL
            schema.pop("required", None)
            schema.pop("anyOf", None)
            schema["oneOf"] = [*({"required": [f]} for f in image_fields), {"required": ["upload_url"]}]
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": multipart},
                "application/json": {"schema": json_body},
            },
        }
    }
