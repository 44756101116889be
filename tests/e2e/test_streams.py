"""Live cameras against a real RTSP server (GStreamer's, tests/rtsp_server.py) serving an H.264
clip of a real plate crossing a real street: `modelport watch` emits the vehicle with the right
plate, and again after the camera is killed and comes back; a LAN host not allowed exits 2; the
served plate reader watches MODELPORT_PLATE_CAMERAS and answers GET /v1/plate-reader/streams.
Logic without a camera: tests/unit/test_streams.py."""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PLATE_LIMITS
from tests.servers import QUIET_ENV, REPO, serve
from tests.streams import RtspServer, gate_clip, plate_text, rtsp_available, rtsp_server

pytestmark = pytest.mark.slow
PLATE = plate_text()  # AD799KB
MODELPORT = [sys.executable, "-m", "services.core.cli"]
SECRET = "whsec_" + base64.b64encode(b"modelport camera test secret 32b").decode()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rtsp_available()
    # 7 s of empty street, 4 s of the plate crossing, 3 s of empty street again (at 10 fps, a
    # keyframe every 2 s): still long enough for --idle-keyframes to go to keyframes only, though
    # the server sends its first 2 s in a burst (stream_source.IDLE_AFTER_S of wall time).
    return gate_clip(tmp_path_factory.mktemp("clips") / "gate.mkv", still_s=7.0, passing_s=4.0, after_s=3.0)


