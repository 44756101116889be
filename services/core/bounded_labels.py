"""Prometheus label values named by clients or users (camera ids, watchlist names, API key
owners): the first `limit` distinct ones kept, later ones counted as "other", so a client
sending a new value per request cannot grow /metrics without bound.

    camera = BoundedLabels(200, on_new=start_series_at_zero)
    PLATES_READ.labels(camera=camera(camera_id)).inc()
"""

from __future__ import annotations

from collections.abc import Callable

OTHER = "other"


class BoundedLabels:
    """`on_new(value)` runs once per kept value (to start its series at 0)."""

    def __init__(self, limit: int, on_new: Callable[[str], None] = lambda _: None) -> None:
        self.limit, self.on_new = limit, on_new
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        self.on_new(value)
        return value
