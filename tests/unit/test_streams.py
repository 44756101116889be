"""Camera streams without a camera: the URL rules, the motion gate, the watch loop's logic (with
a fake tracker), the source's reconnect backoff (against a closed port), the cameras setting.
The real RTSP server, the CLI and the served cameras: tests/e2e/test_streams.py."""

from __future__ import annotations

import socket
import time
from typing import Any

import numpy as np
import pytest

from services.plate_reader.cameras import parse_cameras
from services.plate_reader.motion import MotionGate
from services.plate_reader.settings import Settings
from services.plate_reader.stream_source import Sample, StreamSource
from services.plate_reader.stream_url import StreamRefused, check_stream_url, shown_url
from services.plate_reader.stream_watch import NO_FRAME, RECENT_EVENTS, CameraWatch
from services.plate_reader.types import BoundingBox, Candidate, PlateReading
from services.plate_reader.vehicle_tracks import VehicleTracker


def resolver(*addresses: str):
    return lambda host, port: list(addresses)


# --- URL rules -------------------------------------------------------------------------------


def test_a_public_camera_is_opened_at_the_checked_address_with_its_credentials_unshown() -> None:
    target = check_stream_url(
        "rtsp://admin:s3cret@cam.example.com/live?ch=1", resolve=resolver("93.184.215.14")
    )
    assert target.open_url == "rtsp://admin:s3cret@93.184.215.14:554/live?ch=1"  # pinned: no second DNS
    assert target.shown == "rtsp://cam.example.com/live?ch=1"
    assert "s3cret" not in shown_url("http://u:s3cret@cam.example.com:8080/mjpeg")


def test_tls_urls_keep_their_host_name() -> None:
    target = check_stream_url("https://cam.example.com/mjpeg", resolve=resolver("93.184.215.14"))
    assert target.open_url == "https://cam.example.com/mjpeg"  # TLS checks the name


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("192.168.1.20", "private"),
        ("10.0.0.7", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),  # a cloud's metadata service
        ("::ffff:192.168.1.20", "private"),  # IPv4-mapped IPv6, judged as its IPv4
    ],
)
def test_a_lan_camera_is_refused_unless_the_operator_allows_it(address: str, reason: str) -> None:
    with pytest.raises(StreamRefused) as refused:
        check_stream_url("rtsp://cam.lan/live", resolve=resolver(address))
    message = str(refused.value)
    assert f"a {reason} address" in message and "MODELPORT_PLATE_CAMERA_PRIVATE_HOSTS" in message


def test_the_operator_allows_a_lan_camera_by_host_address_or_network() -> None:
    lan = resolver("192.168.1.20")
    assert check_stream_url("rtsp://cam.lan/live", ("cam.lan",), resolve=lan).address == "192.168.1.20"
    assert check_stream_url("rtsp://cam.lan/live", ("192.168.1.20",), resolve=lan).address
    assert check_stream_url("rtsp://cam.lan/live", ("192.168.1.0/24",), resolve=lan).address
    with pytest.raises(StreamRefused):  # another network is still refused
        check_stream_url("rtsp://cam.lan/live", ("192.168.2.0/24", "other.lan"), resolve=lan)


def test_a_host_with_one_private_address_among_public_ones_is_refused() -> None:
    with pytest.raises(StreamRefused, match=r"10\.0\.0\.1"):
        check_stream_url("rtsp://cam.example.com/", resolve=resolver("93.184.215.14", "10.0.0.1"))


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://cam.example.com/x", "rtsp:///nohost", "cam.lan"]
)
def test_other_schemes_and_hostless_urls_are_refused(url: str) -> None:
    with pytest.raises(StreamRefused):
        check_stream_url(url, resolve=resolver("93.184.215.14"))


# --- the motion gate --------------------------------------------------------------------------


