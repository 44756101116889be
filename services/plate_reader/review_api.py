"""The review queue over HTTP, mounted on the plate reader's /v1 app:

    GET  /v1/reviews?status=pending&camera_id=&limit=20&cursor=   oldest first
    GET  /v1/reviews/{id}            GET /v1/reviews/{id}/crop     GET /v1/reviews/{id}/photo
    POST /v1/reviews/{id}            {"plate": "AB12CDE"} | {"not_a_plate": true} | {"skip": true},
                                     optional "box"

With API keys on, every route needs a key with the reviewer role. Photos are recorded by
`review_recorder.ReviewRecorder`, after their answer.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Literal

import bentoml
from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import JsonDict

from services.core.api_errors import ApiError, error_responses
from services.core.api_keys import role_at_least
from services.core.json_numbers import JsonInt
from services.plate_reader.plate_text import normalise
from services.plate_reader.review_store import (
    Decision,
    ReviewItem,
    ReviewSettings,
    ReviewStore,
    decode_cursor,
)

logger = logging.getLogger("bentoml.modelport.reviews")
# With API keys on, the queue holds personal data: reviewer keys (or admin) only.
router = APIRouter(
    dependencies=[Depends(role_at_least("reviewer"))], responses=error_responses(400, 403, 404)
)  # + 401, 500, 503, 504

RECORD_FAILURES = bentoml.metrics.Counter(
    name="modelport_review_record_failures", documentation="Readings that could not be recorded for review"
)
PENDING = bentoml.metrics.Gauge(
    name="modelport_reviews_pending", documentation="Review items waiting for a person"
)
# A time, not an age: the gauge is set only when the queue changes, and an age set then would
# stand still while the item waits; the alert rule takes time() - this (0: nothing pending).
OLDEST_PENDING_SINCE = bentoml.metrics.Gauge(
    name="modelport_reviews_oldest_pending_timestamp_seconds",
    multiprocess_mode="livemax",
    documentation="When the oldest pending review item was recorded (Unix time; 0 when none is pending)",
)
DECISIONS = bentoml.metrics.Counter(
    name="modelport_review_decisions", documentation="Review decisions made", labelnames=["decision"]
)


@functools.cache
def review_store() -> ReviewStore | None:
    """This process's store, or None when recording is off (MODELPORT_REVIEW_STORE=off)."""
    settings = ReviewSettings.from_env()
    if not settings.enabled:
        return None
    store = ReviewStore.from_settings(settings)
    refresh_gauges(store)  # after a restart, items already waiting show on /metrics at once
    return store


def review_store_or_none() -> ReviewStore | None:
    try:
        return review_store()
    except Exception:
        RECORD_FAILURES.inc()
        logger.exception("the review store could not be opened")
        return None


def refresh_gauges(store: ReviewStore) -> None:
    stats = store.stats()
    PENDING.set(stats["pending"])
    age = stats["oldest_pending_seconds"]
    OLDEST_PENDING_SINCE.set(time.time() - age if stats["pending"] else 0.0)


MAX_PIXEL = 1_000_000  # a coordinate in a photo: far above any the reader takes


class Box(BaseModel):  # pixels; what the schema says and no more (`false` is not a 0)
    model_config = ConfigDict(extra="forbid")
    xmin: JsonInt = Field(ge=0, le=MAX_PIXEL)
    ymin: JsonInt = Field(ge=0, le=MAX_PIXEL)
    xmax: JsonInt = Field(ge=0, le=MAX_PIXEL)
    ymax: JsonInt = Field(ge=0, le=MAX_PIXEL)


# The validator below, as OpenAPI says it (schemathesis checks that a body the schema allows is
# accepted): exactly one decision; a plate with a letter or digit, ASCII or full-width.
PLATE_TEXT = "[0-9A-Za-z\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]"
ONE_DECISION: JsonDict = {
    "oneOf": [
        {
            "required": ["plate"],
            "properties": {
                "plate": {"type": "string"},
                "not_a_plate": {"const": False},
                "skip": {"const": False},
            },
        },
        {
            "required": ["not_a_plate"],
            "properties": {
                "not_a_plate": {"const": True},
                "plate": {"type": "null"},
                "skip": {"const": False},
            },
        },
        {
            "required": ["skip"],
            "properties": {
                "skip": {"const": True},
                "plate": {"type": "null"},
                "not_a_plate": {"const": False},
            },
        },
    ]
}


