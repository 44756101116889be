"""Request metrics labelled by route, and a path no route takes answered 404 in the error shape.

BentoML (1.4.39) counts every request in a middleware outside any a service can add, with the
raw path as the `endpoint` label: 200 requests to random unknown paths added 4,000 series and
the plate reader's /metrics grew to 3.4 MB (issue 20), and each id in /v1/reviews/{id} would
add its own. A path no route takes also got Starlette's plain-text "Not Found".

`install()` (from traffic.install) gives BentoML, in place of that middleware, a subclass of it
that labels each request with its route's template (`/v1/reviews/{item_id}`: the route the
router matches, or in a mounted app the OpenAPI path that fits) and answers a path no route
takes with a 404 in the error shape right there, counted under the one label `/{unknown}`.
BentoML builds each worker's app from that module attribute, by name, after the service module
is imported. BentoML has no hook for this (its metrics middleware is the outermost), so
tests/e2e/test_unknown_paths.py checks the labels and the series on a real server.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from bentoml._internal.server.http import instruments
from starlette.routing import BaseRoute, Match, Mount, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from services.core.api_errors import ApiError

UNKNOWN = "/{unknown}"  # the one label of every path no route takes
_RAW_PATH = "modelport.raw_path"  # the request's own path, while the label stands in for it


def route_label(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The template of the route the router picks for `scope` (also when only the path matches,
    and the answer is 405; or when the router redirects to the path with(out) its last slash),
    else UNKNOWN. Inside a mount, the mounted app's templates are those of its OpenAPI paths."""
    path = scope["path"]
    candidates = [path] if path == "/" else [path, path[:-1] if path.endswith("/") else path + "/"]
    for candidate in candidates:
        partial = None
        for route in routes:
            match, _ = route.matches({**scope, "path": candidate})
            if match is Match.FULL:
                return _template(route, candidate)
            if match is Match.PARTIAL and partial is None:
                partial = _template(route, candidate)
        if partial is not None:
            return partial
    return UNKNOWN


def _template(route: BaseRoute, path: str) -> str:
    prefix = getattr(route, "path", "")
    if not isinstance(route, Mount):
        return prefix
    rest = path[len(prefix) :] or "/"
    for pattern, template in _openapi_templates(route.app):
        if pattern.match(rest):
            return prefix + template
    return prefix + "/{path}"  # in the mount, but not an API path (docs, static files)


@functools.cache
def _openapi_templates(app: Any) -> tuple[tuple[re.Pattern[str], str], ...]:
    openapi = getattr(app, "openapi", None)
    if openapi is None:
        return ()
    return tuple((compile_path(template)[0], template) for template in openapi().get("paths", {}))


class RouteLabelledMetrics(instruments.RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics (same names and labels) with `endpoint` = the route template.

    The base class labels with `scope["path"]`, so it is given a copy of the scope whose path
    is the label; `_RequestPath`, next inside, puts the request's own path back (or answers an
    unknown path) before anything else sees the request."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        super().__init__(_RequestPath(app), **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "app" in scope:  # `app`: the Starlette app, set by it
            label = route_label(scope["app"].routes, scope)
            if label != scope["path"]:
                scope = {**scope, "path": label, _RAW_PATH: scope["path"]}
        await super().__call__(scope, receive, send)


class _RequestPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _RAW_PATH not in scope:
            await self.app(scope, receive, send)
            return
        label = scope["path"]
        scope = {**scope, "path": scope[_RAW_PATH]}
        del scope[_RAW_PATH]
        if label == UNKNOWN:
            await ApiError(
                404, "no such path on this server: its API is listed at /v1/docs", code="not_found"
            ).response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install() -> None:
    """Have BentoML build its apps with `RouteLabelledMetrics`; call before it builds them (at
    the service module's import)."""
    instruments.RunnerTrafficMetricsMiddleware = RouteLabelledMetrics  # type: ignore[misc, assignment]  # BentoML has no hook for this middleware: replaced in its module
