"""A cap on request bodies, enforced before the app parses them (a 50 MB JSON never reaches
the JSON parser or pydantic):

    body_limit.install(app, settings.max_request_bytes)   # on a FastAPI app

A declared Content-Length over the cap is answered 413 at once, without reading the body.
Otherwise the body is read here, counting bytes as they stream in (chunked bodies have no
Content-Length), and answered 413 as soon as the count passes the cap; a body within the cap
is handed to the app as if it came from the network. Bodies within the cap are held in
memory once, which the app's parser would do anyway. The answer is the OpenAI error shape
(services/core/api_errors.py), code `request_too_large`.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.api_errors import ApiError


def _too_large(what: str, max_bytes: int) -> ApiError:
    return ApiError(413, f"request body {what}; the limit is {max_bytes:,} bytes: send a "
                    "smaller request (fewer or shorter prompts)", code="request_too_large")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _too_large(f"is {declared:,} bytes", self.max_bytes).response()(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the client left while sending
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _too_large("is larger", self.max_bytes).response()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


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


def install(app: Any, max_bytes: int) -> None:
    """Cap request bodies at `max_bytes` on `app` (Starlette/FastAPI). Installed before other
    middleware it sits innermost: API keys and admission answer first, from the headers."""
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
