"""Graceful shutdown: on SIGTERM, requests in flight get `grace_s` to finish, then an answer.

What BentoML and uvicorn already do (bentoml 1.4.39, uvicorn 0.55, read in their source):
`bentoml serve`'s arbiter (circus) passes SIGTERM on to its worker and waits for it (up to a
day); the worker's uvicorn stops accepting connections, closes idle keep-alive ones, lets each
request in flight finish (no limit: `--timeout-graceful-shutdown` is unset), then exits. So
nothing in flight is lost, but nothing bounds the wait either, and Kubernetes' SIGKILL at
the end of terminationGracePeriodSeconds would cut whatever is still running mid-answer.

This adds the bound, with an answer instead of a cut socket: when `grace_s` has passed since
SIGTERM, a request still in flight is stopped (its work cancelled: a completion's rows leave
the batch) and answered 503 with Retry-After (the client retries on another replica), or, if
it is a stream already under way, sent a final error event and `data: [DONE]`. Then uvicorn
finds nothing in flight and exits. deploy/k8s gives the pod preStop + grace + a margin.

    install(app, grace_s=30)

SIGTERM reaches Python code only through a signal handler. uvicorn sets its own before the
app's lifespan starts, so the app's lifespan startup (which BentoML runs for the FastAPI app it
mounts) chains ours in front of it (both run: uvicorn's still starts its shutdown): the bound
holds from the moment the server is ready. Chained at the first request instead, it missed a
SIGTERM that came before the first request reached the app, and that request, accepted
already, then ran unbounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from services.core.api_errors import ApiError

SHUTTING_DOWN = (
    "the server is shutting down and could not finish this request in time; "
    "send it again (another replica, or this one once it is back)"
)


class Draining:
    """When SIGTERM came, and an event set when the grace period after it is over."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.grace_over: asyncio.Event | None = None
        self.started = False
        self._listening = False

    def listen(self) -> None:
        """Chain a SIGTERM handler in front of the server's; call from the event loop, once the
        server has set its own (the app's lifespan startup)."""
        if self._listening or threading.current_thread() is not threading.main_thread():
            return
        self._listening = True
        loop = asyncio.get_running_loop()
        grace_over = self.grace_over = asyncio.Event()
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):  # not under a server that handles SIGTERM: leave it be
            return

        def on_sigterm(signum: int, frame: Any) -> None:
            if not self.started:
                self.started = True
                loop.call_soon_threadsafe(loop.call_later, self.grace_s, grace_over.set)
            previous(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)


class ShutdownGuard:
    """ASGI middleware: runs each request so that the end of the grace period can stop it
    with an answer (see the module's docstring)."""

    def __init__(self, app: Any, draining: Draining) -> None:
        self.app, self.draining = app, draining

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.draining.listen()  # (a no-op once the lifespan chained it; for a server run without one)
        grace_over = self.draining.grace_over
        if grace_over is None:  # not in the main thread (a test client): no signals to follow
            return await self.app(scope, receive, send)
        response: dict[str, Any] = {"started": False, "finished": False, "stream": False}

        async def tracking_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                response["started"] = True
                response["stream"] = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                response["finished"] = True
            await send(message)

        work = asyncio.ensure_future(self.app(scope, receive, tracking_send))
        over = asyncio.ensure_future(grace_over.wait())
        try:
            await asyncio.wait({work, over}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            over.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            elif not work.cancelled():
                work.result()  # the app's own exception, if it raised one
        if work.cancelled() and grace_over.is_set():
            await self._answer_cut_short(response, scope, receive, send)

    @staticmethod
    async def _answer_cut_short(
        response: dict[str, Any], scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        refusal = ApiError(
            503, SHUTTING_DOWN, code="shutting_down", type="server_error", headers={"Retry-After": "1"}
        )
        if not response["started"]:
            await refusal.response()(scope, receive, send)
        elif response["stream"] and not response["finished"]:
            final = f"data: {json.dumps(refusal.body())}\n\ndata: [DONE]\n\n".encode()
            await send({"type": "http.response.body", "body": final, "more_body": False})
        # A plain body already under way is sent in one piece by these apps: nothing to add.


def install(app: FastAPI, grace_s: float) -> Draining:
    draining = Draining(grace_s)
    app.add_middleware(ShutdownGuard, draining=draining)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        draining.listen()  # before the server accepts a request
        async with inner(app) as state:
            yield state

    app.router.lifespan_context = lifespan
    return draining
