"""The webhook outbox: one row per (event, target) in the review queue's database (SQLite by
default, PostgreSQL by URL; table from migration 0004), so a restart or a receiver down for hours
loses nothing.

    outbox = Outbox(database_engine(url))
    outbox.add([Row(event_id, "parking", "recognition", body, created_at)])  # one transaction
    for row in outbox.claim(limit=16, lease_s=30): ...                         # leased to this process
    outbox.delivered(row) | outbox.retry_at(row, when, "connect") | outbox.failed(row, "expired")

Several processes (server workers, replicas) share the table: `claim` leases rows with one
UPDATE that only takes rows whose lease has run out, so two never send the same row at the same
time; a process killed mid-send leaves a lease that runs out, then another sends the row again
(at least once; the receiver drops the repeat by its `webhook-id`).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

metadata = sa.MetaData()
outbox_table = sa.Table(
    "webhook_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(40), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),  # Unix seconds
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(40)),
    sa.Column("lease_until", sa.Float),
    sa.Column("last_error", sa.String(300)),
    sa.Column("finished_at", sa.Float),
)


@dataclass(frozen=True)
class Row:
    event_id: str
    target: str
    kind: str
    body: str
    created_at: float


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: str
    target: str
    kind: str
    body: str
    created_at: float
    attempts: int  # before this one
    lease: str


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: Callable[[], float] = random.random) -> float:
    """Wait before retry number `attempt` (1 after the first failure): base x 2^(attempt-1),
    at most cap, then jittered to 50-100% of that so retries of one outage spread out."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 60))
    return ceiling * (0.5 + 0.5 * rng())


class Outbox:
    def __init__(self, engine: sa.Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def add(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        with self.engine.begin() as connection:
            connection.execute(
                outbox_table.insert(),
                [
                    {
                        "event_id": r.event_id,
                        "target": r.target,
                        "kind": r.kind,
                        "body": r.body,
                        "created_at": r.created_at,
                        "status": PENDING,
                        "attempts": 0,
                        "next_attempt_at": r.created_at,
                    }
                    for r in rows
                ],
            )

    def claim(self, *, limit: int, lease_s: float) -> list[Claimed]:
        """Up to `limit` due rows, oldest first, leased to this call for `lease_s`."""
        now = self.clock()
        lease = uuid.uuid4().hex
        t = outbox_table
        free = sa.or_(t.c.lease_until.is_(None), t.c.lease_until < now)
        due = (
            sa.select(t.c.id)
            .where(t.c.status == PENDING, t.c.next_attempt_at <= now, free)
            .order_by(t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL: rows another claim holds are passed over
        )
        with self.engine.begin() as connection:
            # The lease condition again on the UPDATE itself, so a row is taken only while free
            # (SQLite has no FOR UPDATE: its writers take turns on the whole file).
            connection.execute(
                t.update()
                .where(t.c.id.in_(due.scalar_subquery()), t.c.status == PENDING, free)
                .values(lease_owner=lease, lease_until=now + lease_s)
            )
            rows = connection.execute(
                sa.select(t.c.id, t.c.event_id, t.c.target, t.c.kind, t.c.body, t.c.created_at, t.c.attempts)
                .where(t.c.lease_owner == lease)
                .order_by(t.c.id)
            ).all()
        return [Claimed(*row, lease=lease) for row in rows]

    def delivered(self, row: Claimed) -> None:
        self._finish(row, DELIVERED, None)

    def failed(self, row: Claimed, error: str) -> None:
        self._finish(row, FAILED, error)

    def retry_at(self, row: Claimed, when: float, error: str) -> None:
        self._update(
            row, attempts=row.attempts + 1, next_attempt_at=when, last_error=error[:300], lease_until=None
        )

    def _finish(self, row: Claimed, status: str, error: str | None) -> None:
        self._update(
            row,
            status=status,
            attempts=row.attempts + 1,
            finished_at=self.clock(),
            last_error=error[:300] if error else None,
            lease_until=None,
        )

    def _update(self, row: Claimed, **values: object) -> None:
        t = outbox_table
        with self.engine.begin() as connection:  # only while the lease is still ours
            connection.execute(
                t.update().where(t.c.id == row.id, t.c.lease_owner == row.lease).values(**values)
            )

    def pending(self) -> tuple[int, float | None]:
        """Rows not yet delivered or given up, and the oldest one's creation time."""
        t = outbox_table
        with self.engine.connect() as connection:
            count, oldest = connection.execute(
                sa.select(sa.func.count(), sa.func.min(t.c.created_at)).where(t.c.status == PENDING)
            ).one()
        return int(count), oldest

    def purge(self, finished_before: float) -> int:
        """Delete rows delivered or given up before this time; how many."""
        t = outbox_table
        with self.engine.begin() as connection:
            result = connection.execute(
                t.delete().where(t.c.status != PENDING, t.c.finished_at < finished_before)
            )
        return int(result.rowcount)