def _street(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(40, 200, (90, 160)).astype(np.uint8)


def _noisy(frame: np.ndarray, rng: np.random.Generator, sigma: float = 4.0) -> np.ndarray:
    return np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


def test_a_still_noisy_scene_is_not_read_after_the_first_frame() -> None:
    rng = np.random.default_rng(0)
    street, gate = _street(rng), MotionGate()
    moving = [gate.moving(_noisy(street, rng), t / 5) for t in range(50)]
    assert moving[0]  # the first frame after connecting: a car may already be there
    assert not any(moving[10:]), moving  # after the hold: sensor noise is not motion


def test_a_plate_sized_object_moving_is_read_and_its_leaving_fades_out() -> None:
    rng = np.random.default_rng(1)
    street, gate = _street(rng), MotionGate()
    for t in range(20):
        gate.moving(_noisy(street, rng), t / 5)
    passing = []
    for i in range(8):  # a 25x6 bright block (a plate at 1/8 scale) crossing
        frame = _noisy(street, rng)
        frame[60:66, 20 + 10 * i : 45 + 10 * i] = 250
        passing.append(gate.moving(frame, (20 + i) / 5))
    assert all(passing)
    after = [gate.moving(_noisy(street, rng), (28 + i) / 5) for i in range(20)]
    assert not any(after[12:]), after  # the ghost fades within ~2 s at 5 samples/s


def test_a_slow_lighting_change_is_not_motion() -> None:
    rng = np.random.default_rng(2)
    street, gate = _street(rng).astype(np.float32), MotionGate()
    moving = [gate.moving(np.clip(street + t * 0.5, 0, 255).astype(np.uint8), t / 5) for t in range(100)]
    assert not any(moving[10:])  # dusk: half a grey level a sample


# --- the watch loop, with a fake tracker ------------------------------------------------------


class FakeTracker:
    """Stands in for vehicle_tracks.VehicleTracker: records calls, ends a 'track' when told."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[PlateReading], np.ndarray]] = []
        self.to_end: list[Any] = []

    def update(self, t: float, readings: list[PlateReading], frame: np.ndarray) -> list[Any]:
        self.calls.append((t, readings, frame))
        ended, self.to_end = self.to_end, []
        return ended

    def flush(self) -> list[Any]:
        return [FakeEvent("LAST", 9.0)]


class FakeEvent:
    def __init__(self, plate: str, last_seen: float) -> None:
        self.plate, self.first_seen, self.last_seen = plate, last_seen, last_seen

    def to_json(self, crop_url: str | None = None) -> dict[str, Any]:
        return {"plate": self.plate, "first_seen": self.first_seen, "last_seen": self.last_seen}


class IdleSource:
    """No thread, no stream: only what CameraWatch asks of a StreamSource outside run()."""

    def __init__(self) -> None:
        self.shown = "rtsp://cam.example.com/live"
        self.interval = 0.2  # 5 samples a second
        from services.plate_reader.stream_source import SourceStats

        self.stats = SourceStats()

    def now(self) -> float:
        return 0.0


def _reading(plate: str) -> PlateReading:
    return PlateReading(
        plate, 0.99, 0.9, BoundingBox(1, 2, 30, 12), (Candidate(plate, 0.99, None, 0.99),), False
    )


def test_motionless_samples_still_tell_the_tracker_the_time_and_events_carry_the_camera() -> None:
    tracker, sent = FakeTracker(), []
    watch = CameraWatch(
        "gate-1",
        IdleSource(),
        tracker,
        on_event=lambda body, event: sent.append(body),
        clock=lambda: 1_000_000.0,
    )
    frame = np.zeros((720, 1280, 3), np.uint8)
    watch.handle(Sample(1.0, frame, True), [_reading("AD799KB")])
    tracker.to_end = [FakeEvent("AD799KB", 1.0)]
    events = watch.handle(Sample(2.5, None, False), [])
    # 1.5 s later, but the tracker's read clock moves at most 2 sample intervals (0.4 s) a sample
    assert tracker.calls[1][0] == pytest.approx(1.4) and tracker.calls[1][1] == []
    assert tracker.calls[1][2] is NO_FRAME
    assert (
        events
        == sent
        == [
            {
                "plate": "AD799KB",
                "first_seen": 1.0,
                "last_seen": 1.0,
                "camera_id": "gate-1",
                "timestamp": "1970-01-12T13:46:41+00:00",
            }
        ]
    )
    assert [e["plate"] for e in watch.finish()] == ["LAST"]
    assert watch.status()["events"] == 2 and watch.status()["url"] == "rtsp://cam.example.com/live"


def test_one_car_is_one_event_when_reads_come_slower_than_the_tracks_gap() -> None:
    """A machine behind: each read takes 1.4 s (over track_max_gap_s, 1 s), samples in between
    are dropped. The real tracker still makes one vehicle of the four reads, at stream times."""
    watch = CameraWatch("gate-1", IdleSource(), VehicleTracker(Settings()))
    frame = np.zeros((720, 1280, 3), np.uint8)
    events = []
    for i in range(4):  # the car's plate, read every 1.4 s, moving right
        reading = PlateReading(
            "AD799KB",
            0.99,
            0.9,
            BoundingBox(100 + 20 * i, 400, 300 + 20 * i, 460),
            (Candidate("AD799KB", 0.99, None, 0.99),),
            False,
        )
        events += watch.handle(Sample(1.4 * i, frame, True), [reading])
    t = 1.4 * 3
    while not events and t < 20:  # it left: motionless samples every 0.2 s
        t += 0.2
        events += watch.handle(Sample(t, None, False), [])
    assert len(events) == 1, events
    assert events[0]["frames_read"] == 4 and events[0]["plate"] == "AD799KB"
    assert events[0]["first_seen"] == 0.0 and events[0]["last_seen"] == pytest.approx(4.2)


def test_recent_events_are_bounded_and_a_failing_sink_loses_no_other_event() -> None:
    tracker = FakeTracker()

    def broken_sink(body: dict[str, Any], event: Any) -> None:
        raise OSError("the outbox is down")

    watch = CameraWatch("gate-1", IdleSource(), tracker, on_event=broken_sink)
    for i in range(RECENT_EVENTS + 5):
        tracker.to_end = [FakeEvent(f"P{i}", float(i))]
        watch.handle(Sample(float(i), None, False), [])
    assert watch.events == RECENT_EVENTS + 5
    assert len(watch.recent) == RECENT_EVENTS and watch.recent[-1]["plate"] == f"P{RECENT_EVENTS + 4}"


# --- the source: the latest sample, drops, backoff, refusal -----------------------------------


def test_the_consumer_gets_the_latest_sample_and_overwritten_moving_ones_are_counted() -> None:
    source = StreamSource("rtsp://cam.example.com/live", fps=5)
    for i in range(3):
        source._publish(Sample(float(i), NO_FRAME, True))
    sample = source.take(timeout=0)
    assert sample is not None and sample.t == 2.0 and source.stats.dropped == 2
    assert source.take(timeout=0) is None


def test_a_dead_camera_is_retried_with_a_doubling_backoff() -> None:
    with socket.socket() as sock:  # a port nothing listens on: each connect is refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = StreamSource(
        f"rtsp://127.0.0.1:{port}/live",
        fps=5,
        private_hosts=("127.0.0.1",),
        backoff_min_s=0.05,
        backoff_max_s=0.4,
    )
    seen: set[str] = set()
    source.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and source.stats.reconnects < 6:
        seen.add(source.stats.state)
        time.sleep(0.005)
    source.stop()
    assert source.stats.reconnects >= 6, source.stats
    assert {
        "reconnecting in 0.05 s",
        "reconnecting in 0.1 s",
        "reconnecting in 0.2 s",
        "reconnecting in 0.4 s",
    } <= seen
    assert "reconnecting in 0.8 s" not in seen  # capped
    assert source.stats.last_error and "Connection refused" in source.stats.last_error


def test_a_refused_camera_stops_and_is_not_retried() -> None:
    source = StreamSource("rtsp://10.1.2.3/live", fps=5)
    source.start()
    deadline = time.monotonic() + 5
    while source.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not source.running
    assert source.stats.state.startswith("refused: camera host '10.1.2.3' resolves to 10.1.2.3, a private")
    assert source.stats.reconnects == 0


# --- MODELPORT_PLATE_CAMERAS -----------------------------------------------------------------


def test_the_cameras_setting() -> None:
    cameras = parse_cameras('[{"camera_id": "gate-1", "url": "rtsp://cam.lan/live"}]')
    assert [(c.camera_id, c.url) for c in cameras] == [("gate-1", "rtsp://cam.lan/live")]
    assert parse_cameras("") == ()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("gate-1=rtsp://x", "is not JSON"),
        ('{"camera_id": "a", "url": "rtsp://x"}', "must be a JSON list"),
        ('[{"camera_id": "a"}]', "exactly camera_id and url"),
        ('[{"camera_id": "a b", "url": "rtsp://x"}]', "letters, digits"),
        ('[{"camera_id": "a", "url": "rtsp://x"}, {"camera_id": "a", "url": "rtsp://y"}]', "given twice"),
        ('[{"camera_id": "a", "url": "file:///dev/video0"}]', "the scheme must be one of"),
    ],
)
def test_a_malformed_cameras_setting_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match="MODELPORT_PLATE_CAMERAS") as error:
        parse_cameras(text)
    assert says in str(error.value)
