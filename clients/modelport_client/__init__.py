"""modelport_client: typed Python client for modelport services (httpx only, no torch).

from modelport_client import Client
with Client("http://localhost:3000") as client:
    print(client.read_plates("car.jpg").results)
"""

from modelport_client._autocomplete import Completion, CompletionChoice, Suggestion, TokenLogprobs, Usage
from modelport_client._client import DEFAULT_TIMEOUT, AsyncClient, Client
from modelport_client._errors import (
    APIError,
    AuthenticationError,
    BadRequest,
    ModelportError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    Superseded,
    Timeout,
    TransportError,
    UnsupportedMedia,
)
from modelport_client._plates import Box, Candidate, Plate, PlateReading, Vehicle, VideoReading

__all__ = [  # noqa: RUF022 - plain sorted(), which test_client_surface checks, not isort's order
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Box",
    "Candidate",
    "Client",
    "Completion",
    "CompletionChoice",
    "DEFAULT_TIMEOUT",
    "ModelportError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "Plate",
    "PlateReading",
    "RateLimited",
    "ServerError",
    "Suggestion",
    "Superseded",
    "Timeout",
    "TokenLogprobs",
    "TransportError",
    "UnsupportedMedia",
    "Usage",
    "Vehicle",
    "VideoReading",
]
