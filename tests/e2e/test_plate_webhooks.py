"""Webhooks on a real plate reader (`bentoml serve`) sending to a real HTTP receiver in this test
(a stdlib server on loopback, allowed by MODELPORT_PLATE_WEBHOOK_DEV_HOSTS), retries shortened by
settings: a photo read arrives signed (checked with the Standard Webhooks library) and shaped as
the answer; a receiver down for a while gets everything afterwards; a server SIGKILLed with
events pending delivers each of them once after a restart on the same database. And the
outbox's claim on both databases: concurrent claimers never take the same row.
Rules and signatures without a server: tests/unit/test_webhooks.py."""

from __future__ import annotations

import base64
import collections
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from services.core.database import database_engine
from services.plate_reader.webhook_outbox import Outbox, Row
from tests.e2e.conftest import PLATE_LIMITS
from tests.monitoring import MONITORING, rule_metrics
from tests.postgres import postgres_server
from tests.probes import serving_pids
from tests.scenes import plate_on_street
from tests.servers import Server, free_port, serve_process

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"modelport webhook test secret 32").decode()


class Receiver:
    """A webhook receiver on a fixed loopback port that can go down and come back: every POST
    is verified (signature, timestamp) with the spec's library, answered 200 and kept."""

    def __init__(self) -> None:
        self.port = free_port()
        self.got: list[tuple[str, dict[str, Any], dict[str, str]]] = []  # (path, body, headers)
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = Webhook(SECRET).verify(raw, headers)  # raises on a bad signature: a 500 below
                with receiver.lock:
                    receiver.got.append((self.path, body, headers))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self, path: str) -> collections.Counter[str]:
        with self.lock:
            return collections.Counter(h["webhook-id"] for p, _, h in self.got if p == path)

    def wait_for(self, path: str, ids: set[str], timeout: float = 30.0) -> collections.Counter[str]:
        deadline = time.monotonic() + timeout
        while not ids <= set(self.ids(path)):
            assert time.monotonic() < deadline, f"{path} got {dict(self.ids(path))}, waiting for {ids}"
            time.sleep(0.1)
        return self.ids(path)


