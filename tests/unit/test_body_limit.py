"""services/core/body_limit.py: bodies over the cap are a 413 in our error shape before the
app parses them, by Content-Length or, for chunked bodies, by counting as they stream; a body
that does not arrive in time is a 408, and a slow one holds no admission slot meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.core import admission, api_errors, body_limit
from services.core.admission import Limits

LIMIT = 1000
RULES = body_limit.BodyRules(max_bytes=LIMIT, deadline_s=5, max_held_bytes=100 * LIMIT)


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

    body_limit.install(app, RULES)
    return app, parsed


def post(app: FastAPI, **kwargs) -> httpx.Response:
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
    messages = iter(
        [{"type": "http.request", "body": b'{"pro', "more_body": True}, {"type": "http.disconnect"}]
    )
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/completions",
        "headers": [],
        "query_string": b"",
        "root_path": "",
    }
    asyncio.run(body_limit.BodyLimit(app.router, RULES)(scope, receive, send))
    assert sent == [] and parsed == []


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_the_limit_is_inclusive(size: int) -> None:
    app, _ = make_app()
    body = b'{"prompt": "' + b"x" * (size - 14) + b'"}'
    assert len(body) == size
    response = post(app, content=body, headers={"content-type": "application/json"})
    assert response.status_code == (200 if size <= LIMIT else 413)


def gated_app(rules: body_limit.BodyRules, max_in_flight: int = 1) -> FastAPI:
    """Admission inside the body limit, in traffic.install's order."""
    app = FastAPI()
    api_errors.install(app)

    @app.post("/completions")
    async def completions(body: Body) -> dict[str, int]:
        return {"length": len(body.prompt)}

    admitted = admission.install(app, Limits(max_in_flight=max_in_flight, max_queue=0, max_queue_wait_s=1))
    body_limit.install(app, rules, retry_after_s=admitted.retry_after_s)
    return app


async def trickle(every_s: float, times: int) -> AsyncIterator[bytes]:
    yield b'{"prompt": "'
    for _ in range(times):
        await asyncio.sleep(every_s)
        yield b"x"
    yield b'"}'


def test_a_slow_body_is_408_at_the_deadline_and_holds_no_admission_slot() -> None:
    """One slot, taken only once a body is in: a client trickling its body does not keep a
    whole request from running meanwhile (slowloris), and is answered 408 at the deadline."""
    app = gated_app(body_limit.BodyRules(max_bytes=LIMIT, deadline_s=1.0, max_held_bytes=100 * LIMIT))

    async def go() -> tuple[httpx.Response, httpx.Response, float, float]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
            started = asyncio.get_running_loop().time()
            slow = asyncio.create_task(
                client.post(
                    "/completions", content=trickle(0.3, 100), headers={"content-type": "application/json"}
                )
            )
            await asyncio.sleep(0.2)  # the slow one has started sending
            fast = await client.post("/completions", json={"prompt": "hello"})
            fast_at = asyncio.get_running_loop().time() - started
            slow_response = await slow
            return fast, slow_response, fast_at, asyncio.get_running_loop().time() - started

    fast, slow, fast_at, slow_at = asyncio.run(go())
    assert fast.status_code == 200 and fast.json() == {"length": 5}, fast.text
    assert fast_at < 0.9  # answered while the slow body was still arriving
    assert slow.status_code == 408, slow.text
    assert slow.json()["error"]["code"] == "request_timeout" and slow.headers["connection"] == "close"
    assert 1.0 <= slow_at < 3.0


def test_bodies_held_together_are_capped_with_429() -> None:
    """Bodies are held from their first byte to their answer, also while waiting for a turn: all of
    them together stay within max_held_bytes, beyond it 429 + Retry-After."""
    rules = body_limit.BodyRules(max_bytes=LIMIT, deadline_s=5, max_held_bytes=LIMIT)
    app = gated_app(rules, max_in_flight=4)

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
            holding = asyncio.create_task(
                client.post(  # 800 bytes, then a pause: held meanwhile
                    "/completions",
                    headers={"content-type": "application/json"},
                    content=_two_parts(b'{"prompt": "' + b"x" * 788, b'"}', pause_s=0.5),
                )
            )
            await asyncio.sleep(0.2)
            refused = await client.post("/completions", json={"prompt": "y" * 300})
            return await holding, refused

    held, refused = asyncio.run(go())
    assert held.status_code == 200, held.text
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "server_busy"
    assert int(refused.headers["retry-after"]) >= 1


async def _two_parts(first: bytes, second: bytes, *, pause_s: float) -> AsyncIterator[bytes]:
    yield first
    await asyncio.sleep(pause_s)
    yield second
