"""Requests that broke, stalled or bloated the plate reader (issue 20), sent to real servers:
each gets a clear 4xx or a valid answer, /livez keeps answering while a huge photo is decoded,
and memory stays inside the 1 GiB the manifests declare."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from services.core.database import database_engine
from services.plate_reader.review_store import ReviewStore
from tests.probes import livez_latencies, peak_rss, png_header, rss_now_mb
from tests.scenes import iou, plate_on_street, street_with_plates
from tests.servers import Server, serve_process

pytestmark = pytest.mark.slow

GOOD = plate_on_street()
DECLARED_MEMORY_MB = 1024  # deploy/k8s: resources.limits.memory 1Gi


def png(width: int, height: int, colour: tuple[int, int, int] = (90, 120, 160)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def assert_still_serving(url: str) -> None:
    response = httpx.post(f"{url}/v1/plate-reader", files={"upload": GOOD.jpeg}, timeout=60)
    assert response.status_code == 200, response.text
    assert [p["plate"] for p in response.json()["results"]] == [GOOD.plate]


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 30, error
    return error


# --- on the shared test server (small limits) --------------------------------------------------

DEEP = "[" * 2000 + "]" * 2000


@pytest.mark.parametrize(
    "request_kwargs",
    [
        dict(content=DEEP.encode(), headers={"content-type": "application/json"}),
        dict(json={"image": "", "config": DEEP}),
        dict(files={"upload": GOOD.jpeg}, data={"config": DEEP}),
    ],
    ids=["json body", "config in json", "config in multipart"],
)
def test_json_nested_2000_deep_is_a_400(plate_server: str, request_kwargs: dict) -> None:
    response = httpx.post(f"{plate_server}/v1/plate-reader", timeout=30, **request_kwargs)
    assert response.status_code == 400, response.text  # was 500: RecursionError
    assert "nested too deeply" in response.json()["error"]["message"]
    assert_still_serving(plate_server)


@pytest.mark.parametrize("sent", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_timestamp_past_year_1_or_9999_in_utc_is_a_400(plate_server: str, sent: str) -> None:
    response = httpx.post(
        f"{plate_server}/v1/plate-reader/", files={"upload": GOOD.jpeg}, data={"timestamp": sent}, timeout=30
    )
    assert_error(response, 400, "invalid_timestamp")  # was 500: OverflowError
    assert_still_serving(plate_server)


def test_year_1_is_echoed_as_iso_8601(plate_server: str) -> None:
    response = httpx.post(
        f"{plate_server}/v1/plate-reader/",
        files={"upload": GOOD.jpeg},
        data={"timestamp": "0001-01-01T00:00:00"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["timestamp"] == "0001-01-01T00:00:00.000000Z"  # was "1-01-01T..."


def test_a_1x2600000_image_is_read_and_refused_for_annotation_with_a_clear_413(plate_server: str) -> None:
    long = png(1, 2_600_000)  # 7.6 KB
    read = httpx.post(f"{plate_server}/v1/plate-reader", files={"upload": long}, timeout=60)
    assert read.status_code == 200 and read.json()["results"] == []
    annotated = httpx.post(f"{plate_server}/v1/plate-reader/annotated", files={"upload": long}, timeout=60)
    error = assert_error(annotated, 413, "too_large_to_annotate")  # was 500 (font size, JPEG side)
    assert "65,500" in error["message"] and "1x2600000" in error["message"]
    assert_still_serving(plate_server)


def test_a_10_gigapixel_header_is_413_too_many_pixels_with_its_size(plate_server: str) -> None:
    response = httpx.post(
        f"{plate_server}/v1/plate-reader", files={"upload": png_header(100_000, 100_000)}, timeout=30
    )
    error = assert_error(response, 413, "too_many_pixels")  # was 415 "not an image"
    assert "100000x100000 = 10,000,000,000 pixels" in error["message"]


def test_a_photo_over_the_whole_image_size_is_read_at_full_resolution(plate_server: str) -> None:
    """2560x1440 (3.7 Mpx) is kept at the detector's size; its plate is cut from the photo
    decoded again: the same text, and the box in the photo's own pixels."""
    large = street_with_plates([("plate_ad799kb", (1000, 1400 - 200), 4.0)], canvas=(2560, 1440))
    response = httpx.post(f"{plate_server}/v1/plate-reader", files={"upload": large.jpeg}, timeout=60)
    assert response.status_code == 200, response.text
    [plate] = response.json()["results"]
    assert plate["plate"] == large.plate
    box = plate["box"]
    assert iou((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), large.box) > 0.7
    annotated = httpx.post(
        f"{plate_server}/v1/plate-reader/annotated", files={"upload": large.jpeg}, timeout=60
    )
    assert Image.open(io.BytesIO(annotated.content)).size == (2560, 1440)


