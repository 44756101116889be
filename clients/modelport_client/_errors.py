"""The exception tree. Every message carries what a person needs to act on it.

    ModelportError
    ├── TransportError        could not talk to the server (refused, reset, DNS)
    │   └── Timeout           the server did not answer in time
    └── APIError              the server answered with an error status
        ├── BadRequest        400/422: the request needs fixing (message says how)
        ├── AuthenticationError  401: no API key, or not one the server knows
        ├── PermissionDenied  403: the key's role does not allow this (e.g. reviews)
        ├── PayloadTooLarge   413: an image or body over the server's limits
        ├── UnsupportedMedia  415: not an image / wrong content type
        ├── NotFound          404
        ├── Superseded        409: a newer suggest request of the same session replaced this one
        ├── RateLimited       429: busy or over the key's quota; `retry_after` says when to retry
        └── ServerError       5xx (503 when the service is not ready yet or shutting down)

Every APIError has `retry_after` (seconds, from the Retry-After header; None when absent).
"""

from __future__ import annotations

import httpx


class ModelportError(Exception):
    """Base of every error this client raises."""


class TransportError(ModelportError):
    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(f"{message} ({url})")
        self.url = url


class Timeout(TransportError):
    pass


class APIError(ModelportError):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        url: str,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        detail = f" [{code}]" if code else ""
        super().__init__(f"HTTP {status}{detail} from {url}: {message}")
        self.status, self.message, self.url, self.code, self.param = status, message, url, code, param
        self.retry_after = retry_after


class BadRequest(APIError):
    pass


class AuthenticationError(APIError):
    pass


class PermissionDenied(APIError):
    pass


class PayloadTooLarge(APIError):
    pass


class RateLimited(APIError):
    pass


class UnsupportedMedia(APIError):
    pass


class NotFound(APIError):
    pass


class Superseded(APIError):
    pass


class ServerError(APIError):
    pass


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    422: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    413: PayloadTooLarge,
    415: UnsupportedMedia,
    404: NotFound,
    409: Superseded,
    429: RateLimited,
}


def raise_for_status(response: httpx.Response) -> None:
    """Raise the matching APIError for an error response, with the server's own message."""
    if response.is_success:
        return
    message, code, param = response.reason_phrase or "error", None, None
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else {}
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("detail") or message)
            code, param = error.get("code"), error.get("param")
        elif isinstance(error, str):
            message = error
    except ValueError:
        message = response.text[:500] or message
    cls = _BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else APIError)
    raise cls(
        response.status_code,
        message,
        url=str(response.request.url),
        code=code,
        param=param,
        retry_after=_seconds(response.headers.get("retry-after")),
    )


def _seconds(value: str | None) -> float | None:
    """Retry-After in seconds (modelport sends a number; an HTTP date is left as None)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def translate(exc: httpx.TransportError, url: str) -> TransportError:
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"timed out: {exc.__class__.__name__}", url=url)
    return TransportError(f"could not reach the server: {exc}", url=url)
