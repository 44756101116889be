"""The shutdown guard: what a request still in flight gets when the grace period ends, and the
SIGTERM handler chained in front of the server's. (The e2e twin, tests/e2e/test_shutdown.py,
sends real SIGTERMs to real servers.)"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from services.core import api_errors, shutdown


def guarded_app() -> tuple[FastAPI, shutdown.Draining, dict[str, bool]]:
    app = FastAPI()
    api_errors.install(app)
    seen = {"cancelled": False}

    @app.post("/slow")
    async def slow() -> dict[str, bool]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen["cancelled"] = True  # e.g. a completion's rows leave the batch here
            raise
        return {"ok": True}

    @app.post("/quick")
    async def quick() -> dict[str, bool]:
        await asyncio.sleep(0.05)
        return {"ok": True}

    @app.post("/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for i in range(1000):
                yield f"data: {json.dumps({'i': i})}\n\n"
                await asyncio.sleep(0.01)

        return StreamingResponse(events(), media_type="text/event-stream")

    draining = shutdown.install(app, grace_s=30)
    return app, draining, seen


async def end_grace_during(
    app: FastAPI, draining: shutdown.Draining, path: str, after_s: float = 0.1
) -> httpx.Response:
    # The app's lifespan, as BentoML runs it for the app it mounts, sets the guard up.
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        request = asyncio.create_task(client.post(path))
        await asyncio.sleep(after_s)
        assert draining.grace_over is not None
        draining.grace_over.set()  # as `grace_s` after SIGTERM
        return await request


def test_a_request_still_running_when_the_grace_ends_gets_503_and_its_work_stops() -> None:
    app, draining, seen = guarded_app()
    response = asyncio.run(end_grace_during(app, draining, "/slow"))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "shutting_down"
    assert seen["cancelled"]


def test_a_stream_under_way_ends_with_an_error_event_and_done() -> None:
    app, draining, _ = guarded_app()
    response = asyncio.run(end_grace_during(app, draining, "/stream"))
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[0]) == {"i": 0} and 1 < len(events) < 1000
    assert json.loads(events[-2])["error"]["code"] == "shutting_down" and events[-1] == "[DONE]"


def test_requests_that_finish_in_time_are_untouched() -> None:
    app, draining, _ = guarded_app()

    async def scenario() -> list[httpx.Response]:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
        ):
            done = await asyncio.gather(*(client.post("/quick") for _ in range(5)))
            draining.grace_over.set()
            return done

    assert [r.json() for r in asyncio.run(scenario())] == [{"ok": True}] * 5


def test_sigterm_runs_the_servers_handler_and_starts_the_grace_period() -> None:
    received: list[int] = []

    def fake_server_handler(signum: int, frame: Any) -> None:  # stands in for uvicorn's handle_exit
        received.append(signum)

    original = signal.signal(signal.SIGTERM, fake_server_handler)
    try:

        async def scenario() -> bool:
            draining = shutdown.Draining(grace_s=0.05)
            draining.listen()
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # BentoML's arbiter passes it on again: no matter
            await asyncio.wait_for(draining.grace_over.wait(), 2)
            return draining.started

        assert asyncio.run(scenario())
        assert received == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)


def test_the_apps_startup_chains_the_handler_before_any_request() -> None:
    # BentoML runs the mounted app's lifespan after uvicorn has set its handler and before it
    # accepts requests: a SIGTERM from then on starts the grace, with no request ever made
    # (chained at the first request instead, one that came before it was missed).
    received: list[int] = []

    def fake_server_handler(signum: int, frame: Any) -> None:  # stands in for uvicorn's handle_exit
        received.append(signum)

    original = signal.signal(signal.SIGTERM, fake_server_handler)
    try:
        app = FastAPI()
        draining = shutdown.install(app, grace_s=0.05)

        async def scenario() -> None:
            async with app.router.lifespan_context(app):
                signal.raise_signal(signal.SIGTERM)
                assert draining.grace_over is not None
                await asyncio.wait_for(draining.grace_over.wait(), 2)

        asyncio.run(scenario())
        assert draining.started and received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)


def test_without_a_server_handler_sigterm_is_left_alone() -> None:
    async def scenario() -> None:
        shutdown.Draining(grace_s=1).listen()

    asyncio.run(scenario())
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
