"""Webhooks without a server: targets and their checks, the body, signatures (verified with the
Standard Webhooks library and with the README's plain hmac), the backoff schedule, the outbox's
leases and give-up, and upload_url's address rules at delivery."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.core.database import database_engine
from services.plate_reader import webhooks
from services.plate_reader.settings import Settings
from services.plate_reader.webhook_outbox import Outbox, Row, backoff_s, outbox_table
from services.plate_reader.webhook_targets import Event, parse_targets, payload, signed_headers
from services.plate_reader.webhooks import Policy, Webhooks

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
README = Path(__file__).resolve().parents[2] / "services" / "plate_reader" / "README.md"


def targets(**item: object) -> str:
    return json.dumps([{"url": "https://hooks.example.com/plates", "secret": SECRET, **item}])


def test_a_target_gets_its_defaults_and_filters() -> None:
    [target] = parse_targets(targets(cameras=["gate-1"], events=["vehicle"]))
    assert (target.name, target.url, target.dev) == (
        "hooks.example.com",
        "https://hooks.example.com/plates",
        False,
    )
    assert target.wants("vehicle", "gate-1")
    assert not target.wants("vehicle", "gate-2") and not target.wants("vehicle", None)
    assert not target.wants("recognition", "gate-1")
    [every] = parse_targets(targets())
    assert every.wants("recognition", None) and every.wants("watchlist", "anything")


def test_targets_are_read_from_a_file_too(tmp_path: Path) -> None:
    path = tmp_path / "hooks.json"
    path.write_text(targets(name="parking"))
    assert [t.name for t in parse_targets(str(path))] == ["parking"]


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ({"url": "http://hooks.example.com/x"}, "https://"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "user name or password"),
        ({"url": "https://127.0.0.1/x"}, "loopback"),
        ({"url": "https://10.1.2.3/x"}, "private"),
        ({"url": "https://[::ffff:192.168.1.1]/x"}, "private"),
        ({"secret": None}, "`secret` is required"),
        ({"secret": "hunter2"}, "`secret` is required"),
        ({"secret": "whsec_!!!"}, "not valid base64"),
        ({"secret": "whsec_" + base64.b64encode(b"short").decode()}, "24-64 are needed"),
        ({"events": ["photo"]}, "`events` must list some of recognition, vehicle, watchlist"),
        ({"cameras": [""]}, "`cameras`"),
        ({"header": "x"}, "unknown keys ['header']"),
    ],
)
def test_a_bad_target_fails_with_what_to_fix(item: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)) as error:
        parse_targets(targets(**item))
    assert "MODELPORT_PLATE_WEBHOOKS[0]" in str(error.value)


def test_bad_json_two_names_alike_and_a_missing_file_fail() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_targets("[{")
    with pytest.raises(ValueError, match="two targets are named 'a'"):
        parse_targets(json.dumps([json.loads(targets(name="a"))[0]] * 2))
    with pytest.raises(ValueError, match="neither JSON nor a file"):
        parse_targets("/no/such/hooks.json")


def test_the_dev_escape_hatch_is_off_unless_the_host_is_listed() -> None:
    local = json.dumps([{"url": "http://127.0.0.1:8001/hook", "secret": SECRET}])
    with pytest.raises(ValueError, match="https://"):
        parse_targets(local)
    with pytest.raises(ValueError, match="https://"):
        parse_targets(local, dev_hosts=["localhost"])
    [target] = parse_targets(local, dev_hosts=["127.0.0.1"])
    assert target.dev
    assert Settings().webhook_dev_hosts == ()  # never on by default


def test_the_body_is_plate_recognizers_webhook_shape() -> None:
    [target] = parse_targets(targets(name="parking"))
    results = [{"plate": "ab12cde", "score": 0.97, "box": {"xmin": 1, "ymin": 2, "xmax": 3, "ymax": 4}}]
    event = Event("recognition", "gate-1", results, "car.jpg", "2026-12-05T01:00:00.000000Z")
    body = json.loads(payload(target, event))
    assert body["hook"] == {"target": target.url, "id": "parking", "event": "recognition"}
    assert body["data"] == {
        "event_id": event.id,
        "filename": "car.jpg",
        "timestamp": "2026-12-05T01:00:00.000000Z",
        "camera_id": "gate-1",
        "results": results,
    }


def test_the_signature_verifies_with_the_spec_library_and_fails_on_any_change() -> None:
    [target] = parse_targets(targets())
    body = b'{"hook":{},"data":{"results":[]}}'
    headers = signed_headers(target, "evt_1", body)
    assert Webhook(SECRET).verify(body, headers) == {"hook": {}, "data": {"results": []}}
    for changed_body, changed_headers in (
        (body.replace(b"[]", b"[1]"), headers),
        (body, {**headers, "webhook-id": "evt_2"}),  # a repeat under another id
        (body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(changed_body, changed_headers)
    with pytest.raises(WebhookVerificationError):  # an old capture replayed: the spec's 5-minute window
        Webhook(SECRET).verify(body, signed_headers(target, "evt_1", body, now=time.time() - 600))


def test_the_readme_verification_snippet_accepts_ours_and_refuses_a_forgery() -> None:
    code = re.search(r"```python\n(# Verify a modelport webhook.*?)```", README.read_text(), re.S)
    assert code, "README's Webhooks section lost its verification snippet"
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)  # the README's own code, as a receiver would paste it
    verify = namespace["verify"]
    [target] = parse_targets(targets())
    body = b'{"data":{"results":[]}}'
    headers = signed_headers(target, "evt_9", body)
    assert verify(SECRET, headers, body) is True  # type: ignore[operator]
    assert verify(SECRET, headers, body + b" ") is False  # type: ignore[operator]
    stale = signed_headers(target, "evt_9", body, now=time.time() - 600)
    assert verify(SECRET, stale, body) is False  # type: ignore[operator]


def test_backoff_doubles_to_its_cap_with_jitter_between_half_and_all() -> None:
    low = [backoff_s(n, 1.0, 300.0, rng=lambda: 0.0) for n in range(1, 12)]
    high = [backoff_s(n, 1.0, 300.0, rng=lambda: 1.0) for n in range(1, 12)]
    assert high == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert low == [h / 2 for h in high]
    assert backoff_s(10_000, 1.0, 300.0, rng=lambda: 1.0) == 300  # no overflow after days of retries


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    yield database_engine(f"sqlite:///{tmp_path / 'outbox.sqlite3'}")  # migrations 0001-0004


def row(event_id: str, created_at: float) -> Row:
    return Row(event_id, "parking", "recognition", "{}", created_at)


def test_a_leased_row_is_not_claimed_twice_until_its_lease_runs_out(engine: sa.Engine) -> None:
    clock = Clock()
    mine, theirs = Outbox(engine, clock), Outbox(engine, clock)
    mine.add([row("evt_a", clock.now), row("evt_b", clock.now)])
    claimed = mine.claim(limit=10, lease_s=30)
    assert [c.event_id for c in claimed] == ["evt_a", "evt_b"]
    assert theirs.claim(limit=10, lease_s=30) == []
    clock.now += 31  # this process died mid-send: its lease runs out, another takes the rows
    again = theirs.claim(limit=10, lease_s=30)
    assert [c.event_id for c in again] == ["evt_a", "evt_b"]
    mine.delivered(claimed[0])  # too late: the lease is no longer ours, the row is not touched
    theirs.delivered(again[1])
    with engine.connect() as connection:
        status = dict(connection.execute(sa.select(outbox_table.c.event_id, outbox_table.c.status)).all())
    assert status == {"evt_a": "pending", "evt_b": "delivered"}
    assert mine.pending() == (1, clock.now - 31)


def test_a_host_resolving_to_loopback_is_refused_without_connecting(engine: sa.Engine) -> None:
    """upload_url's rule at delivery: the target's name resolves to 127.0.0.1 (DNS rebinding or
    a hostile record): no connection is made, the row waits for a retry with the reason."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]

        async def to_loopback(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        settings = Settings(webhook_backoff_s=60, webhook_timeout_s=2)
        [target] = parse_targets(
            json.dumps([{"url": f"https://hooks.example.com:{port}/x", "secret": SECRET}])
        )
        hooks = Webhooks([target], lambda: Outbox(engine), Policy.of(settings), resolve=to_loopback)
        try:
            assert hooks.publish("vehicle", "gate-1", [], "clip.mp4").result(10) == 1
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with engine.connect() as connection:
                    error = connection.execute(sa.select(outbox_table.c.last_error)).scalar_one()
                if error:
                    break
                time.sleep(0.1)
        finally:
            hooks.close()
        assert error and error.startswith(
            "refused_address: hooks.example.com resolves to 127.0.0.1 (loopback)"
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected


def test_an_event_older_than_max_age_is_given_up_not_retried(engine: sa.Engine) -> None:
    clock = Clock()
    outbox = Outbox(engine, clock)
    settings = Settings(webhook_max_age_s=60, webhook_backoff_s=10, webhook_timeout_s=1)

    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    [target] = parse_targets(targets(name="parking"))
    hooks = Webhooks([target], lambda: outbox, Policy.of(settings), resolve=nowhere, clock=clock)
    try:
        hooks.publish("recognition", None, [], "a.jpg").result(10)
        clock.now += 58  # any retry from here would come after max_age
        deadline = time.monotonic() + 10
        status = "pending"
        while status == "pending" and time.monotonic() < deadline:
            with engine.connect() as connection:
                status, error = connection.execute(
                    sa.select(outbox_table.c.status, outbox_table.c.last_error)
                ).one()
            time.sleep(0.1)
    finally:
        hooks.close()
    assert status == "failed" and error.startswith("expired: dns: no such host")


def test_publish_never_raises_and_says_what_was_wrong(engine: sa.Engine) -> None:
    hooks = Webhooks(parse_targets(targets()), lambda: Outbox(engine), Policy.of(Settings()))
    try:
        future = hooks.publish("photo", None, [], None)
        with pytest.raises(ValueError, match="'photo' is not one of recognition, vehicle, watchlist"):
            future.result(1)
    finally:
        hooks.close()
    assert (
        Webhooks([], lambda: pytest.fail("off"), Policy.of(Settings()))
        .publish("vehicle", None, [], None)
        .result(1)
        == 0
    )


class SlowOutbox(Outbox):
    """A fake: the real SQLite outbox, but its first write takes 0.5 s (a database under load)."""

    slow = True

    def add(self, rows: Sequence[Row]) -> None:
        if self.slow:
            self.slow = False
            time.sleep(0.5)
        super().add(rows)


def test_an_answer_waits_for_a_slow_write_only_so_long_and_the_writer_keeps_going(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "WRITE_WAIT_S", 0.05)
    outbox = SlowOutbox(engine)
    hooks = Webhooks(parse_targets(targets()), lambda: outbox, Policy.of(Settings(webhook_backoff_s=60)))
    try:
        started = time.perf_counter()
        asyncio.run(hooks.record_answers([{"filename": "a.jpg", "results": []}]))
        assert time.perf_counter() - started < 0.4  # answered without waiting out the slow write
        # The writer is still alive: the next event is written, and the first one too.
        assert hooks.publish("vehicle", None, [], "b.mp4").result(10) == 1
        assert outbox.pending()[0] == 2
    finally:
        hooks.close()
