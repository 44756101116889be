"""Plate Recognizer's `usage` and /v1/statistics/ per API key, when keys are on: the calls the
key made this month (counted by services.core.api_keys in the shared database) and its
monthly quota. With no keys, the process-wide count of snapshot_api answers, as before.

    snapshot_api.set_usage_source(KeyedUsage(snapshot_api.usage_source))
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request

from services.core.api_keys import KeyUsage, usage_of
from services.core.usage import next_month_start
from services.plate_reader.snapshot_api import NO_QUOTA_MAX_CALLS, Usage, UsageSource


class KeyedUsage:
    def __init__(self, open_api: UsageSource) -> None:
        self.open_api = open_api  # what counts when no keys are configured

    def record(self, request: Request) -> Usage:
        """The call is already counted (before it ran, by the key middleware): report it."""
        usage = usage_of(request)
        return self.open_api.record(request) if usage is None else _as_snapshot(usage)

    def current(self, request: Request) -> Usage:
        usage = usage_of(request)
        return self.open_api.current(request) if usage is None else _as_snapshot(usage)


def _as_snapshot(usage: KeyUsage) -> Usage:
    now = datetime.now(UTC)
    return Usage(
        calls=usage.calls or 0,
        max_calls=usage.monthly_quota or NO_QUOTA_MAX_CALLS,
        month=now.month,
        year=now.year,
        resets_on=next_month_start(now),
    )
