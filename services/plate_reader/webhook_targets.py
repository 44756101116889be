"""Webhook targets (MODELPORT_PLATE_WEBHOOKS), the body each is sent and how it is signed.

    targets = parse_targets(settings.webhooks, dev_hosts=settings.webhook_dev_hosts)
    event = Event("recognition", camera_id="gate-1", results=[...], filename="car.jpg", timestamp=...)
    body = payload(target, event)                        # bytes, Plate Recognizer's webhook shape
    headers = signed_headers(target, event.id, body)     # Standard Webhooks headers

MODELPORT_PLATE_WEBHOOKS holds a JSON list, or the path of a file that holds one:

    [{"url": "https://hooks.example.com/plates", "secret": "whsec_<base64>",
      "events": ["recognition", "vehicle", "watchlist"], "cameras": ["gate-1"], "name": "parking"}]

`events` defaults to every kind, `cameras` to every camera (a read without camera_id goes only
to targets without a camera filter), `name` to the URL's host (it is `hook.id` in the body and
the `target` label on /metrics). A URL follows `upload_url`'s rules (upload_url.py): https, no
user:password@, and at delivery every address its host resolves to must be public (the
connection goes only to the addresses checked). Hosts in MODELPORT_PLATE_WEBHOOK_DEV_HOSTS are
exempt (http and loopback/private addresses allowed): for tests and development only.

Signing follows the Standard Webhooks spec (standardwebhooks.com), so receivers can verify with
its libraries (pip/npm `standardwebhooks`) or a few lines of hmac (README "Webhooks"):
`webhook-id` (the event id, the same on every retry: the idempotency key), `webhook-timestamp`
(Unix seconds of this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{raw body}">` with the secret's bytes (base64 after `whsec_`). The id and time
are signed with the body so a captured delivery cannot be replayed under a new timestamp.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.plate_reader.upload_url import address_refusal

KINDS = (
    "recognition",
    "vehicle",
    "watchlist",
)  # photo reads, vehicle events (video, streams), watchlist hits
SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)  # Standard Webhooks' bounds on the secret's length
MAKE_SECRET = (
    'python -c "import base64, secrets; '
    "print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\""
)
SETTING = "MODELPORT_PLATE_WEBHOOKS"


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: bytes = field(repr=False)
    name: str
    events: frozenset[str] = frozenset(KINDS)
    cameras: frozenset[str] = frozenset()  # empty: every camera
    dev: bool = False  # its host is in MODELPORT_PLATE_WEBHOOK_DEV_HOSTS: no https or address rules

    def wants(self, kind: str, camera_id: str | None) -> bool:
        return kind in self.events and (not self.cameras or camera_id in self.cameras)


@dataclass(frozen=True)
class Event:
    """One thing that happened, sent to every target that wants its kind and camera."""

    kind: str
    camera_id: str | None
    results: Sequence[Mapping[str, Any]]
    filename: str | None
    timestamp: str  # ISO 8601, UTC
    id: str = field(default_factory=lambda: "evt_" + uuid.uuid4().hex)


def parse_targets(text: str, *, dev_hosts: Iterable[str] = ()) -> tuple[WebhookTarget, ...]:
    """The targets in `text` (JSON, or a path to a JSON file); a ValueError naming the setting,
    the target and what to fix when anything is wrong."""
    text = text.strip()
    if not text:
        return ()
    source = SETTING
    if not text.startswith(("[", "{")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError(f"{SETTING}={text[:200]!r} is neither JSON nor a file that exists")
        source, text = f"{SETTING} file {path}", path.read_text()
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc}") from None
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f'{source} must be a JSON list of objects like {{"url": ..., "secret": ...}}')
    dev = {h.strip().lower().rstrip(".") for h in dev_hosts if h.strip()}
    targets = tuple(_target(item, f"{source}[{i}]", dev) for i, item in enumerate(items))
    names = [t.name for t in targets]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"{source}: two targets are named {name!r}; give each a distinct `name`")
    return targets


def _target(item: Mapping[str, Any], where: str, dev_hosts: set[str]) -> WebhookTarget:
    unknown = set(item) - {"url", "secret", "events", "cameras", "name"}
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {sorted(unknown)}; known: url, secret, events, cameras, name"
        )
    url = item.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{where}: `url` is required, e.g. https://hooks.example.com/plates")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"{where}: `url` {url[:200]!r} is not a valid URL ({exc})") from None
    host = parsed.host.lower().rstrip(".")
    is_dev = host in dev_hosts
    if not host or parsed.scheme not in (("https", "http") if is_dev else ("https",)):
        raise ValueError(f"{where}: `url` must be an https:// URL with a host, not {url[:200]!r}")
    if parsed.userinfo:
        raise ValueError(f"{where}: `url` must not hold a user name or password (user:pass@host)")
    if not is_dev and _is_ip(host) and (reason := address_refusal(host)):
        raise ValueError(
            f"{where}: `url` {url[:200]!r} is a {reason} address; webhooks go only to public ones"
        )
    events = item.get("events", list(KINDS))
    if isinstance(events, str):
        events = [events]
    if not isinstance(events, list) or not events or not set(events) <= set(KINDS):
        raise ValueError(f"{where}: `events` must list some of {', '.join(KINDS)}, not {events!r}")
    cameras = item.get("cameras", [])
    if isinstance(cameras, str):
        cameras = [cameras]
    if not isinstance(cameras, list) or not all(isinstance(c, str) and c for c in cameras):
        raise ValueError(f"{where}: `cameras` must be a list of camera ids, not {cameras!r}")
    name = item.get("name", host)
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise ValueError(f"{where}: `name` must be text of 1-64 characters, not {name!r}")
    return WebhookTarget(
        str(parsed), _secret(item.get("secret"), where), name, frozenset(events), frozenset(cameras), is_dev
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _secret(value: Any, where: str) -> bytes:
    fix = f"make one with: {MAKE_SECRET}"
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise ValueError(f"{where}: `secret` is required, whsec_ followed by base64 of random bytes; {fix}")
    try:
        key = base64.b64decode(value.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: `secret` after whsec_ is not valid base64; {fix}") from None
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"{where}: `secret` holds {len(key)} bytes, {low}-{high} are needed; {fix}")
    return key


def payload(target: WebhookTarget, event: Event) -> bytes:
    """The body: Plate Recognizer's webhook shape (`hook` {target, id, event}, `data` {filename,
    timestamp, camera_id, results}), plus `data.event_id` (also the webhook-id header)."""
    body = {
        "hook": {"target": target.url, "id": target.name, "event": event.kind},
        "data": {
            "event_id": event.id,
            "filename": event.filename,
            "timestamp": event.timestamp,
            "camera_id": event.camera_id,
            "results": list(event.results),
        },
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    target: WebhookTarget, event_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        "content-type": "application/json",
        "user-agent": "modelport-webhooks/1",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(target.secret, event_id, timestamp, body),
    }
