"""API keys: the keys file, the Authorization header, 401 and quota 429, the call counts on
disk, and the middleware on a small FastAPI app called through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from services.core import api_errors
from services.core.api_errors import ApiError
from services.core.api_keys import (ApiKey, ApiKeyMiddleware, KeyRing, check, digest, log_mode,
                                    parse_keys_file, token_from)
from services.core.local_db import LocalDatabase, data_dir
from services.core.usage import CallCounts, next_month_start

READER = "reader-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"


@pytest.fixture()
def counts(tmp_path: Path) -> CallCounts:
    return CallCounts(LocalDatabase.open(str(tmp_path)))


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
        ("reader", None), ("admin", None), ("reviewer", 1000), ("reader", 50)]
    assert keys[0].digest == digest(READER) and len(keys[0].id) == 12


@pytest.mark.parametrize(("line", "complaint"), [
    (f"{READER} writer", "role 'writer' is not one of reader, reviewer, admin"),
    (f"{READER} reader 0", "quota must be a whole number >= 1"),
    (f"{READER} reader ten", "quota must be a whole number >= 1"),
    (f"{READER} reader 5 extra", "expected KEY [ROLE] [MONTHLY QUOTA]"),
    ("short admin", "shorter than 16 characters"),
])
def test_a_bad_line_names_its_number_and_never_the_key(line: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="line 2") as error:
        parse_keys_file(f"# first line\n{line}", "keys")
    assert complaint in str(error.value) and READER not in str(error.value)


def test_environment_and_file_keys_together_and_no_duplicates(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{ADMIN} admin 10\n")
    ring = KeyRing.from_settings((READER,), str(keys_file))
    assert not ring.open and [k.role for k in ring.keys] == ["reader", "admin"]
    assert ring.find(ADMIN).monthly_quota == 10  # type: ignore[union-attr]
    assert ring.find(READER + "x") is None and ring.find("") is None
    assert KeyRing.from_settings(()).open
    keys_file.write_text(f"{READER}\n")
    with pytest.raises(ValueError, match="listed twice"):
        KeyRing.from_settings((READER,), str(keys_file))


@pytest.mark.parametrize(("header", "token"), [
    (f"Bearer {READER}", READER), (f"Token {READER}", READER), (f"bearer   {READER} ", READER),
    (f"TOKEN {READER}", READER), (READER, None), (f"Basic {READER}", None), ("Bearer ", None),
    (None, None), ("", None),
])
def test_token_from_the_authorization_header(header: str | None, token: str | None) -> None:
    assert token_from(header) == token


def test_check_says_401_without_a_valid_key() -> None:
    ring = KeyRing([ApiKey(digest(READER))])
    assert check(ring, f"Bearer {READER}", None).role == "reader"
    for header, code in ((None, "missing_api_key"), (f"Bearer {ADMIN}", "invalid_api_key"),
                         (READER, "invalid_api_key")):
        with pytest.raises(ApiError) as refused:
            check(ring, header, None)
        assert (refused.value.status, refused.value.code) == (401, code)
        assert refused.value.headers == {"WWW-Authenticate": 'Bearer realm="modelport"'}
        assert "Authorization: Bearer KEY" in refused.value.message


def test_quota_reached_is_429_until_the_month_ends(counts: CallCounts) -> None:
    key = ApiKey(digest(READER), monthly_quota=2)
    ring = KeyRing([key])
    now = datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc)
    for _ in range(2):
        check(ring, f"Token {READER}", counts, now)
        counts.record(key.id)
    with pytest.raises(ApiError) as refused:
        check(ring, f"Token {READER}", counts, now)
    assert (refused.value.status, refused.value.code) == (429, "quota_exceeded")
    assert "quota of 2 calls" in refused.value.message and "2027-01-01" in refused.value.message
    assert refused.value.headers == {"Retry-After": str(3600 + 1)}
    assert next_month_start(datetime(2026, 3, 15, tzinfo=timezone.utc)) == datetime(2026, 4, 1, tzinfo=timezone.utc)


def test_call_counts_persist_per_key_and_month(tmp_path: Path) -> None:
    first = CallCounts(LocalDatabase.open(str(tmp_path)))
    assert [first.record("abc") for _ in range(3)] == [1, 2, 3]
    first.record("abc", month="2026-01")
    first.record("def")
    first.db.close()
    again = CallCounts(LocalDatabase.open(str(tmp_path)))  # e.g. after a restart
    assert again.calls("abc") == 3 and again.calls("abc", "2026-01") == 1
    assert again.total("abc") == 4 and again.calls("def") == 1 and again.calls("nobody") == 0


def test_data_dir_is_the_setting_else_the_users_data_folder(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    assert data_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir().name == "modelport"


def keyed_app(counts: CallCounts) -> FastAPI:
    app = FastAPI()
    api_errors.install(app)

    @app.post("/work")
    async def work(request: Request) -> dict[str, str]:
        return {"role": request.state.api_key.role}

    @app.post("/fails")
    async def fails() -> None:
        raise ApiError(400, "no", code="bad")

    ring = KeyRing([ApiKey(digest(READER)), ApiKey(digest(ADMIN), "admin")])
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
    assert call(app, "POST", "/work", ADMIN).json() == {"role": "admin"}
    assert call(app, "POST", "/work", READER).json() == {"role": "reader"}
    assert call(app, "POST", "/fails", READER).status_code == 400  # not a call: nothing answered
    assert call(app, "GET", "/work", READER).status_code == 405
    assert counts.calls(ApiKey(digest(READER)).id) == 1 and counts.calls(ApiKey(digest(ADMIN)).id) == 1


def test_the_start_up_line_says_whether_the_api_is_open(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bentoml.modelport"):
        log_mode(KeyRing([]), metrics_keyed=False)
        log_mode(KeyRing([ApiKey(digest(READER)), ApiKey(digest(ADMIN), "admin")]), metrics_keyed=True)
    assert "the API is open to anyone" in caplog.records[0].getMessage()
    assert caplog.records[1].getMessage() == "API keys: 2 accepted (1 reader, 1 admin); /metrics needs a key"
    assert READER not in caplog.text and ADMIN not in caplog.text