# --- on a server with the default limits ------------------------------------------------------


@pytest.fixture(scope="module")
def default_server(
    plate_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A plate reader with the limits it ships with (the shared one runs with small ones), and
    a longer time limit: a shared 2-core machine took 20-60 s to decode 24 photos of 36 Mpx."""
    log = tmp_path_factory.mktemp("logs") / "plate_reader_defaults.log"
    with serve_process(
        "services.plate_reader.service:PlateReader",
        log_path=log,
        env={"MODELPORT_PLATE_MAX_QUEUE_WAIT_S": "200"},
    ) as server:
        yield server


def test_livez_answers_while_a_39_megapixel_png_is_decoded(default_server: Server) -> None:
    url = default_server.url
    huge = png(6245, 6245)  # 39 Mpx, ~130 KB
    with livez_latencies(url) as idle:
        pass
    with livez_latencies(url) as busy:
        response = httpx.post(f"{url}/v1/plate-reader", files={"upload": huge}, timeout=120)
    assert response.status_code == 200, response.text
    print(
        f"/livez while a 39 Mpx PNG was read: max {max(busy) * 1000:.0f} ms over {len(busy)} calls "
        f"(idle: max {max(idle) * 1000:.0f} ms)"
    )
    # Decoded on the event loop it froze /livez for 0.8-1.0 s on a quiet machine (2.6 s on a busy
    # one); the goal is under 100 ms, the bound is generous for a shared, busy 2-core machine.
    assert max(busy) < 0.5


def test_a_1x39000000_image_gets_a_clear_413_from_annotated(default_server: Server) -> None:
    response = httpx.post(
        f"{default_server.url}/v1/plate-reader/annotated", files={"upload": png(1, 39_000_000)}, timeout=120
    )
    assert_error(response, 413, "too_large_to_annotate")
    assert_still_serving(default_server.url)


def test_three_requests_of_eight_36_megapixel_photos_stay_inside_1_gib(default_server: Server) -> None:
    url, photo = default_server.url, png(6000, 6000)
    files = [("upload", (f"{i}.png", photo)) for i in range(8)]
    before = rss_now_mb(default_server.process.pid)
    with peak_rss(default_server.process.pid) as peak, ThreadPoolExecutor(3) as pool:
        responses = list(
            pool.map(lambda _: httpx.post(f"{url}/v1/plate-reader", files=files, timeout=240), range(3))
        )
    assert [r.status_code for r in responses] == [200] * 3, [r.text[:200] for r in responses]
    assert all(len(r.json()) == 8 for r in responses)
    print(
        f"serving RSS: {before:.0f} MB before, peak {peak.total_mb:.0f} MB "
        f"(per process {[round(v) for v in peak.per_process_mb.values()]})"
    )
    assert peak.total_mb < DECLARED_MEMORY_MB  # was 3.4 GB


def test_photos_queued_for_review_are_written_before_a_sigterm_exit(
    plate_models: dict[str, Path], tmp_path: Path
) -> None:
    """Recording runs after the answer; SIGTERM loses nothing queued, and a photo sent again
    from the same camera is recorded once. Each request's 8 photos are queued at its answer
    together, so a SIGTERM right after the last answer finds photos still to write."""
    env = {"MODELPORT_DATA_DIR": str(tmp_path / "data")}
    scenes = [plate_on_street(plate_asset="plate_krw301", at=(100 + 25 * i, 550 + 12 * i)) for i in range(16)]
    with serve_process(
        "services.plate_reader.service:PlateReader", env=env, log_path=tmp_path / "server.log"
    ) as server:

        def read(photos: list[bytes]) -> list[dict]:
            files = [("upload", (f"{i}.jpg", p)) for i, p in enumerate(photos)]
            response = httpx.post(
                f"{server.url}/v1/plate-reader", data={"camera_id": "sigterm"}, files=files, timeout=120
            )
            assert response.status_code == 200, response.text
            return response.json()

        first = read([s.jpeg for s in scenes[:8]])
        again = read([scenes[0].jpeg])  # the same photo from the same camera: not recorded twice
        last = read([s.jpeg for s in scenes[8:]])
        server.process.send_signal(signal.SIGTERM)  # as Kubernetes does, right after the answer
        server.process.wait(60)
    assert all(body["results"] and body["results"][0]["review"] for body in [*first, again, *last])
    store = ReviewStore(
        database_engine(f"sqlite:///{tmp_path / 'data' / 'modelport.sqlite3'}"),
        tmp_path / "data" / "review-images",
    )
    items = store.list(camera_id="sigterm", limit=100)[0]
    assert len({i.photo_path for i in items}) == 16  # every photo once, the repeat skipped
    assert all(store.image(i, "photo").exists() for i in items)
    assert "could not record" not in (tmp_path / "server.log").read_text()
