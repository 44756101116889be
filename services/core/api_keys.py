"""API keys for both services: who may call, with which role, and how many calls a month.

    MODELPORT_API_KEYS=k3Yk3Yk3Yk3Yk3Yk3Y,0therKey0therKey0     # comma-separated
    MODELPORT_API_KEYS_FILE=/etc/modelport/api-keys             # one key a line:
        # KEY                        [ROLE: reader|reviewer|admin]  [MONTHLY QUOTA]  [name=N] [model=M]
        k3Yk3Yk3Yk3Yk3Yk3Y           reader  1000
        0therKey0therKey0            admin
        a1iceA1iceA1iceA1ice         reader  name=alice  model=alice-notes

`name=` names who the key belongs to (the `owner` of the autocompleter's user versions it may
use; without one, `ApiKey.id`); `model=` is its default model when a request names none.

Clients send `Authorization: Bearer KEY` (the OpenAI SDK's `api_key=`) or
`Authorization: Token KEY` (Plate Recognizer's clients). With no keys configured the API is
open, as before, and the start-up log says so. A missing or wrong key is a 401 in the API's
error shape; a key past its monthly quota a 429 until the month (UTC) ends.

Keys are kept and compared as SHA-256 digests (`hmac.compare_digest`, against every key, so
the time taken says nothing about which key came close); logs and the call counts name a key
by `ApiKey.id`, a prefix of that digest, never by the key.

A call is a POST answered 2xx, counted per key and month in the database the review queue
uses (usage.py); `usage_of(request)` gives a route the caller's count and quota. Roles rank
reader < reviewer < admin; a route that needs more than reading declares it with
`Depends(role_at_least("reviewer"))`. /livez, /readyz and /metrics are BentoML's routes,
outside the API's app: open (`MetricsKeyGuard` keys /metrics when asked).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request

from services.core.api_errors import ApiError
from services.core.usage import CallCounts, next_month_start, this_month

logger = logging.getLogger("bentoml.modelport")  # BentoML only shows INFO under "bentoml"

ROLES = ("reader", "reviewer", "admin")
DEFAULT_ROLE = "reader"
MIN_KEY_LENGTH = 16  # ~96 bits as base64: not guessable, and short enough to paste
SCHEMES = ("bearer", "token")  # OpenAI SDK, Plate Recognizer clients
# Always open: the API's own documentation (FastAPI's pages, relative to where the app is mounted).
OPEN_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
HOW_TO_SEND = "send it as `Authorization: Bearer KEY` (or `Authorization: Token KEY`)"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class ApiKey:
    digest: bytes = field(repr=False)
    role: str = DEFAULT_ROLE
    monthly_quota: int | None = None  # calls per calendar month (UTC); None: no limit
    name: str | None = None  # whose key it is: the owner of the user versions it may use
    model: str | None = None  # its default model (the autocompleter's user version)

    @property
    def id(self) -> str:
        """Names the key in logs and statistics without revealing it."""
        return self.digest.hex()[:12]

    @property
    def owner(self) -> str:
        return self.name or self.id


def parse_keys_file(text: str, source: str = "keys file") -> list[ApiKey]:
    """`KEY [ROLE] [QUOTA]` a line, `#` comments; ValueError names the line (never the key)."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{source}, line {number}"
        key, rest = words[0], [w for w in words[1:] if "=" not in w]
        options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        if set(options) - {"name", "model"} or not all(options.values()):
            raise ValueError(f"{where}: options are name=NAME and model=MODEL, got {sorted(options)}")
        role = rest.pop(0) if rest and not rest[0].isdigit() else DEFAULT_ROLE
        if role not in ROLES:
            raise ValueError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        quota = None
        if rest:
            if not rest[0].isdigit() or int(rest[0]) < 1:
                raise ValueError(f"{where}: the monthly quota must be a whole number >= 1, got {rest[0]!r}")
            quota = int(rest.pop(0))
        if rest:
            raise ValueError(
                f"{where}: expected KEY [ROLE] [MONTHLY QUOTA] [name=NAME] [model=MODEL], "
                f"found {len(words)} words"
            )
        checked = _checked(key, where, role, quota)
        keys.append(dataclasses.replace(checked, name=options.get("name"), model=options.get("model")))
    return keys


