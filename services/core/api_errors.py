"""One error shape for every modelport HTTP API: OpenAI's, which client SDKs already parse.

    {"error": {"message": "what to fix", "type": "invalid_request_error", "param": "upload",
               "code": "empty_image"}}

Routes raise `ApiError`; `install(app)` turns it, FastAPI's request validation errors and
anything unexpected into that shape with the right status, so a client never gets a bare
500 page or a hang, and the server keeps serving.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("bentoml.modelport")  # BentoML only shows INFO under "bentoml"


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.headers = headers  # e.g. Retry-After on a 429, WWW-Authenticate on a 401

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class ErrorDetail(BaseModel):
    message: str = Field(description="what went wrong and what to fix")
    type: str = Field(
        description="invalid_request_error, authentication_error, permission_error, "
        "rate_limit_error or server_error"
    )
    param: str | None = Field(description="the request field at fault, when there is one")
    code: str | None = Field(description="a stable, machine-readable reason, e.g. empty_image")


class ErrorBody(BaseModel):
    """Every error answer of a modelport API (OpenAI's shape)."""

    error: ErrorDetail


class GatewayTimeoutBody(BaseModel):
    """BentoML's own 504, when a response has not started within the service's timeout."""

    error: str


# Who answers each status, for the OpenAPI description (`responses=error_responses(...)`).
_STATUS_DOCS: dict[int, str] = {
    400: "The request is malformed or breaks a limit; the message says what to fix.",
    401: "Missing or wrong API key (only when the server has keys configured): send "
    "`Authorization: Bearer KEY` or `Authorization: Token KEY`.",
    403: "The API key lacks the role this route needs.",
    404: "Not found.",
    409: "Superseded: a newer request of the same session replaced this one.",
    413: "The request body (or an image in it) is over the server's size limit.",
    415: "Unsupported Content-Type.",
    429: "Busy (in-flight and queued requests at the limit) or the key's monthly quota is used "
    "up: retry after `Retry-After` seconds.",
    500: "Unexpected server error; the server logged it.",
    503: "The server is shutting down: retry (another replica) after `Retry-After` seconds.",
    504: "The request ran past the server's time limit.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` for these error statuses, each with the error body's schema.
    Every route of these apps may also answer 401 (keys on), 500, 503 (shutting down) and 504
    (ours, or BentoML's own timeout, whose `error` is a string)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 401, 500, 503, 504}):
        model = ErrorBody | GatewayTimeoutBody if status == 504 else ErrorBody
        out[status] = {"model": model, "description": _STATUS_DOCS[status]}
        if status in (429, 503):
            out[status]["headers"] = _RETRY_AFTER
    return out


# Per route kind. A work route (a POST) passes admission and is counted against the key's quota
# (429); GETs are not admitted or counted. A body is read within a size limit (413).
GET_ROUTE = error_responses()
WORK_ROUTE = error_responses(400, 413, 429)
ERROR_RESPONSES = WORK_ROUTE  # the usual kind: a POST that does work


def document(app: FastAPI) -> None:
    """OpenAPI for `app` without FastAPI's default `422` answers: validation errors are 400s
    with the error body here (see `install`), documented per route by `error_responses`."""

    generate = app.openapi  # FastAPI's own (servers from the mount, caching): then trimmed

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to change the schema


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, param = [], None
    for error in exc.errors():
        if error.get("type") == "json_invalid":  # FastAPI reports it at ("body", <offset>)
            return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})", None
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        param = param or (location[0] if location else None)
        parts.append(f"{'.'.join(location) or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request", param


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the shape above, and document them."""
    document(app)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return ApiError(400, message, code="invalid_request", param=param).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:  # RFC 9110: `Allow` lists every method the path takes
            starlettes = (headers or {}).get("Allow", "")
            headers = {**(headers or {}), "Allow": allowed_methods(app, request) or starlettes}
        return ApiError(exc.status_code, str(exc.detail), code=code, headers=headers).response()

    # Added first, so innermost of the app's middleware: what it answers, the others see as
    # an ordinary 500. Not `exception_handler(Exception)`: Starlette runs that in its outermost
    # ServerErrorMiddleware, which re-raises after answering, so uvicorn logged the exception
    # a second time and closed the keep-alive connection (the client's next request was reset).
    app.add_middleware(UnexpectedErrors)


def allowed_methods(app: FastAPI, request: Request) -> str:
    """The methods the OpenAPI description gives the request's path. Starlette's 405 names only
    the first route that has the path: GET /reviews/{id} hid POST /reviews/{id}."""
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    path = path[len(root) :] if root and path.startswith(root) else path
    for template, item in app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            return ", ".join(sorted(method.upper() for method in item if method.upper() in _METHODS))
    return ""


_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}


class UnexpectedErrors:
    """ASGI middleware: an exception no handler turned into an answer becomes one 500 in the
    error shape, logged once, and the connection stays open for the client's next request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # half an answer cannot become a 500: the server closes the connection
                raise
            logger.exception("unexpected error on %s %s", scope["method"], scope["path"])
            await ApiError(
                500,
                f"internal error ({type(exc).__name__}); the server logged it",
                code="internal_error",
                type="server_error",
            ).response()(scope, receive, send)
