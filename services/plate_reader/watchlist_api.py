"""Watchlists over HTTP, mounted on the plate reader's /v1 app (admin keys only, when keys are on):

    GET    /v1/watchlists                       every list, with its tolerance and plate count
    POST   /v1/watchlists                       {"name": "stolen", "plates": ["AB12CDE", {"plate":
                                                 "KRW301", "note": "blue Golf", "tags": ["police"]}],
                                                 "lookalikes": true, "max_distance": 1,
                                                 "substitutions": false}
    GET    /v1/watchlists/{name}?limit=&after=  the list and a page of its plates (plate order)
    PUT    /v1/watchlists/{name}                the same body without "name": creates or replaces it whole
    PATCH  /v1/watchlists/{name}                {"max_distance": 0}: its tolerance
    DELETE /v1/watchlists/{name}
    POST   /v1/watchlists/{name}/plates         {"plates": [...]}: added (one already there is merged)
    DELETE /v1/watchlists/{name}/plates/{plate}

An upload is checked whole before anything is stored, and stored in one transaction. Storage and
matching: watchlists.py.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path as FastApiPath, Query
from pydantic import BaseModel, ConfigDict, Field

from services.core.api_errors import ApiError, ErrorBody, error_responses
from services.core.api_keys import role_at_least
from services.plate_reader import watchlists
from services.plate_reader.watchlist_match import MAX_DISTANCE, ListedPlate, Tolerance
from services.plate_reader.watchlist_store import (
    NAME,
    Summary,
    WatchlistStore,
    check_name,
    merge,
    normalise_plate,
    not_found,
)

logger = logging.getLogger("bentoml.modelport.watchlists")
# Lists say whom to watch for: admin keys only.
router = APIRouter(
    dependencies=[Depends(role_at_least("admin"))],
    tags=["watchlists"],
    responses=error_responses(400, 403, 404),
)  # + 401, 500, 503, 504
_EXISTS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "A watchlist of that name exists: PUT replaces it."}
}

Tag = Annotated[str, Field(min_length=1, max_length=64)]
# A list's name in a path: the pattern documented, checked by check_name (for its message) or
# simply not found.
ListName = Annotated[str, FastApiPath(json_schema_extra={"pattern": f"^{NAME.pattern}$"})]


class PlateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # `0` is not `false`
    plate: str = Field(max_length=64, description="letters and digits; spaces, '-' and '.' are dropped")
    note: str | None = Field(None, max_length=500)
    tags: list[Tag] = Field(default_factory=list, max_length=16)


Plates = list[Annotated[str, Field(max_length=64)] | PlateBody]


class ToleranceBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # `0` is not `false`
    lookalikes: bool = Field(True, description="O/0, I/1, Z/2, S/5, B/8, G/6 and Q/0 cost nothing")
    max_distance: int = Field(
        1, ge=0, le=MAX_DISTANCE, description="edits beyond look-alikes: a missing or extra character is 1"
    )
    substitutions: bool = Field(
        False, description="a wrong (not look-alike) character counts as one edit too"
    )


class ListBody(ToleranceBody):
    plates: Plates = Field(description="plates as text, or objects with a note and tags")


class NewListBody(ListBody):
    name: str = Field(
        max_length=64,
        description="A-Z a-z 0-9 _ - ., starting with a letter or digit",
        json_schema_extra={"pattern": f"^{NAME.pattern}$"},  # checked by check_name: its message
    )


class PatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # `0` is not `false`
    lookalikes: bool | None = None
    max_distance: int | None = Field(None, ge=0, le=MAX_DISTANCE)
    substitutions: bool | None = None


class PlatesBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # `0` is not `false`
    plates: Plates = Field(min_length=1)


def _store() -> WatchlistStore:
    try:
        return watchlists.watchlist_store()
    except Exception:
        logger.exception("the watchlists' database could not be opened")
        raise ApiError(
            503,
            "the watchlists' database is unreachable (see the server log); try again later",
            code="watchlists_unavailable",
            type="server_error",
        ) from None


def _checked(plates: Plates) -> tuple[list[ListedPlate], int]:
    """Every plate checked (a 400 names the first bad one) and duplicates merged, before any is stored."""
    return merge((p, None, ()) if isinstance(p, str) else (p.plate, p.note, p.tags) for p in plates)


def _tolerance(body: ToleranceBody) -> Tolerance:
    return Tolerance(body.lookalikes, body.max_distance, body.substitutions)


def _answer(summary: Summary, **extra: Any) -> dict[str, Any]:
    watchlists.changed()  # this process's next reading sees it; the others' within refresh_s
    return {**summary.to_json(), **extra}


@router.get("/watchlists")
def list_watchlists() -> dict[str, Any]:
    return {"data": [s.to_json() for s in _store().summaries()]}


@router.post("/watchlists", status_code=201, responses={**error_responses(413), **_EXISTS})
def create_watchlist(body: NewListBody) -> dict[str, Any]:
    check_name(body.name)
    plates, merged = _checked(body.plates)
    summary = _store().create(body.name, _tolerance(body), plates, replace=False)
    return _answer(summary, merged=merged)


@router.put("/watchlists/{name}", responses=error_responses(413))
def replace_watchlist(name: ListName, body: ListBody) -> dict[str, Any]:
    check_name(name)
    plates, merged = _checked(body.plates)
    summary = _store().create(name, _tolerance(body), plates, replace=True)
    return _answer(summary, merged=merged)


@router.get("/watchlists/{name}")
def get_watchlist(
    name: ListName,
    limit: int = Query(1000, ge=1, le=10_000),
    after: str = Query("", max_length=64, description="the last plate of the previous page"),
) -> dict[str, Any]:
    store = _store()
    summary = store.summary(name)
    if summary is None:
        raise not_found(name)
    page = store.plates(name, limit=limit, after=after)
    return {
        **summary.to_json(),
        "data": [{"plate": p.plate, "note": p.note, "tags": list(p.tags)} for p in page],
        "next_after": page[-1].plate if len(page) == limit else None,
    }


@router.patch("/watchlists/{name}")
def change_tolerance(name: ListName, body: PatchBody) -> dict[str, Any]:
    store = _store()
    summary = store.summary(name)
    if summary is None:
        raise not_found(name)
    old = summary.tolerance
    tolerance = Tolerance(
        old.lookalikes if body.lookalikes is None else body.lookalikes,
        old.max_distance if body.max_distance is None else body.max_distance,
        old.substitutions if body.substitutions is None else body.substitutions,
    )
    return _answer(store.set_tolerance(name, tolerance))


@router.delete("/watchlists/{name}")
def delete_watchlist(name: str) -> dict[str, Any]:
    _store().delete(name)
    watchlists.changed()
    return {"name": name, "deleted": True}


@router.post("/watchlists/{name}/plates", responses=error_responses(413))
def add_plates(name: ListName, body: PlatesBody) -> dict[str, Any]:
    plates, merged = _checked(body.plates)
    summary, already = _store().add(name, plates)
    return _answer(summary, added=len(plates) - already, merged=merged + already)


@router.delete("/watchlists/{name}/plates/{plate}")
def remove_plate(name: ListName, plate: str) -> dict[str, Any]:
    listed = normalise_plate(plate, "plate")
    return _answer(_store().remove_plate(name, listed), removed=listed)
