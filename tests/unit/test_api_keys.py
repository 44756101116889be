"""API keys: the keys file, the Authorization header, 401, roles, the call counts in the
database (SQLite; PostgreSQL too where its server is installed) with quotas, and the middleware
on a small FastAPI app called through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from services.core import api_errors
from services.core.api_errors import ApiError
from services.core.api_keys import (
    ApiKey,
    ApiKeyMiddleware,
    KeyRing,
    check,
    digest,
    log_mode,
    parse_keys_file,
    quota_reached,
    role_at_least,
    token_from,
    usage_of,
)
from services.core.local_db import data_dir
from services.core.usage import CallCounts, next_month_start, this_month
from tests.postgres import postgres_server

READER = "reader-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"


def sqlite_counts(folder: Path) -> CallCounts:
    return CallCounts(f"sqlite:///{folder / 'modelport.sqlite3'}")


@pytest.fixture()
def counts(tmp_path: Path) -> CallCounts:
    return sqlite_counts(tmp_path)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def test_keys_file_reads_roles_quotas_and_comments() -> None:
    text = f"""
    # production keys
    {READER}
    {ADMIN} admin            # ops
    quota-key-0123456789abcd reviewer 1000
    quota-only-0123456789abc 50
    """
    keys = parse_keys_file(text)
    assert [(k.role, k.monthly_quota) for k in keys] == [
        ("reader", None),
        ("admin", None),
        ("reviewer", 1000),
        ("reader", 50),
    ]
    assert keys[0].digest == digest(READER) and len(keys[0].id) == 12


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (f"{READER} writer", "role 'writer' is not one of reader, reviewer, admin"),
        (f"{READER} reader 0", "quota must be a whole number >= 1"),
        (f"{READER} reader ten", "quota must be a whole number >= 1"),
        (f"{READER} reader 5 extra", "expected KEY [ROLE] [MONTHLY QUOTA]"),
        ("short admin", "shorter than 16 characters"),
    ],
)
def test_a_bad_line_names_its_number_and_never_the_key(line: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="line 2") as error:
        parse_keys_file(f"# first line\n{line}", "keys")
    assert complaint in str(error.value) and READER not in str(error.value)


def test_environment_and_file_keys_together_and_no_duplicates(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{ADMIN} admin 10\n")
    ring = KeyRing.from_settings((READER,), str(keys_file))
    assert not ring.open and [k.role for k in ring.keys] == ["reader", "admin"]
    assert ring.find(ADMIN).monthly_quota == 10
    assert ring.find(READER + "x") is None and ring.find("") is None
    assert KeyRing.from_settings(()).open
    keys_file.write_text(f"{READER}\n")
    with pytest.raises(ValueError, match="listed twice"):
        KeyRing.from_settings((READER,), str(keys_file))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {READER}", READER),
        (f"Token {READER}", READER),
        (f"bearer   {READER} ", READER),
        (f"TOKEN {READER}", READER),
        (READER, None),
        (f"Basic {READER}", None),
        ("Bearer ", None),
        (None, None),
        ("", None),
    ],
)
def test_token_from_the_authorization_header(header: str | None, token: str | None) -> None:
    assert token_from(header) == token


def test_check_says_401_without_a_valid_key() -> None:
    ring = KeyRing([ApiKey(digest(READER))])
    assert check(ring, f"Bearer {READER}").role == "reader"
    for header, code in (
        (None, "missing_api_key"),
        (f"Bearer {ADMIN}", "invalid_api_key"),
        (READER, "invalid_api_key"),
    ):
        with pytest.raises(ApiError) as refused:
            check(ring, header)
        assert (refused.value.status, refused.value.code) == (401, code)
        assert refused.value.headers == {"WWW-Authenticate": 'Bearer realm="modelport"'}
        assert "Authorization: Bearer KEY" in refused.value.message


def test_quota_reached_says_when_the_month_ends() -> None:
    refusal = quota_reached(
        ApiKey(digest(READER), monthly_quota=2), datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    )
    assert (refusal.status, refusal.code) == (429, "quota_exceeded")
    assert "quota of 2 calls" in refusal.message and "2027-01-01" in refusal.message
    assert refusal.headers == {"Retry-After": str(3600 + 1)}
    assert next_month_start(datetime(2026, 3, 15, tzinfo=UTC)) == datetime(2026, 4, 1, tzinfo=UTC)


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_calls_are_reserved_up_to_the_quota_refunded_and_kept(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'modelport.sqlite3'}"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    key = f"key-{tmp_path.name}"[:16]  # a fresh key on a shared server
    first = CallCounts(url)
    assert [first.reserve(key, quota=3) for _ in range(4)] == [1, 2, 3, None]
    first.refund(key, this_month())  # the call was not answered after all
    assert first.reserve(key, quota=3) == 3 and first.reserve(key, quota=3) is None
    assert first.reserve(key, month="2026-01") == 1  # no quota: counted anyway
    first.engine.dispose()
    again = CallCounts(url)  # e.g. after a restart
    assert again.calls(key) == 3 and again.calls(key, "2026-01") == 1 and again.total(key) == 4
    assert again.calls("nobody") == 0


def test_data_dir_is_the_setting_else_the_users_data_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert data_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir().name == "modelport"


def keyed_app(counts: CallCounts) -> FastAPI:
    app = FastAPI()
    api_errors.install(app)

    @app.post("/work")
    async def work(request: Request) -> dict[str, object]:
        usage = usage_of(request)
        return {"role": request.state.api_key.role, "calls": usage.calls if usage else None}

    @app.post("/fails")
    async def fails() -> None:
        raise ApiError(400, "no", code="bad")

    @app.get("/admin-only", dependencies=[Depends(role_at_least("admin"))])
    async def admin_only(request: Request) -> dict[str, object]:
        usage = usage_of(request)
        return {"calls": usage.calls if usage else None}

    ring = KeyRing([ApiKey(digest(READER), monthly_quota=2), ApiKey(digest(ADMIN), "admin")])
    app.add_middleware(ApiKeyMiddleware, keys=ring, counts=counts)
    return app


def call(app: FastAPI, method: str, path: str, key: str | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(go())


def test_middleware_checks_keys_but_not_docs_and_counts_answered_posts(counts: CallCounts) -> None:
    app = keyed_app(counts)
    refused = call(app, "POST", "/work")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
    assert call(app, "GET", "/docs").status_code == 200
    assert call(app, "GET", "/openapi.json").status_code == 200
    assert call(app, "POST", "/work", ADMIN).json() == {"role": "admin", "calls": 1}
    assert call(app, "POST", "/work", READER).json() == {"role": "reader", "calls": 1}
    assert call(app, "POST", "/fails", READER).status_code == 400  # refunded: not a call
    assert call(app, "GET", "/work", READER).status_code == 405  # a GET is never counted
    assert call(app, "POST", "/work", READER).json() == {"role": "reader", "calls": 2}
    over = call(app, "POST", "/work", READER)
    assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"
    assert counts.calls(ApiKey(digest(READER)).id) == 2 and counts.calls(ApiKey(digest(ADMIN)).id) == 1


def test_roles_rank_reader_reviewer_admin(counts: CallCounts) -> None:
    app = keyed_app(counts)
    refused = call(app, "GET", "/admin-only", READER)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_role"
    assert call(app, "GET", "/admin-only", ADMIN).json() == {"calls": 0}  # read, not counted


def test_calls_go_uncounted_rather_than_refused_when_the_database_is_down(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the database's folder should be")
    app = keyed_app(sqlite_counts(blocked))
    assert call(app, "POST", "/work", READER).json() == {"role": "reader", "calls": None}


def test_the_start_up_line_says_whether_the_api_is_open(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bentoml.modelport"):
        log_mode(KeyRing([]), metrics_keyed=False)
        log_mode(KeyRing([ApiKey(digest(READER)), ApiKey(digest(ADMIN), "admin")]), metrics_keyed=True)
    assert "the API is open to anyone" in caplog.records[0].getMessage()
    assert caplog.records[1].getMessage() == "API keys: 2 accepted (1 reader, 1 admin); /metrics needs a key"
    assert READER not in caplog.text and ADMIN not in caplog.text
