"""Admission: the in-flight bound, the waiting line and its timeout, Retry-After, and the
middleware's answers on a small FastAPI app called through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from fastapi import FastAPI

from services.core import admission, api_errors
from services.core.admission import Admission, Busy, Limits


async def hold(admission_: Admission, release: asyncio.Event, order: list[int], i: int) -> None:
    async with admission_.slot():
        order.append(i)
        await release.wait()


def test_at_most_max_in_flight_run_the_queue_waits_in_order_the_rest_is_busy_at_once() -> None:
    async def scenario() -> None:
        gate = Admission(Limits(max_in_flight=2, max_queue=2, max_queue_wait_s=5))
        release, order = asyncio.Event(), []
        holders = [asyncio.create_task(hold(gate, release, order, i)) for i in range(4)]
        await asyncio.sleep(0.01)
        assert (gate.in_flight, gate.queued, order) == (2, 2, [0, 1])
        with pytest.raises(Busy, match="2 requests running, 2 waiting"):
            await gate.enter()
        release.set()
        await asyncio.gather(*holders)
        assert order == [0, 1, 2, 3] and (gate.in_flight, gate.queued) == (0, 0)

    asyncio.run(scenario())


def test_a_request_that_waits_past_max_queue_wait_is_busy_and_frees_its_place() -> None:
    async def scenario() -> None:
        gate = Admission(Limits(max_in_flight=1, max_queue=1, max_queue_wait_s=0.05))
        release = asyncio.Event()
        holder = asyncio.create_task(hold(gate, release, [], 0))
        await asyncio.sleep(0.01)
        with pytest.raises(Busy, match=r"no turn came within 0\.05s"):
            await gate.enter()
        assert gate.queued == 0
        release.set()
        await holder
        async with gate.slot():  # the slot is free again
            assert gate.in_flight == 1
        assert gate.in_flight == 0

    asyncio.run(scenario())


def test_a_waiter_that_goes_away_leaks_no_slot() -> None:
    async def scenario() -> None:
        gate = Admission(Limits(max_in_flight=1, max_queue=4, max_queue_wait_s=5))
        release = asyncio.Event()
        holder = asyncio.create_task(hold(gate, release, [], 0))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(gate.enter())
        await asyncio.sleep(0.01)
        waiter.cancel()  # the client disconnected while waiting
        release.set()
        await holder
        await asyncio.sleep(0)
        assert (gate.in_flight, gate.queued) == (0, 0)

    asyncio.run(scenario())


def test_retry_after_grows_with_the_queue_and_stays_within_1_to_60_s() -> None:
    gate = Admission(Limits(max_in_flight=2, max_queue=1000, max_queue_wait_s=5))
    assert gate.retry_after_s() == 1  # nothing known yet: the shortest
    for _ in range(30):  # slow requests: the average moves towards 30 s
        gate.in_flight = 1
        gate.leave(30.0)
    alone = gate.retry_after_s()
    assert 10 < alone < 16  # the next free slot: one average request over 2 slots

    async def with_a_queue() -> int:
        release = asyncio.Event()
        holders = [asyncio.create_task(hold(gate, release, [], i)) for i in range(2 + 20)]
        await asyncio.sleep(0.01)
        retry = gate.retry_after_s()
        release.set()
        await asyncio.gather(*holders)
        return retry

    assert asyncio.run(with_a_queue()) == 60  # 20 waiting: well past a minute, said as 60
    with pytest.raises(ValueError):
        Admission(Limits(0, 1, 1))


def app_with(limits: Limits) -> FastAPI:
    app = FastAPI()
    api_errors.install(app)

    @app.post("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(0.2)
        return {"ok": True}

    @app.get("/cheap")
    async def cheap() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/engine-full")
    async def engine_full() -> None:
        raise Busy("the model is busy", retry_after_s=2.5)

    admission.install(app, limits)
    return app


async def burst(app: FastAPI, method: str, path: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await asyncio.gather(*(client.request(method, path) for _ in range(n)))


def test_middleware_answers_429_with_retry_after_beyond_the_limits() -> None:
    app = app_with(Limits(max_in_flight=1, max_queue=1, max_queue_wait_s=5))
    responses = asyncio.run(burst(app, "POST", "/slow", 6))
    assert Counter(r.status_code for r in responses) == {200: 2, 429: 4}
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["error"]["code"] == "server_busy"
        assert int(refused.headers["retry-after"]) >= 1
    # GETs do no work: never queued, never refused.
    assert {r.status_code for r in asyncio.run(burst(app, "GET", "/cheap", 6))} == {200}


def test_busy_raised_inside_a_route_is_429_too() -> None:
    [response] = asyncio.run(burst(app_with(Limits(4, 4, 5)), "POST", "/engine-full", 1))
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert response.json()["error"] == {
        "message": "the model is busy",
        "type": "rate_limit_error",
        "param": None,
        "code": "server_busy",
    }
