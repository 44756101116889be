"""services/core/body_limit.py: bodies over the cap are a 413 in our error shape before the
app parses them, by Content-Length or, for chunked bodies, by counting as they stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.core import api_errors, body_limit

LIMIT = 1000


class Body(BaseModel):
    prompt: str


def make_app() -> tuple[FastAPI, list[str]]:
    app = FastAPI()
    api_errors.install(app)
    parsed: list[str] = []

    @app.post("/completions")
    async def completions(body: Body) -> dict[str, int]:
        parsed.append(body.prompt)
        return {"length": len(body.prompt)}

    body_limit.install(app, LIMIT)
    return app, parsed


def post(app: FastAPI, **kwargs) -> httpx.Response:  # noqa: ANN003
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
            return await client.post("/completions", **kwargs)
    return asyncio.run(go())


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and f"{LIMIT:,}" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_a_body_within_the_limit_reaches_the_route() -> None:
    app, parsed = make_app()
    response = post(app, json={"prompt": "x" * 900})
    assert response.status_code == 200 and response.json() == {"length": 900}
    assert parsed == ["x" * 900]


def test_a_declared_content_length_over_the_limit_is_refused_unparsed() -> None:
    app, parsed = make_app()
    assert_too_large(post(app, json={"prompt": "x" * 2000}))
    assert parsed == []


def test_a_chunked_body_without_content_length_is_cut_off_while_streaming() -> None:
    app, parsed = make_app()
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(1000):  # 100 KB if all were read
            sent.append(1)
            yield b"x" * 100
        yield b'"}'

    assert_too_large(post(app, content=chunks(), headers={"content-type": "application/json"}))
    assert parsed == [] and len(sent) <= 11


def test_the_client_leaving_mid_body_ends_quietly() -> None:
    app, parsed = make_app()
    messages = iter([{"type": "http.request", "body": b'{"pro', "more_body": True},
                     {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/completions", "headers": [],
             "query_string": b"", "root_path": ""}
    asyncio.run(body_limit.BodyLimit(app.router, LIMIT)(scope, receive, send))
    assert sent == [] and parsed == []


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_the_limit_is_inclusive(size: int) -> None:
    app, _ = make_app()
    body = b'{"prompt": "' + b"x" * (size - 14) + b'"}'
    assert len(body) == size
    response = post(app, content=body, headers={"content-type": "application/json"})
    assert response.status_code == (200 if size <= LIMIT else 413)