def _checked(key: str, where: str, role: str = DEFAULT_ROLE, quota: int | None = None) -> ApiKey:
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(
            f"{where}: a key is shorter than {MIN_KEY_LENGTH} characters; make "
            "one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return ApiKey(digest(key), role, quota)


class KeyRing:
    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)
        ids = [k.digest for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("the same API key is listed twice; keep one line per key")

    @classmethod
    def from_settings(cls, api_keys: Iterable[str], api_keys_file: str = "") -> KeyRing:
        """MODELPORT_API_KEYS (role reader, no quota) plus MODELPORT_API_KEYS_FILE's keys."""
        keys = [_checked(k, "MODELPORT_API_KEYS") for k in api_keys]
        if api_keys_file:
            path = Path(api_keys_file).expanduser()
            keys += parse_keys_file(path.read_text(), f"MODELPORT_API_KEYS_FILE {path}")
        return cls(keys)

    @property
    def open(self) -> bool:
        return not self.keys

    def find(self, token: str) -> ApiKey | None:
        presented, found = digest(token), None
        for key in self.keys:  # every key compared, whichever matches
            if hmac.compare_digest(presented, key.digest):
                found = key
        return found


def token_from(authorization: str | None) -> str | None:
    """The key in `Bearer KEY` / `Token KEY` (scheme in any case); None if there is none."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() in SCHEMES and token else None


def check(keys: KeyRing, authorization: str | None) -> ApiKey:
    """The caller's key, or a 401 ApiError saying how to send one."""
    token = token_from(authorization)
    key = keys.find(token) if token else None
    if key is None:
        message = (
            f"this API needs a key: {HOW_TO_SEND}"
            if not authorization
            else f"the API key is not valid, or not sent the right way: {HOW_TO_SEND}"
        )
        raise ApiError(
            401,
            message,
            code="missing_api_key" if not authorization else "invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="modelport"'},
        )
    return key


def quota_reached(key: ApiKey, now: datetime | None = None) -> ApiError:
    now = now or datetime.now(UTC)
    resets = next_month_start(now)
    return ApiError(
        429,
        f"this key's monthly quota of {key.monthly_quota} calls is used up; it "
        f"resets on {resets:%Y-%m-%d} (UTC)",
        code="quota_exceeded",
        type="insufficient_quota",
        headers={"Retry-After": str(int((resets - now).total_seconds()) + 1)},
    )


@dataclass(frozen=True)
class KeyUsage:
    key_id: str
    role: str
    calls: int | None  # this month (UTC), the current call included; None: not known (database down)
    monthly_quota: int | None


def usage_of(request: Request) -> KeyUsage | None:
    """The calling key's usage this month; None when the API is open (no keys)."""
    state = request.state
    key: ApiKey | None = getattr(state, "api_key", None)
    if key is None:
        return None
    calls = getattr(state, "api_calls", None)  # counted by the middleware: a POST
    if calls is None and getattr(state, "api_call_counts", None) is not None:
        try:
            calls = state.api_call_counts.calls(key.id)
        except Exception:  # the database is down: the answer goes out without the count
            _log_counting_failure()
    return KeyUsage(key.id, key.role, calls, key.monthly_quota)


def role_at_least(role: str) -> Callable[[Request], None]:
    """A FastAPI dependency: 403 unless the caller's key has `role` or a higher one (no check
    when the API is open)."""
    needed = ROLES.index(role)

    def dependency(request: Request) -> None:
        key: ApiKey | None = getattr(request.state, "api_key", None)
        if key is not None and ROLES.index(key.role) < needed:
            raise ApiError(
                403,
                f"this needs a key with the {role} role (or higher); this key is a {key.role} key",
                code="insufficient_role",
            )

    return dependency


class ApiKeyMiddleware:
    """ASGI middleware on the API's app: checks the key of every request but the docs pages,
    puts it on `request.state.api_key`, and counts each POST, refunded unless answered 2xx."""

    def __init__(self, app: Any, keys: KeyRing, counts: CallCounts, uncounted: tuple[str, ...] = ()) -> None:
        self.app, self.keys, self.counts, self.uncounted = app, keys, counts, uncounted

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or _route_path(scope) in OPEN_PATHS:
            return await self.app(scope, receive, send)
        try:
            key = check(self.keys, _header(scope, b"authorization"))
        except ApiError as refusal:
            return await refusal.response()(scope, receive, send)
        state = scope.setdefault("state", {})
        state["api_key"], state["api_call_counts"] = key, self.counts
        if scope["method"] != "POST" or _route_path(scope).startswith(self.uncounted or ("\0",)):
            return await self.app(scope, receive, send)
        month = this_month()
        try:  # in a thread: on PostgreSQL this is a round trip
            calls = await asyncio.to_thread(self.counts.reserve, key.id, key.monthly_quota, month)
        except Exception:  # the database is down: serve, uncounted, rather than refuse everyone
            _log_counting_failure()
            return await self.app(scope, receive, send)
        if calls is None:
            return await quota_reached(key).response()(scope, receive, send)
        state["api_calls"] = calls
        status = 0

        async def watching_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            if not 200 <= status < 300:  # refused, failed or cut short: not a call
                try:
                    await asyncio.to_thread(self.counts.refund, key.id, month)
                except Exception:
                    _log_counting_failure()


_last_failure_log = 0.0


def _log_counting_failure() -> None:
    """Log why calls are not counted, at most once a minute (it fails for every call)."""
    global _last_failure_log
    if time.monotonic() - _last_failure_log > 60:
        _last_failure_log = time.monotonic()
        logger.exception(
            "API keys: could not count calls in the database; serving without "
            "counting (quotas not enforced) until it answers again"
        )


class MetricsKeyGuard:
    """ASGI middleware on BentoML's own app, for MODELPORT_METRICS_REQUIRE_KEY: /metrics is
    BentoML's route, outside the API's app, so only a middleware of the service reaches it."""

    def __init__(self, app: Any, keys: KeyRing) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == "/metrics":
            try:
                check(self.keys, _header(scope, b"authorization"))
            except ApiError as refusal:
                return await refusal.response()(scope, receive, send)
        await self.app(scope, receive, send)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _route_path(scope: dict[str, Any]) -> str:
    """The path inside a mounted app (Starlette keeps the mount's prefix in `root_path`)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def log_mode(keys: KeyRing, metrics_keyed: bool) -> None:
    if keys.open:
        logger.info(
            "API keys: none configured, so the API is open to anyone who can reach it "
            "(set MODELPORT_API_KEYS or MODELPORT_API_KEYS_FILE to require keys)"
        )
        return
    roles = {role: sum(k.role == role for k in keys.keys) for role in ROLES}
    logger.info(
        "API keys: %d accepted (%s); /metrics %s",
        len(keys.keys),
        ", ".join(f"{n} {role}" for role, n in roles.items() if n),
        "needs a key" if metrics_keyed else "open",
    )