def hooks_env(receiver: Receiver, data_dir: Path) -> dict[str, str]:
    targets = [
        {"url": receiver.url("/all"), "secret": SECRET, "name": "all", "events": ["recognition"]},
        {
            "url": receiver.url("/gate-9"),
            "secret": SECRET,
            "name": "gate-9",
            "cameras": ["gate-9"],
            "events": ["recognition", "vehicle"],
        },
        {"url": receiver.url("/watch"), "secret": SECRET, "name": "watch", "events": ["watchlist"]},
    ]
    return {
        **PLATE_LIMITS,
        "MODELPORT_DATA_DIR": str(data_dir),  # its own SQLite database: the outbox and reviews
        "MODELPORT_PLATE_WEBHOOKS": json.dumps(targets),
        "MODELPORT_PLATE_WEBHOOK_DEV_HOSTS": "127.0.0.1",  # the test's own receiver, over http
        "MODELPORT_PLATE_WEBHOOK_BACKOFF_S": "0.2",
        "MODELPORT_PLATE_WEBHOOK_BACKOFF_MAX_S": "1",  # a receiver back up waits at most ~1 s
        "MODELPORT_PLATE_WEBHOOK_TIMEOUT_S": "5",
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webhook-data")


@pytest.fixture(scope="module")
def hooks_server(
    plate_models: dict[str, Path],
    receiver: Receiver,
    data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """A plate reader sending webhooks to `receiver` (the kill test, last here, kills it)."""
    log = tmp_path_factory.mktemp("logs") / "plate_reader_webhooks.log"
    with serve_process(
        "services.plate_reader.service:PlateReader", env=hooks_env(receiver, data_dir), log_path=log
    ) as server:
        yield server


JPEG = plate_on_street().jpeg


def read(url: str, camera_id: str, name: str = "car.jpg") -> dict[str, Any]:
    response = httpx.post(
        f"{url}/v1/plate-reader/", files={"upload": (name, JPEG)}, data={"camera_id": camera_id}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


def metric(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.2)


def sigkill_all(server: Server) -> None:
    """SIGKILL `bentoml serve` and its workers, as a node dying would: no shutdown hook runs.
    The workers have process groups of their own, so killing the arbiter's group alone would
    leave them running (and sending)."""
    processes = [psutil.Process(pid) for pid in serving_pids(server.process.pid)]
    assert len(processes) > 1, "no worker found under the arbiter"
    for process in processes:
        process.kill()
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive
    server.process.wait(timeout=30)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/livez", timeout=5)


def got(receiver: Receiver, filename: str) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    with receiver.lock:
        return [g for g in receiver.got if g[1]["data"]["filename"] == filename]


def test_a_photo_read_arrives_signed_and_shaped_as_the_answer(
    hooks_server: Server, receiver: Receiver
) -> None:
    listed = httpx.post(
        f"{hooks_server.url}/v1/watchlists", json={"name": "stolen", "plates": ["AD799KB"]}, timeout=30
    )
    assert listed.status_code == 201, listed.text
    answer = read(hooks_server.url, "gate-1", "first.jpg")
    assert answer["results"] and answer["results"][0]["plate"] == "ad799kb"
    assert answer["results"][0]["watchlist"]  # so it is a watchlist event too
    eventually(lambda: len(got(receiver, "first.jpg")) == 2)
    [(_, body, headers)] = [g for g in got(receiver, "first.jpg") if g[0] == "/all"]
    assert body["hook"] == {"target": receiver.url("/all"), "id": "all", "event": "recognition"}
    assert body["data"] == {
        "event_id": headers["webhook-id"],
        "filename": "first.jpg",
        "timestamp": answer["timestamp"],
        "camera_id": "gate-1",
        "results": answer["results"],  # the readings exactly as the client got them
    }
    # The watchlist target gets a watchlist event, with only the readings on a list, another id.
    [(_, hit, hit_headers)] = [g for g in got(receiver, "first.jpg") if g[0] == "/watch"]
    assert hit["hook"]["event"] == "watchlist" and hit_headers["webhook-id"] != headers["webhook-id"]
    assert hit["data"]["results"] == [r for r in answer["results"] if r["watchlist"]]
    assert httpx.delete(f"{hooks_server.url}/v1/watchlists/stolen", timeout=30).status_code in (200, 204)
    # The camera filter: gate-9's target gets gate-9's read, and not gate-1's.
    nine = read(hooks_server.url, "gate-9", "nine.jpg")
    eventually(lambda: len(got(receiver, "nine.jpg")) == 2)
    assert sorted(p for p, _, _ in got(receiver, "nine.jpg")) == ["/all", "/gate-9"]
    assert all(b["data"]["results"] == nine["results"] for _, b, _ in got(receiver, "nine.jpg"))
    assert sorted(p for p, _, _ in got(receiver, "first.jpg")) == ["/all", "/watch"]
    eventually(lambda: metric(hooks_server.url, "modelport_webhook_deliveries_total", target="gate-9") == 1)


def test_every_webhook_series_the_alerts_read_is_exported_before_anything_fails(hooks_server: Server) -> None:
    exported = {
        sample.name
        for family in text_string_to_metric_families(
            httpx.get(f"{hooks_server.url}/metrics", timeout=10).text
        )
        for sample in family.samples
    }
    wanted = {
        m
        for m in rule_metrics(MONITORING / "rules" / "plate-reader.rules.yml")
        if m.startswith("modelport_webhook_")
    }
    assert wanted and wanted - exported == set()


def test_a_receiver_down_for_a_while_gets_everything_afterwards(
    hooks_server: Server, receiver: Receiver
) -> None:
    receiver.stop()
    names = [f"down-{i}.jpg" for i in range(3)]
    for name in names:
        read(hooks_server.url, "gate-1", name)
    # Down long enough for several failed rounds (backoff capped at 1 s here, 5 min by default).
    url = hooks_server.url
    eventually(lambda: metric(url, "modelport_webhook_retries_total", target="all") >= 6)
    eventually(lambda: metric(url, "modelport_webhook_failures_total", target="all", reason="connect") >= 9)
    eventually(lambda: metric(url, "modelport_webhook_outbox_pending") == 3)
    eventually(lambda: metric(url, "modelport_webhook_oldest_pending_age_seconds") > 1)
    assert not any(got(receiver, name) for name in names)
    receiver.start()
    eventually(lambda: all(got(receiver, name) for name in names))
    time.sleep(1.5)  # a duplicate would come now
    assert [len(got(receiver, name)) for name in names] == [1, 1, 1]
    eventually(lambda: metric(hooks_server.url, "modelport_webhook_outbox_pending") == 0)


def test_events_pending_when_the_server_is_killed_are_delivered_once_after_a_restart(
    hooks_server: Server, receiver: Receiver, data_dir: Path, tmp_path: Path
) -> None:
    receiver.stop()
    names = [f"killed-{i}.jpg" for i in range(3)]
    for name in names:
        read(hooks_server.url, "gate-1", name)  # each answered: its event is on disk
    sigkill_all(hooks_server)
    engine = database_engine(f"sqlite:///{data_dir / 'modelport.sqlite3'}")
    with engine.connect() as connection:
        pending = connection.execute(
            sa.text(
                "SELECT json_extract(body, '$.data.filename') FROM webhook_outbox WHERE status = 'pending'"
            )
        ).scalars()
        assert set(names) <= set(pending)
    receiver.start()
    with serve_process(
        "services.plate_reader.service:PlateReader",
        env=hooks_env(receiver, data_dir),
        log_path=tmp_path / "restarted.log",
    ) as again:
        eventually(lambda: all(got(receiver, name) for name in names))
        time.sleep(1.5)  # a duplicate would come now
        assert [len(got(receiver, name)) for name in names] == [1, 1, 1]
        assert len({h["webhook-id"] for name in names for _, _, h in got(receiver, name)}) == 3
        eventually(lambda: metric(again.url, "modelport_webhook_outbox_pending") == 0)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_claimers_never_take_the_same_row(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Eight claimers (as eight server workers would) empty 400 rows between them: each row once."""
    url = (
        f"sqlite:///{tmp_path / 'o.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = database_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM webhook_outbox"))
    now = time.time()
    Outbox(engine).add([Row(f"evt_{i}", "t", "vehicle", "{}", now) for i in range(400)])

    def claim_all() -> list[str]:
        outbox, taken = Outbox(engine), []
        while claimed := outbox.claim(limit=7, lease_s=300):
            taken += [c.event_id for c in claimed]
        return taken

    with ThreadPoolExecutor(8) as pool:
        takes = list(pool.map(lambda _: claim_all(), range(8)))
    everything = [event_id for taken in takes for event_id in taken]
    assert sorted(everything) == sorted(f"evt_{i}" for i in range(400))  # every row, none twice
    assert sum(1 for taken in takes if taken) > 1  # they did run side by side


def test_a_bad_target_stops_the_server_at_start_saying_what_to_fix(
    plate_models: dict[str, Path], tmp_path: Path
) -> None:
    bad = json.dumps([{"url": "http://hooks.example.com/plates", "secret": SECRET}])  # http, not https
    with (
        pytest.raises(RuntimeError, match="exited with") as error,
        serve_process(
            "services.plate_reader.service:PlateReader",
            env={"MODELPORT_PLATE_WEBHOOKS": bad},
            log_path=tmp_path / "bad.log",
            startup_timeout=120,
        ),
    ):
        pass
    assert "MODELPORT_PLATE_WEBHOOKS[0]: `url` must be an https:// URL" in str(error.value)
