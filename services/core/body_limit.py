"""Request bodies are read whole, within a size cap and a deadline, before a request may wait for
admission or reach the app (a 50 MB JSON never reaches the JSON parser or pydantic):

    body_limit.install(app, BodyRules(max_bytes=1 << 20, deadline_s=30, max_held_bytes=32 << 20))

traffic.install puts it outside admission: a client that trickles its body (slowloris: 16
connections sending 1 byte every 5 s held every plate-reader slot for 40 s, issue 20) holds a
connection, but no admission slot, and is answered 408 at the deadline.

- A declared Content-Length over the cap is answered 413 at once, without reading the body;
  otherwise bytes are counted as they stream in (chunked bodies have no Content-Length).
- A body not complete within `deadline_s` of the request's start: 408, and the connection closes.
- Bodies read here are held in memory until their request ends (while it waits for its turn,
  too), so all of them together are capped at `max_held_bytes`: beyond it, 429 + Retry-After.
  Bodies of 1 byte held by slow clients take next to none of it.

A body within the limits is handed to the app as if it came from the network. The answers are
the OpenAI error shape (services/core/api_errors.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.api_errors import ApiError


@dataclass(frozen=True)
class BodyRules:
    max_bytes: int  # one request's body
    deadline_s: float  # from the request's start to its body's last byte
    max_held_bytes: int  # all bodies read and not yet answered, together


class _ClientLeft(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, rules: BodyRules, retry_after_s: Callable[[], int] = lambda: 1) -> None:
        self.app, self.rules, self.retry_after_s = app, rules, retry_after_s
        self.held = 0  # bytes of bodies held, across requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rules = self.rules
        declared = _content_length(scope)
        if declared is not None and declared > rules.max_bytes:
            await _too_large(f"is {declared:,} bytes", rules.max_bytes).response()(scope, receive, send)
            return
        body = bytearray()
        try:
            try:
                async with asyncio.timeout(rules.deadline_s):
                    await self._read(receive, body)
            except _ClientLeft:
                return
            except ApiError as refusal:
                await refusal.response()(scope, receive, send)
                return
            except TimeoutError:
                await _too_slow(len(body), declared, rules.deadline_s).response()(scope, receive, send)
                return
            await self.app(scope, _replay(bytes(body), receive), send)
        finally:
            self.held -= len(body)  # counted while read, and for as long as the app has it

    async def _read(self, receive: Receive, body: bytearray) -> None:
        """Read the body into `body`, counting it in `held` while it grows."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the client left while sending
                raise _ClientLeft
            chunk = message.get("body", b"")
            if len(body) + len(chunk) > self.rules.max_bytes:
                raise _too_large("is larger", self.rules.max_bytes)
            if self.held + len(chunk) > self.rules.max_held_bytes:
                raise ApiError(
                    429,
                    "the server is busy: it holds as many request bodies as it "
                    "may; retry after the time in Retry-After",
                    code="server_busy",
                    type="rate_limit_error",
                    headers={"Retry-After": str(self.retry_after_s())},
                )
            body += chunk
            self.held += len(chunk)
            if not message.get("more_body", False):
                return


def _too_large(what: str, max_bytes: int) -> ApiError:
    return ApiError(
        413,
        f"request body {what}; the limit is {max_bytes:,} bytes: send a smaller request",
        code="request_too_large",
    )


def _too_slow(received: int, declared: int | None, deadline_s: float) -> ApiError:
    of = f" of {declared:,}" if declared is not None else ""
    return ApiError(
        408,
        f"the request body did not arrive within {deadline_s:g} s ({received:,}"
        f"{of} bytes came): send it faster, or send less",
        code="request_timeout",
        headers={"Connection": "close"},
    )  # the rest of the body is not read: close


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body read above, then the network's messages (so the
    app still learns of a disconnect, e.g. to stop generating)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install(app: ASGIApp, rules: BodyRules, retry_after_s: Callable[[], int] = lambda: 1) -> None:
    """Read request bodies within `rules` on `app` (Starlette/FastAPI), before the middleware
    added earlier (admission: see traffic.install)."""
    app.add_middleware(BodyLimit, rules=rules, retry_after_s=retry_after_s)  # type: ignore[attr-defined]  # a Starlette app: the ASGIApp type has no add_middleware
