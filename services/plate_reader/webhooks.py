"""Webhooks that lose nothing: each event is written to the outbox (webhook_outbox.py, the review
queue's database) and a delivery worker sends it, signed, retrying with backoff until it is
delivered or older than MODELPORT_PLATE_WEBHOOK_MAX_AGE_S.

For other parts of the plate reader (video, streams), one function:

    from services.plate_reader import webhooks
    future = webhooks.publish("vehicle", camera_id="gate-1", results=[...], filename="clip.mp4",
                              timestamp=datetime.now(UTC))
    await asyncio.wrap_future(future)   # optional: the event is in the outbox (rows written: int)

`publish` never blocks and never raises: it queues the event for this process's writer thread,
which writes everything queued in one transaction, and returns a concurrent Future of the rows
written (0 when no target wants the kind and camera, or webhooks are off). `results` are the
reading results as the API answers them (snapshot_api.to_response's `results`); `timestamp` a
datetime (UTC if naive) or ISO text. A result that carries non-empty `watchlist` matches also
makes a `watchlist` event (only those results) for the targets that want one. Targets, body,
headers: webhook_targets.py; README "Webhooks".

Photo reads call `record_answers(bodies)` after the answer is built and before it is sent: it
waits for the write (at most WRITE_WAIT_S), so an answer a client got is an event on disk;
a slow or failing database is logged and counted, never a failed read. The service calls
`start(settings)` in its __init__ (bad targets fail the start with a clear error) and `close()`
at shutdown; a process that only publishes (`modelport watch`) starts one from the environment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import bentoml
import httpx

from services.core.env_settings import read_env
from services.plate_reader.settings import Settings
from services.plate_reader.upload_url import PinnedTransport, Resolver, address_refusal, system_resolver
from services.plate_reader.webhook_outbox import Claimed, Outbox, Row, backoff_s
from services.plate_reader.webhook_targets import (
    KINDS,
    Event,
    WebhookTarget,
    parse_targets,
    payload,
    signed_headers,
)

logger = logging.getLogger("bentoml.modelport.webhooks")

WRITE_WAIT_S = 2.0  # a photo's answer waits at most this for its event's write
MAX_QUEUED = 10_000  # events waiting for the writer; beyond it one is dropped and counted
CLAIM_BATCH = 16  # rows sent at once by one process
POLL_S = 1.0  # how often due retries are looked for (new events wake the worker at once)
PURGE_EVERY_S = 300.0  # finished rows are deleted this often (a write: not every poll)

# Failure reasons that mean an event is gone for good (the PlateWebhookEventsLost alert).
LOST = ("expired", "outbox_write", "outbox_full")
DELIVERIES = bentoml.metrics.Counter(
    name="modelport_webhook_deliveries",
    documentation="Webhook events delivered (a 2xx from the receiver)",
    labelnames=["target"],
)
FAILURES = bentoml.metrics.Counter(
    name="modelport_webhook_failures",
    documentation="Failed webhook attempts and events given up or lost, by reason",
    labelnames=["target", "reason"],
)
RETRIES = bentoml.metrics.Counter(
    name="modelport_webhook_retries",
    documentation="Webhook attempts after an event's first",
    labelnames=["target"],
)
# Set from the database every POLL_S by each process's worker (livemax: one value, not a sum).
PENDING = bentoml.metrics.Gauge(
    name="modelport_webhook_outbox_pending",
    multiprocess_mode="livemax",
    documentation="Webhook events waiting in the outbox (every target)",
)
OLDEST_PENDING_AGE = bentoml.metrics.Gauge(
    name="modelport_webhook_oldest_pending_age_seconds",
    multiprocess_mode="livemax",
    documentation="Age of the oldest webhook event not yet delivered (0 when none)",
)


@dataclass(frozen=True)
class Policy:
    max_age_s: float
    backoff_s: float
    backoff_max_s: float
    timeout_s: float

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            settings.webhook_max_age_s,
            settings.webhook_backoff_s,
            settings.webhook_backoff_max_s,
            settings.webhook_timeout_s,
        )

    @property
    def lease_s(self) -> float:  # longer than one attempt can take, so no other process sends it meanwhile
        return 2 * self.timeout_s + 5


class Webhooks:
    def __init__(
        self,
        targets: Sequence[WebhookTarget],
        outbox: Callable[[], Outbox],
        policy: Policy,
        *,
        resolve: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = {t.name: t for t in targets}
        self.policy = policy
        self.resolve = resolve
        self.clock = clock
        self._outbox_factory = outbox
        self._outbox: Outbox | None = None
        self._queue: queue.Queue[tuple[list[Row], concurrent.futures.Future[int]] | None] = queue.Queue(
            MAX_QUEUED
        )
        self._stop = threading.Event()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        for target in self.targets:  # every count from 0, so rate() and increase() see the first
            DELIVERIES.labels(target=target)
            RETRIES.labels(target=target)
            for reason in LOST:
                FAILURES.labels(target=target, reason=reason)
        if self.targets:
            for name, run in (("webhook-writer", self._write), ("webhook-sender", self._send)):
                thread = threading.Thread(target=run, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    # --- events in -------------------------------------------------------------------

    def publish(
        self,
        kind: str,
        camera_id: str | None,
        results: Sequence[Mapping[str, Any]],
        filename: str | None,
        timestamp: datetime | str | None = None,
    ) -> concurrent.futures.Future[int]:
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        try:
            rows = self._rows(kind, camera_id, results, filename, timestamp)
            if not rows or self._stop.is_set():
                future.set_result(0)
                return future
            # Running: a caller that stops waiting (record_answers' time limit cancels its
            # asyncio wrapper) cannot cancel it, so the writer can always set its result.
            future.set_running_or_notify_cancel()
            self._queue.put_nowait((rows, future))
        except queue.Full:
            for row in rows:
                FAILURES.labels(target=row.target, reason="outbox_full").inc()
            logger.error("webhook outbox queue full (%d events): an event was dropped", MAX_QUEUED)
            future.set_result(0)
        except Exception as exc:  # a bad event from a caller: logged, never their failure
            logger.exception("could not publish a %s webhook event", kind)
            future.set_exception(exc)
        return future

    async def record_answers(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        """Photo answers (snapshot_api.to_response's bodies) as `recognition` events, written
        before the answer goes out (at most WRITE_WAIT_S)."""
        if not self.targets:
            return
        futures = [
            self.publish(
                "recognition", b.get("camera_id"), b.get("results", []), b.get("filename"), b.get("timestamp")
            )
            for b in bodies
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)), WRITE_WAIT_S)
        except TimeoutError:
            logger.warning("webhook events not written within %.1f s: answering anyway", WRITE_WAIT_S)
        except Exception:
            logger.exception("webhook events could not be written: answering anyway")

    def _rows(
        self,
        kind: str,
        camera_id: str | None,
        results: Sequence[Mapping[str, Any]],
        filename: str | None,
        timestamp: datetime | str | None,
    ) -> list[Row]:
        if kind not in KINDS:
            raise ValueError(f"webhook event kind {kind!r} is not one of {', '.join(KINDS)}")
        moment = _iso(timestamp)
        events = [Event(kind, camera_id, list(results), filename, moment)]
        matched = [r for r in results if r.get("watchlist")]
        if matched and kind != "watchlist":
            events.append(Event("watchlist", camera_id, matched, filename, moment))
        now = self.clock()
        return [
            Row(event.id, target.name, event.kind, payload(target, event).decode(), now)
            for event in events
            for target in self.targets.values()
            if target.wants(event.kind, camera_id)
        ]

    def _store(self) -> Outbox:
        if self._outbox is None:
            self._outbox = self._outbox_factory()
        return self._outbox

    def _write(self) -> None:
        """The writer thread: everything queued goes in one transaction (one commit per burst)."""
        while True:
            item = self._queue.get()
            batch = [item]
            while item is not None and len(batch) < 256:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
            jobs = [job for job in batch if job is not None]
            if not jobs:  # only the stop mark
                return
            try:
                self._store().add([row for rows, _ in jobs for row in rows])
                for rows, future in jobs:
                    future.set_result(len(rows))
                self._wake_sender()
            except Exception as exc:  # the database is down: these events are lost, and say so
                logger.exception("could not write %d webhook events to the outbox", len(jobs))
                for rows, future in jobs:
                    for row in rows:
                        FAILURES.labels(target=row.target, reason="outbox_write").inc()
                    future.set_exception(exc)
            if None in batch:
                return

    # --- deliveries out ------------------------------------------------------------------

    def _wake_sender(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    def _send(self) -> None:
        asyncio.run(self._send_forever())

    async def _send_forever(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        pinned: dict[str, list[str]] = {}  # host -> the addresses checked for this batch
        transport = PinnedTransport(pinned)
        async with httpx.AsyncClient(
            transport=transport, timeout=self.policy.timeout_s, follow_redirects=False, trust_env=False
        ) as client:
            last_gauges = last_purge = 0.0
            failing = False
            while not self._stop.is_set():
                claimed: list[Claimed] = []
                self._wake.clear()  # before looking: an event written from here on wakes the next round
                try:
                    store = await asyncio.to_thread(self._store)
                    claimed = await asyncio.to_thread(
                        store.claim, limit=CLAIM_BATCH, lease_s=self.policy.lease_s
                    )
                    if claimed:
                        refusals = await self._pin(claimed, pinned)
                        await asyncio.gather(
                            *(self._deliver(client, store, row, refusals) for row in claimed)
                        )
                    if time.monotonic() - last_gauges >= POLL_S:
                        last_gauges = time.monotonic()
                        await asyncio.to_thread(self._gauges, store)
                    if time.monotonic() - last_purge >= PURGE_EVERY_S:
                        last_purge = time.monotonic()
                        await asyncio.to_thread(store.purge, self.clock() - self.policy.max_age_s)
                    failing = False
                except Exception:  # the database is down: try again after a pause, logged once a streak
                    if not failing:
                        logger.exception("webhook delivery round failed; retrying every %.0f s", POLL_S)
                    failing = True
                if len(claimed) < CLAIM_BATCH:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_S)

    async def _pin(self, claimed: list[Claimed], pinned: dict[str, list[str]]) -> dict[str, str]:
        """Resolve each target host of this batch; the hosts refused (not public), with why."""
        refusals: dict[str, str] = {}
        for target in {self.targets[r.target] for r in claimed if r.target in self.targets}:
            url = httpx.URL(target.url)
            host = url.host.lower().rstrip(".")
            try:
                addresses = await self.resolve(host, url.port or (443 if url.scheme == "https" else 80))
            except OSError as exc:
                refusals[host] = f"dns: {exc}"
                continue
            bad = [f"{a} ({why})" for a in addresses if (why := address_refusal(a))]
            if not addresses or (bad and not target.dev):
                refusals[host] = f"refused_address: {host} resolves to {', '.join(bad) or 'nothing'}"
                continue
            pinned[host] = addresses
        return refusals

    async def _deliver(
        self, client: httpx.AsyncClient, store: Outbox, row: Claimed, refusals: dict[str, str]
    ) -> None:
        target = self.targets.get(row.target)
        if target is None:  # the operator removed this target: nowhere to send it
            FAILURES.labels(target=row.target, reason="unknown_target").inc()
            await asyncio.to_thread(
                store.failed, row, "unknown_target: no such target in MODELPORT_PLATE_WEBHOOKS"
            )
            return
        if row.attempts:
            RETRIES.labels(target=target.name).inc()
        body = row.body.encode()
        reason = refusals.get(httpx.URL(target.url).host.lower().rstrip("."))
        if reason is None:
            try:
                response = await client.post(
                    target.url, content=body, headers=signed_headers(target, row.event_id, body, self.clock())
                )
                if response.is_success:
                    DELIVERIES.labels(target=target.name).inc()
                    await asyncio.to_thread(store.delivered, row)
                    return
                reason = f"status_{response.status_code // 100}xx: {response.status_code}"
            except httpx.TimeoutException as exc:
                reason = f"timeout: {type(exc).__name__}"
            except httpx.HTTPError as exc:
                reason = f"connect: {type(exc).__name__}: {exc}"
        label = reason.split(":", 1)[0]
        FAILURES.labels(target=target.name, reason=label).inc()
        now = self.clock()
        retry_at = now + backoff_s(row.attempts + 1, self.policy.backoff_s, self.policy.backoff_max_s)
        if retry_at - row.created_at > self.policy.max_age_s:
            FAILURES.labels(target=target.name, reason="expired").inc()
            logger.error(
                "webhook event %s to %s given up after %d attempts: %s",
                row.event_id,
                target.name,
                row.attempts + 1,
                reason,
            )
            await asyncio.to_thread(store.failed, row, f"expired: {reason}")
        else:
            await asyncio.to_thread(store.retry_at, row, retry_at, reason)

    def _gauges(self, store: Outbox) -> None:
        count, oldest = store.pending()
        PENDING.set(count)
        OLDEST_PENDING_AGE.set(max(0.0, self.clock() - oldest) if oldest is not None else 0.0)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, finish the deliveries in flight, stop (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._threads:
            self._queue.put(None)
            self._wake_sender()
        for thread in self._threads:
            thread.join(timeout_s)


def _iso(timestamp: datetime | str | None) -> str:
    from services.plate_reader.snapshot_api import iso_utc

    if isinstance(timestamp, str):
        return timestamp
    moment = timestamp or datetime.now(UTC)
    return iso_utc(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


# --- this process's webhooks ----------------------------------------------------------------

_current: Webhooks | None = None
_lock = threading.Lock()


def check(settings: Settings) -> None:
    """A ValueError saying what to fix when MODELPORT_PLATE_WEBHOOKS is wrong (at import, so
    `bentoml serve` stops instead of restarting a worker that cannot start)."""
    parse_targets(settings.webhooks, dev_hosts=settings.webhook_dev_hosts)


def start(settings: Settings) -> Webhooks:
    """This process's webhooks from `settings` (a ValueError on bad targets); replaces none
    already started."""
    global _current
    targets = parse_targets(settings.webhooks, dev_hosts=settings.webhook_dev_hosts)
    with _lock:
        if _current is None:
            _current = Webhooks(targets, _review_database_outbox, Policy.of(settings))
            if targets:
                logger.info(
                    "webhooks on: %s", ", ".join(f"{t.name} ({', '.join(sorted(t.events))})" for t in targets)
                )
        return _current


def current() -> Webhooks:
    """This process's webhooks: started from the environment on first use."""
    return _current or start(Settings(**read_env(Settings, "MODELPORT_PLATE_")))


def publish(
    kind: str,
    camera_id: str | None,
    results: Sequence[Mapping[str, Any]],
    filename: str | None,
    timestamp: datetime | str | None = None,
) -> concurrent.futures.Future[int]:
    """Queue an event for every target that wants `kind` and `camera_id` (module docstring)."""
    return current().publish(kind, camera_id, results, filename, timestamp)


async def record_answers(bodies: Iterable[Mapping[str, Any]]) -> None:
    await current().record_answers(bodies)


def close() -> None:
    if _current is not None:
        _current.close()


def _review_database_outbox() -> Outbox:
    from services.core.database import database_engine
    from services.plate_reader.review_store import ReviewSettings

    return Outbox(database_engine(ReviewSettings.from_env().database_url))
