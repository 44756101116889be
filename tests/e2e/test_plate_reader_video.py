"""POST /v1/plate-reader/video on a real plate reader (`bentoml serve`, real models): tiny clips made
here with PyAV from a real plate crop (fast-plate-ocr's AD 799 KB, KRW 301) on a real street photo.
A car coming closer is one vehicle event (voted plate, first/last seen, direction, best crop
retrievable, on the watchlist, sent as a `vehicle` webhook); an unsure one goes to the review
queue; bad clips get a clear 4xx (or, cut short, what decodes) and the server keeps serving."""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from modelport_client import Client
from tests.e2e.conftest import PLATE_LIMITS
from tests.e2e.test_plate_webhooks import SECRET, Receiver
from tests.reviews import recorded_reviews
from tests.scenes import street_with_plates
from tests.servers import serve

pytestmark = pytest.mark.slow

MAX_DURATION_S = 6
MAX_VIDEO_BYTES = 3_000_000


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    hooks.start()
    yield hooks
    hooks.stop()


@pytest.fixture(scope="module")
def server(
    plate_models: dict[str, Path], receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    target = {"url": receiver.url("/vehicles"), "secret": SECRET, "name": "v", "events": ["vehicle"]}
    env = {
        **PLATE_LIMITS,
        "MODELPORT_DATA_DIR": str(tmp_path_factory.mktemp("video-data")),  # its own review queue
        "MODELPORT_PLATE_VIDEO_MAX_DURATION_S": str(MAX_DURATION_S),
        "MODELPORT_PLATE_VIDEO_MAX_BYTES": str(MAX_VIDEO_BYTES),
        "MODELPORT_PLATE_WEBHOOKS": json.dumps([target]),
        "MODELPORT_PLATE_WEBHOOK_DEV_HOSTS": "127.0.0.1",
    }
    log = tmp_path_factory.mktemp("logs") / "plate_reader_video.log"
    with serve("services.plate_reader.service:PlateReader", env=env, log_path=log) as url:
        yield url


def encode(
    frames: list[np.ndarray], path: Path, *, fps: int = 10, container: str = "mp4", **options: str
) -> bytes:
    """H.264 in `container`, written through a file (faststart rewrites it)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format=container, options=options) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def approaching(plate_asset: str, count: int = 16) -> list[np.ndarray]:
    """The real plate crop on the real street photo, growing 1x -> 2x as it comes down the frame."""
    frames = []
    for k in range(count):
        s = k / (count - 1)
        scene = street_with_plates([(plate_asset, (420 - round(60 * s), 260 + round(160 * s)), 1.0 + s)])
        frames.append(np.asarray(Image.open(io.BytesIO(scene.jpeg)).convert("RGB")))
    return frames


def post(url: str, data: bytes, name: str = "clip.mp4", **fields: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/plate-reader/video", files={"upload": (name, data)}, data=fields, timeout=120
    )


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_car_coming_closer_is_one_vehicle_event(server: str, receiver: Receiver, tmp_path: Path) -> None:
    listed = httpx.post(f"{server}/v1/watchlists", json={"name": "wanted", "plates": ["AD799KB"]})
    assert listed.status_code == 201, listed.text
    clip = encode(approaching("plate_ad799kb"), tmp_path / "car.mp4")
    response = post(server, clip, camera_id="gate-3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["truncated"] is False and body["camera_id"] == "gate-3"
    assert body["duration"] == pytest.approx(1.6, abs=0.15) and body["frames_read"] == 8  # 5/s sampled
    [vehicle] = body["vehicles"]
    assert vehicle["plate"] == "AD799KB" and vehicle["review"] is False
    assert vehicle["candidates"][0] == {"plate": "AD799KB", "score": vehicle["score"]}
    assert vehicle["frames_read"] >= 6 and vehicle["agreeing"] >= 5
    assert 0 <= vehicle["first_seen"] < 0.5 and vehicle["last_seen"] > 1.2
    assert vehicle["direction"] == "approaching"
    box = vehicle["box"]
    assert 0 <= box["xmin"] < box["xmax"] <= 1280 and 0 <= box["ymin"] < box["ymax"] <= 720
    assert [m["plate"] for m in vehicle["watchlist"]] == ["AD799KB"]
    crop = httpx.get(f"{server}{vehicle['crop']}")
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(crop.content)).width > box["xmax"] - box["xmin"]  # the plate and around it
    assert error(httpx.get(f"{server}/v1/plate-reader/video/crops/nosuchid"), 404)["code"] == "crop_not_found"
    [(_, sent, _)] = [hook for hook in _wait_hooks(receiver, 1) if hook[0] == "/vehicles"]
    assert sent["hook"]["event"] == "vehicle" and sent["data"]["camera_id"] == "gate-3"
    assert [r["plate"] for r in sent["data"]["results"]] == ["AD799KB"]


def test_an_unsure_vehicle_goes_to_the_review_queue_with_its_crop(server: str, tmp_path: Path) -> None:
    clip = encode(approaching("plate_krw301"), tmp_path / "hard.mp4")
    # Stricter than the default threshold for this clip: its vehicle is flagged, whatever the vote.
    [vehicle] = post(server, clip, camera_id="gate-review", review_threshold="0.9999").json()["vehicles"]
    assert vehicle["review"] is True
    [item] = recorded_reviews(server, count=1, camera_id="gate-review")
    assert item["plate"] == vehicle["plate"] and item["score"] == vehicle["score"]
    crop = httpx.get(f"{server}/v1/reviews/{item['id']}/photo")
    assert (
        Image.open(io.BytesIO(crop.content)).size
        == Image.open(io.BytesIO(httpx.get(f"{server}{vehicle['crop']}").content)).size
    )  # the event's best crop is the queued photo


def test_a_cut_clip_reads_what_decodes_or_is_refused(server: str, tmp_path: Path) -> None:
    frames = approaching("plate_ad799kb")
    indexed_first = encode(frames, tmp_path / "fast.mp4", movflags="+faststart")
    with av.open(io.BytesIO(indexed_first)) as clip:  # cut inside the 11th frame of 16
        at, size = [(p.pos, p.size) for p in clip.demux(video=0) if p.size][10]
    cut = post(server, indexed_first[: at + size // 2])
    assert cut.status_code == 200, cut.text
    assert cut.json()["truncated"] is True and 2 <= cut.json()["frames_read"] <= 5  # of 8 in the whole
    assert [v["plate"] for v in cut.json()["vehicles"]] == ["AD799KB"]
    indexed_last = encode(frames, tmp_path / "plain.mp4")  # FFmpeg's default: the index at the end
    refused = error(post(server, indexed_last[: len(indexed_last) // 2]), 400)
    assert refused["code"] == "corrupt_video" and "complete file" in refused["message"]


def test_pure_noise_is_read_and_holds_no_vehicle(server: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (270, 480, 3), dtype=np.uint8) for _ in range(10)]
    with Client(server, timeout=120) as client:  # the Python client's call
        read = client.read_video(encode(noise, tmp_path / "noise.mp4"))
    assert read.vehicles == () and read.frames_read == 5 and not read.truncated


def test_a_clip_over_the_limits_is_refused_before_decoding(server: str, tmp_path: Path) -> None:
    dark = [np.zeros((64, 64, 3), np.uint8)] * 10
    long_by_frames = encode(dark, tmp_path / "long.mp4", fps=1)  # 10 s > 6 s
    assert error(post(server, long_by_frames), 413)["code"] == "video_too_long"
    # A Matroska header claiming 10 hours: refused from the header, no frame decoded.
    claims = bytearray(encode(dark, tmp_path / "short.mkv", container="matroska"))
    at = claims.find(b"\x44\x89\x88")  # Segment Info's Duration, a float64 in milliseconds
    claims[at + 3 : at + 11] = struct.pack(">d", 10 * 3600 * 1000.0)
    too_long = error(post(server, bytes(claims), "ten-hours.mkv"), 413)
    assert too_long["code"] == "video_too_long" and "36,000.0 s" in too_long["message"]
    big = error(post(server, b"\x00" * (MAX_VIDEO_BYTES + 1)), 413)
    assert big["code"] == "video_too_large" and "MODELPORT_PLATE_VIDEO_MAX_BYTES" in big["message"]


def test_what_is_not_a_video_is_415(server: str) -> None:
    photo = street_with_plates([("plate_ad799kb", (300, 400), 1.5)]).jpeg
    assert error(post(server, photo, "car.jpg"), 415)["code"] == "unsupported_video"
    assert (
        error(post(server, b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n", "x.m3u8"), 415)["param"] == "upload"
    )
    assert (
        error(httpx.post(f"{server}/v1/plate-reader/video", json={"x": 1}), 415)["code"]
        == "unsupported_media_type"
    )
    assert httpx.get(f"{server}/readyz").status_code == 200  # still serving


def _wait_hooks(
    receiver: Receiver, count: int, timeout: float = 20.0
) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    deadline = time.monotonic() + timeout
    while len(receiver.got) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    with receiver.lock:
        return list(receiver.got)