def _watch(url: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MODELPORT, "watch", url, "--camera-id", "gate-1", "--json", *extra],
        cwd=REPO,
        env={**os.environ, **QUIET_ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(stream: object) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()  # type: ignore[attr-defined]
    return lines


def _next_event(lines: queue.Queue[str], timeout: float) -> dict:
    return json.loads(lines.get(timeout=timeout))


def test_watch_emits_the_vehicle_and_again_after_the_camera_comes_back(
    plate_models: dict, clip: Path
) -> None:
    server = RtspServer(clip)
    server.start()
    watcher = _watch(server.url, "--private-host", "127.0.0.1", "--max-minutes", "2", "--idle-keyframes")
    try:
        events = _lines(watcher.stdout)
        first = _next_event(events, timeout=60)
        assert first["plate"] == PLATE and first["camera_id"] == "gate-1", first
        # A read takes 0.2 s on a quiet machine, 1.3 s with 8 engineers' tests on 2 cores: the
        # plate's 4 s may give only a frame or two. Voting over frames: vehicle_tracks' tests.
        assert first["frames_read"] >= 1 and not first["review"], first
        server.stop()  # the camera dies mid-stream (its clip still has 2 s of empty street)
        time.sleep(2)
        server.start()  # and comes back on the same address: the watcher reconnects by itself
        second = _next_event(events, timeout=60)
        assert second["plate"] == PLATE and second["id"] != first["id"], second
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, stderr = watcher.communicate(timeout=30)
        server.stop()
    assert watcher.returncode == 0, stderr
    status = json.loads(stderr.strip().splitlines()[-1].split(": ", 1)[1])
    assert status["reconnects"] >= 1 and status["events"] >= 2, status
    assert status["samples_moving"] < status["samples"], status  # the empty street was not read
    # It decoded keyframes only while the street was empty, and noticed the car on a keyframe.
    assert status["keyframe_periods"] >= 2, status


def test_watch_queues_a_flagged_vehicle_for_review_with_its_crop(
    plate_models: dict, clip: Path, tmp_path: Path
) -> None:
    # Every reading flagged (a threshold no score reaches), so the car's event must be queued.
    reviews = {
        "MODELPORT_REVIEW_DATABASE_URL": f"sqlite:///{tmp_path / 'reviews.sqlite3'}",
        "MODELPORT_REVIEW_IMAGES_DIR": str(tmp_path / "images"),
    }
    server = RtspServer(clip)
    server.start()
    watcher = _watch(
        server.url,
        "--private-host",
        "127.0.0.1",
        "--max-minutes",
        "2",
        env={**reviews, "MODELPORT_PLATE_REVIEW_THRESHOLD": "1.01"},
    )
    try:
        event = _next_event(_lines(watcher.stdout), timeout=60)
    finally:
        watcher.send_signal(signal.SIGTERM)  # the queued review is written before it exits
        _, stderr = watcher.communicate(timeout=30)
        server.stop()
    assert event["plate"] == PLATE and event["review"], event
    assert watcher.returncode == 0, stderr
    from services.plate_reader.review_store import ReviewSettings, ReviewStore

    store = ReviewStore.from_settings(
        ReviewSettings(
            database_url=reviews["MODELPORT_REVIEW_DATABASE_URL"],
            images_dir=reviews["MODELPORT_REVIEW_IMAGES_DIR"],
        )
    )
    items, _ = store.list(camera_id="gate-1")
    assert [(i.plate, i.status) for i in items] == [(PLATE, "pending")], items
    crop = store.image(items[0], "photo").read_bytes()
    assert crop[:2] == b"\xff\xd8" and len(crop) > 1000  # the event's best crop, a JPEG


def test_watch_refuses_a_lan_camera_the_operator_did_not_allow() -> None:
    result = subprocess.run(
        [*MODELPORT, "watch", "rtsp://192.168.77.5:554/live"],
        cwd=REPO,
        env={**os.environ, **QUIET_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert "192.168.77.5, a private address" in result.stderr
    assert "MODELPORT_PLATE_CAMERA_PRIVATE_HOSTS" in result.stderr


class Receiver:
    """A webhook receiver on loopback that keeps every body POSTed to it (signatures are checked
    in test_plate_webhooks.py)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture(scope="module")
def camera_server(
    plate_models: dict, clip: Path, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A plate reader watching two cameras: the RTSP server on loopback (allowed), and a LAN
    address nobody allowed; gate-1's vehicles go to a webhook receiver."""
    hook = {"url": receiver.url, "secret": SECRET, "events": ["vehicle"], "cameras": ["gate-1"]}
    with rtsp_server(clip) as camera:
        cameras = [
            {"camera_id": "gate-1", "url": camera.url},
            {"camera_id": "yard", "url": "rtsp://10.20.30.40/live"},
        ]
        env = {
            **PLATE_LIMITS,
            "MODELPORT_PLATE_CAMERAS": json.dumps(cameras),
            "MODELPORT_PLATE_CAMERA_PRIVATE_HOSTS": "127.0.0.1",
            "MODELPORT_PLATE_WEBHOOKS": json.dumps([hook]),
            "MODELPORT_PLATE_WEBHOOK_DEV_HOSTS": "127.0.0.1",  # the test's receiver, over http
            "MODELPORT_DATA_DIR": str(tmp_path_factory.mktemp("camera-data")),  # its own outbox
        }
        log = tmp_path_factory.mktemp("logs") / "plate_reader_cameras.log"
        with serve("services.plate_reader.service:PlateReader", env=env, log_path=log) as url:
            yield url


def test_the_served_reader_watches_its_cameras(camera_server: str, receiver: Receiver) -> None:
    deadline, events = time.monotonic() + 90, []
    while time.monotonic() < deadline and not events:
        response = httpx.get(f"{camera_server}/v1/plate-reader/streams/gate-1/events", timeout=10)
        assert response.status_code == 200, response.text
        events = response.json()["events"]
        time.sleep(1)
    assert events and events[0]["plate"] == PLATE and events[0]["camera_id"] == "gate-1", events
    cameras = {
        c["camera_id"]: c for c in httpx.get(f"{camera_server}/v1/plate-reader/streams").json()["cameras"]
    }
    gate, yard = cameras["gate-1"], cameras["yard"]
    assert gate["events"] >= 1 and gate["frames_decoded"] > 0 and gate["width"] == 1280, gate
    assert yard["state"].startswith("refused: camera host '10.20.30.40' resolves to 10.20.30.40, a private")
    assert yard["frames_decoded"] == 0 and yard["reconnects"] == 0, yard
    crop = httpx.get(f"{camera_server}{events[0]['crop']}", timeout=10)  # kept as a clip's vehicle's
    assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8", crop  # a JPEG
    assert events[0]["watchlist"] == []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not receiver.bodies:
        time.sleep(0.2)
    hook = receiver.bodies[0]
    assert hook["hook"]["event"] == "vehicle" and hook["data"]["camera_id"] == "gate-1", hook
    assert hook["data"]["results"][0]["plate"] == PLATE, hook


def test_events_of_a_camera_not_watched_are_a_404(camera_server: str) -> None:
    response = httpx.get(f"{camera_server}/v1/plate-reader/streams/porch/events", timeout=10)
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "camera_not_found" and "gate-1, yard" in error["message"], error
