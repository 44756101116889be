"""Admission: how much work a service holds at once, and a clear "busy, retry in N s" beyond it.

    admission = Admission(Limits(max_in_flight=16, max_queue=64, max_queue_wait_s=10))
    async with admission.slot():     # raises Busy at once when the queue is full, or after
        ...                          # max_queue_wait_s in it
    install(app, limits)             # the same for every POST of a FastAPI app: 429 + Retry-After

Measured before (issue 12): a burst of 200 concurrent requests left the plate reader holding
all of them and answering 29 with 504 after 30 s, the autocompleter 72 after up to 62 s; a
client could not tell "busy" from "broken". Now a request either runs (at most max_in_flight
at once, the rest waiting in order, at most max_queue of them) or is answered 429 with
Retry-After straight away, which the Plate Recognizer clients and the OpenAI SDK retry on.

Engines with a queue of their own raise `Busy` too (the autocompleter's, when too many
sequences wait for a batch slot); `install` answers it the same way.

Limits are per worker process; both services run one worker.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.core.api_errors import ApiError

# Time from arrival to a slot (0 when one was free), per worker; the alert rules in
# deploy/monitoring/ watch its p95. Requests turned away (429) are in BentoML's request counts.
QUEUE_WAIT = bentoml.metrics.Histogram(
    name="modelport_admission_queue_wait_seconds",
    documentation="Time a request waited for a slot",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WORK_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # GETs (models, docs) are cheap
MAX_RETRY_AFTER_S = 60


@dataclass(frozen=True)
class Limits:
    max_in_flight: int  # requests running at once
    max_queue: int  # requests waiting for a turn beyond those; more: 429 at once
    max_queue_wait_s: float  # a request still waiting after this: 429

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """From a service's settings, whose fields have these names."""
        return cls(settings.max_in_flight, settings.max_queue, settings.max_queue_wait_s)


class Busy(Exception):
    """No room for this work now; worth retrying after `retry_after_s` (None: let the service guess)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Admission:
    def __init__(self, limits: Limits) -> None:
        if limits.max_in_flight < 1 or limits.max_queue < 0:
            raise ValueError("max_in_flight must be >= 1 and max_queue >= 0")
        self.limits = limits
        self.in_flight = 0
        self._waiting: deque[asyncio.Future[None]] = deque()  # first in line first
        self._seconds_per_request = 1.0  # moving average of time in flight; guides Retry-After

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def retry_after_s(self) -> int:
        """When a slot is likely free for one more: the queue ahead of it, drained at
        max_in_flight requests per average request time; 1-60 s."""
        ahead = self.queued + 1
        estimate = ahead * self._seconds_per_request / self.limits.max_in_flight
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(estimate)))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.enter()
        started = time.monotonic()
        try:
            yield
        finally:
            self.leave(time.monotonic() - started)

    async def enter(self) -> None:
        """Take a slot, waiting in line for one if need be; Busy if there is no room."""
        limits = self.limits
        if self.in_flight < limits.max_in_flight and not self._waiting:
            self.in_flight += 1
            QUEUE_WAIT.observe(0.0)
            return
        if self.queued >= limits.max_queue:
            raise Busy(
                f"the server is busy ({self.in_flight} requests running, {self.queued} "
                "waiting); retry after the time in Retry-After"
            )
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        arrived = time.monotonic()
        try:
            await asyncio.wait_for(turn, limits.max_queue_wait_s)
            QUEUE_WAIT.observe(time.monotonic() - arrived)
        except BaseException as exc:  # timed out, or the client went away while waiting
            if turn.done() and not turn.cancelled():
                self._hand_on()  # a slot came just as it stopped waiting: pass it on
            elif turn in self._waiting:
                self._waiting.remove(turn)
            if isinstance(exc, TimeoutError):
                raise Busy(
                    f"the server is busy: no turn came within {limits.max_queue_wait_s:g}s; "
                    "retry after the time in Retry-After"
                ) from None
            raise

    def leave(self, seconds_in_flight: float) -> None:
        """Give the slot back after holding it for `seconds_in_flight`."""
        self._seconds_per_request += 0.1 * (seconds_in_flight - self._seconds_per_request)
        self._hand_on()

    def _hand_on(self) -> None:
        """Hand the slot to the first still waiting, else free it."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # in_flight is unchanged: the slot changes hands
                return
        self.in_flight -= 1


def busy_error(admission: Admission, exc: Busy) -> ApiError:
    retry = exc.retry_after_s if exc.retry_after_s is not None else admission.retry_after_s()
    return ApiError(
        429,
        str(exc),
        code="server_busy",
        type="rate_limit_error",
        headers={"Retry-After": str(max(1, math.ceil(retry)))},
    )


class AdmissionMiddleware:
    """ASGI middleware: every request that does work (POST, ...) runs inside an admission slot,
    held until its response has been sent, to the last event of a stream."""

    def __init__(self, app: Any, admission: Admission) -> None:
        self.app, self.admission = app, admission

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in WORK_METHODS:
            return await self.app(scope, receive, send)
        try:
            await self.admission.enter()
        except Busy as exc:
            return await busy_error(self.admission, exc).response()(scope, receive, send)
        started = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave(time.monotonic() - started)


def install(app: FastAPI, limits: Limits) -> Admission:
    """Bound `app`'s work by `limits`, and answer `Busy` from anywhere in it with 429."""
    admission = Admission(limits)
    app.add_middleware(AdmissionMiddleware, admission=admission)

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return busy_error(admission, exc).response()

    return admission
