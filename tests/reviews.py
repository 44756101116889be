"""Waiting for review items: the plate reader records photos after their answer, from a queue
(services/plate_reader/review_recorder.py), so a test lists them once they are written.

    items = recorded_reviews(url, count=2, camera_id="gate-1")
"""

from __future__ import annotations

import time
from typing import Any

import httpx


def recorded_reviews(
    url: str, *, count: int, headers: dict[str, str] | None = None, timeout_s: float = 20.0, **params: Any
) -> list[dict[str, Any]]:
    """GET /v1/reviews with `params` until it lists at least `count` items; those items."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(f"{url}/v1/reviews", params={"limit": 200, **params}, headers=headers)
        response.raise_for_status()
        items = response.json()["data"]
        if len(items) >= count or time.monotonic() > deadline:
            return items
        time.sleep(0.1)
