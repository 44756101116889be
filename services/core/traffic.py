"""What both services put between the network and their routes, in one call after the service
class, so the order is the same for both:

    LIMITS = Limits.of(settings)     # MODELPORT_PLATE_MAX_IN_FLIGHT, ..._MAX_QUEUE, ..._MAX_QUEUE_WAIT_S
    @bentoml.service(traffic=bentoml_traffic(LIMITS, longest_request_s=30), ...)
    class PlateReader: ...
    traffic.install(PlateReader, app, LIMITS, max_request_bytes=settings.max_request_bytes)

A request meets, outermost first: the shutdown guard (so a request still waiting for its turn
also gets an answer at the end of the grace period), the API key check (a request without a
valid key never takes a place in the queue), the body read whole within its size cap and
MODELPORT_BODY_TIMEOUT_S (body_limit.py: a slow sender holds no admission slot), admission
(in flight + queue, else 429), then the route. Outside all of these, BentoML's request metrics
label each request by its route, and a path no route takes is a 404 (route_metrics.py).
MODELPORT_* settings shared by both: services/core/server_settings.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.core import admission, api_keys, body_limit, route_metrics, shutdown
from services.core.admission import Limits
from services.core.server_settings import ServerSettings
from services.core.usage import CallCounts


def bentoml_traffic(limits: Limits, *, longest_request_s: float) -> dict[str, Any]:
    """BentoML's `traffic=` for a service admitted by `limits`.

    - timeout: BentoML answers 504 (in its own shape) when a response has not started by
      then; a request may wait its turn and then run, so it gets both.
    - concurrency: BentoCloud's autoscaler keeps each replica at about this many requests.
    - no max_concurrency: BentoML's own cap answers a bare 429 without Retry-After, in
      another error shape; admission's answer says when to come back.
    """
    return {"timeout": limits.max_queue_wait_s + longest_request_s, "concurrency": limits.max_in_flight}


def install(
    service: Any,
    app: FastAPI,
    limits: Limits,
    settings: ServerSettings | None = None,
    *,
    max_request_bytes: int,
    uncounted: tuple[str, ...] = (),
) -> None:
    """Shutdown guard, API keys, body limits and admission on `app`, the API the BentoML
    `service` mounts. POSTs under the `uncounted` path prefixes (e.g. review decisions) are not
    calls. Bodies held while their requests wait or run: max_in_flight of the largest."""
    settings = settings or ServerSettings.from_env()
    keys = api_keys.KeyRing.from_settings(settings.api_keys, settings.api_keys_file)
    if settings.metrics_require_key and keys.open:
        raise ValueError(
            "MODELPORT_METRICS_REQUIRE_KEY is set but no API keys are: set "
            "MODELPORT_API_KEYS or MODELPORT_API_KEYS_FILE"
        )
    # Starlette wraps the last added outermost.
    admitted = admission.install(app, limits)
    body_limit.install(
        app,
        body_limit.BodyRules(
            max_request_bytes, settings.body_timeout_s, limits.max_in_flight * max_request_bytes
        ),
        retry_after_s=admitted.retry_after_s,
    )
    if not keys.open:
        app.add_middleware(api_keys.ApiKeyMiddleware, keys=keys, counts=CallCounts(), uncounted=uncounted)
    shutdown.install(app, settings.shutdown_grace_s)
    if settings.metrics_require_key:
        service.add_asgi_middleware(api_keys.MetricsKeyGuard, keys=keys)
    api_keys.log_mode(keys, settings.metrics_require_key)
    route_metrics.install()
