"""Calls per API key and calendar month (UTC), in the database the review queue uses
(database.py: SQLite in the data folder, or PostgreSQL shared by replicas, so a quota holds
across them). Keys appear only by their id (`api_keys.ApiKey.id`, a hash prefix), never as
the key.

    counts = CallCounts()                       # MODELPORT_DATABASE_URL, else SQLite in the data folder
    counts.reserve("3f2a9c1e0b7d", quota=1000)  # this call counted: the month's count, or None at the quota
    counts.refund("3f2a9c1e0b7d", month)        # ... it was not answered after all
    counts.calls("3f2a9c1e0b7d")                # this month's calls; counts.total(...) for all time

A call is counted before it runs (so concurrent calls cannot all slip under a quota) and
refunded if it is not answered 2xx. The database is opened on first use, in the worker that
serves, not when the service module is imported.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from services.core.database import database_engine


def this_month(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m")


def next_month_start(now: datetime | None = None) -> datetime:
    """When this month's counts stop applying: the 1st of next month, 00:00 UTC."""
    now = now or datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


# One statement, the same on SQLite (3.35+) and PostgreSQL: count the call unless the quota
# is reached; no row comes back when it is.
_RESERVE = sa.text(
    "INSERT INTO api_calls (key_id, month, calls) VALUES (:key_id, :month, 1) "
    "ON CONFLICT (key_id, month) DO UPDATE SET calls = api_calls.calls + 1 "
    "WHERE api_calls.calls < :quota RETURNING calls"
)
_REFUND = sa.text(
    "UPDATE api_calls SET calls = calls - 1 WHERE key_id = :key_id AND month = :month AND calls > 0"
)
_CALLS = sa.text("SELECT calls FROM api_calls WHERE key_id = :key_id AND month = :month")
_TOTAL = sa.text("SELECT COALESCE(SUM(calls), 0) FROM api_calls WHERE key_id = :key_id")
NO_QUOTA = 2**62  # the quota a key without one is checked against


class CallCounts:
    def __init__(self, database_url: str = "") -> None:
        self.database_url = database_url  # empty: MODELPORT_DATABASE_URL, else the data folder

    @property
    def engine(self) -> sa.Engine:
        return database_engine(self.database_url)  # one per process, migrated on first use

    def reserve(self, key_id: str, quota: int | None = None, month: str | None = None) -> int | None:
        """Count one call unless `quota` calls were already made this month; the month's
        count including it, or None when the quota is reached."""
        with self.engine.begin() as db:
            row = db.execute(
                _RESERVE,
                {
                    "key_id": key_id,
                    "month": month or this_month(),
                    "quota": NO_QUOTA if quota is None else quota,
                },
            ).first()
        return None if row is None else int(row[0])

    def refund(self, key_id: str, month: str) -> None:
        with self.engine.begin() as db:
            db.execute(_REFUND, {"key_id": key_id, "month": month})

    def calls(self, key_id: str, month: str | None = None) -> int:
        with self.engine.connect() as db:
            found = db.execute(_CALLS, {"key_id": key_id, "month": month or this_month()}).scalar()
        return int(found or 0)

    def total(self, key_id: str) -> int:
        with self.engine.connect() as db:
            return int(db.execute(_TOTAL, {"key_id": key_id}).scalar() or 0)
