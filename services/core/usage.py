"""Calls per API key and calendar month (UTC), kept in the local database: what a monthly quota
is checked against and what a statistics route reports. Keys appear only by their id (a hash
prefix, `api_keys.ApiKey.id`), never as the key.

    counts = CallCounts(LocalDatabase.open())
    counts.record("3f2a9c1e0b7d")        # 1 call this month
    counts.calls("3f2a9c1e0b7d")         # this month's calls; counts.total(...) for all time
"""

from __future__ import annotations

from datetime import datetime, timezone

from services.core.local_db import LocalDatabase


def this_month(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m")


def next_month_start(now: datetime | None = None) -> datetime:
    """When this month's counts stop applying: the 1st of next month, 00:00 UTC."""
    now = now or datetime.now(timezone.utc)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=timezone.utc)


class CallCounts:
    def __init__(self, db: LocalDatabase) -> None:
        self.db = db
        db.run("CREATE TABLE IF NOT EXISTS api_calls (key_id TEXT NOT NULL, month TEXT NOT NULL, "
               "calls INTEGER NOT NULL, PRIMARY KEY (key_id, month))")

    def record(self, key_id: str, month: str | None = None) -> int:
        """Count one call; the month's count after it."""
        [(calls,)] = self.db.run(
            "INSERT INTO api_calls VALUES (?, ?, 1) ON CONFLICT (key_id, month) "
            "DO UPDATE SET calls = calls + 1 RETURNING calls", (key_id, month or this_month()))
        return int(calls)

    def calls(self, key_id: str, month: str | None = None) -> int:
        rows = self.db.run("SELECT calls FROM api_calls WHERE key_id = ? AND month = ?",
                           (key_id, month or this_month()))
        return int(rows[0][0]) if rows else 0

    def total(self, key_id: str) -> int:
        [(calls,)] = self.db.run("SELECT COALESCE(SUM(calls), 0) FROM api_calls WHERE key_id = ?",
                                 (key_id,))
        return int(calls)