class DecisionBody(BaseModel):
    """One of `plate`, `not_a_plate: true` or `skip: true`; `box` corrects the plate's box."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=ONE_DECISION)
    plate: str | None = Field(
        default=None, min_length=1, max_length=32, json_schema_extra={"pattern": PLATE_TEXT}
    )
    not_a_plate: bool = False
    skip: bool = False
    box: Box | None = None

    @model_validator(mode="after")
    def _one_decision(self) -> DecisionBody:
        if sum((self.plate is not None, self.not_a_plate, self.skip)) != 1:
            raise ValueError(
                'send exactly one of {"plate": "AB12CDE"}, {"not_a_plate": true}, {"skip": true}'
            )
        if self.plate is not None and not normalise(self.plate):
            raise ValueError("`plate` needs letters or digits (A-Z, 0-9)")
        return self


def _store() -> ReviewStore:
    store = review_store_or_none()
    if store is None:
        raise ApiError(
            404,
            "the review queue is off on this server (MODELPORT_REVIEW_STORE=off) "
            "or its database is unreachable (see the server log)",
            code="reviews_off",
        )
    return store


def _item(store: ReviewStore, item_id: str) -> ReviewItem:
    item = store.get(item_id)
    if item is None:
        raise ApiError(
            404,
            f"no review item {item_id!r}: ids come from GET /v1/reviews",
            code="review_not_found",
            param="id",
        )
    return item


@router.get("/reviews", tags=["reviews"])
def list_reviews(
    status: Literal["pending", "done"] | None = Query(None),
    camera_id: str | None = Query(None, max_length=200),
    limit: int = Query(20, ge=1, le=200),
    cursor: str | None = Query(None),
) -> dict[str, Any]:
    store = _store()
    if cursor:
        try:
            decode_cursor(cursor)
        except ValueError:
            raise ApiError(
                400,
                "`cursor` is not one this server gave: use `next_cursor` from the previous page",
                code="invalid_cursor",
                param="cursor",
            ) from None
    items, next_cursor = store.list(status=status, camera_id=camera_id, limit=limit, cursor=cursor)
    return {"data": [item.to_json() for item in items], "next_cursor": next_cursor}


@router.get("/reviews/{item_id}", tags=["reviews"])
def get_review(item_id: str) -> dict[str, Any]:
    return _item(_store(), item_id).to_json()


@router.get("/reviews/{item_id}/{which}", tags=["reviews"], response_class=FileResponse)
def review_image(item_id: str, which: Literal["crop", "photo"]) -> FileResponse:
    store = _store()
    path = store.image(_item(store, item_id), which)
    if not path.is_file():  # an item kept as text only has no path: the images folder itself
        raise ApiError(
            404,
            f"the {which} of {item_id!r} is gone (purged, the images folder moved, or recorded "
            "with MODELPORT_PLATE_STORE_IMAGES=off)",
            code="image_missing",
        )
    return FileResponse(path, media_type="image/jpeg")


def _check_box(store: ReviewStore, item: ReviewItem, box: Box) -> None:
    """A corrected box must be a box inside the item's photo: it becomes detector training data
    (`reviews export`), where one box outside its image fails the whole dataset. The schema can
    only bound each number; this is the check it cannot state."""
    if not (box.xmin < box.xmax and box.ymin < box.ymax):
        raise ApiError(
            400,
            f"`box` needs xmin < xmax and ymin < ymax (got {box.model_dump()})",
            code="invalid_box",
            param="box",
        )
    photo = store.image(item, "photo")
    if photo.is_file():
        with Image.open(photo) as image:  # reads the header only
            width, height = image.size
        if box.xmax > width or box.ymax > height:
            raise ApiError(
                400,
                f"`box` {box.model_dump()} is not inside the {width}x{height} photo: "
                "give pixels of the photo (GET /v1/reviews/{id}/photo)",
                code="invalid_box",
                param="box",
            )


@router.post("/reviews/{item_id}", tags=["reviews"], responses=error_responses(400, 429))  # admitted
def decide_review(item_id: str, body: DecisionBody) -> dict[str, Any]:
    store = _store()
    if body.box is not None:
        _check_box(store, _item(store, item_id), body.box)
    decision = Decision(
        plate=normalise(body.plate) if body.plate else None,
        not_a_plate=body.not_a_plate,
        skip=body.skip,
        box=body.box.model_dump() if body.box else None,
    )
    item = store.decide(_item(store, item_id).id, decision)
    assert item is not None and item.decision is not None
    DECISIONS.labels(decision=item.decision).inc()
    refresh_gauges(store)
    return item.to_json()
