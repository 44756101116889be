"""One error shape for every modelport HTTP API: OpenAI's, which client SDKs already parse.

    {"error": {"message": "what to fix", "type": "invalid_request_error", "param": "upload",
               "code": "empty_image"}}

Routes raise `ApiError`; `install(app)` turns it, FastAPI's request validation errors and
anything unexpected into that shape with the right status, so a client never gets a bare
500 page or a hang, and the server keeps serving.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger("bentoml.modelport")  # BentoML only shows INFO under "bentoml"


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str, param: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.headers = headers  # e.g. Retry-After on a 429, WWW-Authenticate on a 401

    def response(self) -> JSONResponse:
        body = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers)


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
    """Register the handlers that give every error the shape above."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return ApiError(400, message, code="invalid_request", param=param).response()

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, str(exc.detail), code=code).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return ApiError(500, f"internal error ({type(exc).__name__}); the server logged it",
                        code="internal_error", type="server_error").response()
