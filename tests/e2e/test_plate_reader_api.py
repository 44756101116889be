"""The plate reader served for real (`bentoml serve`), called over real HTTP."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from services.plate_reader.settings import Settings
from tests.assets import asset
from tests.scenes import iou, plate_on_street

pytestmark = pytest.mark.slow


def test_ready_and_live(plate_server: str) -> None:
    assert httpx.get(f"{plate_server}/readyz").status_code == 200
    assert httpx.get(f"{plate_server}/livez").status_code == 200


def test_reads_the_plate_in_a_street_photo(plate_server: str) -> None:
    scene = plate_on_street()
    response = httpx.post(
        f"{plate_server}/v1/plate-reader",
        files={"upload": ("street.jpg", scene.jpeg, "image/jpeg")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == "street.jpg"
    assert body["processing_time"] > 0
    [plate] = body["results"]
    assert plate["plate"] == scene.plate
    assert plate["candidates"][0] == {"plate": scene.plate, "score": plate["score"]}  # one measure
    box = plate["box"]
    assert iou((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), scene.box) > 0.7
    assert 0.5 < plate["dscore"] <= 1 and 0 < plate["score"] <= 1
    assert plate["review"] is False  # a clean, sharp plate: sure enough to act on unchecked


def test_a_far_plate_in_a_large_photo_is_found_and_boxed_in_the_photos_pixels(plate_server: str) -> None:
    # 91 px wide in a 2560x1536 photo: too small for the whole-photo passes, found in tiles
    # (small_plates.py), on the server's tile thread after the photo's batch (photo_reading.py)
    scene = plate_on_street(canvas=(2560, 1536), at=(1200, 1100), scale=0.6)
    response = httpx.post(f"{plate_server}/v1/plate-reader", files={"upload": scene.jpeg}, timeout=60)
    assert response.status_code == 200, response.text
    plate = response.json()["results"][0]
    assert plate["plate"] == scene.plate
    box = plate["box"]
    assert iou((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), scene.box) > 0.5


def test_an_unsure_read_is_flagged_for_review_and_the_threshold_is_per_request(plate_server: str) -> None:
    hard = plate_on_street(plate_asset="plate_krw301")
    files = {"upload": ("hard.jpg", hard.jpeg, "image/jpeg")}
    [plate] = httpx.post(f"{plate_server}/v1/plate-reader", files=files, timeout=30).json()["results"]
    assert plate["review"] is True and plate["score"] < Settings.review_threshold, plate
    # review_threshold is the caller's knob: 0 accepts everything, 1 reviews everything.
    for threshold, review in ((0, False), (1, True)):
        response = httpx.post(
            f"{plate_server}/v1/plate-reader",
            files=files,
            data={"review_threshold": str(threshold)},
            timeout=30,
        )
        assert [p["review"] for p in response.json()["results"]] == [review]


def test_json_base64_gives_the_same_reading(plate_server: str) -> None:
    scene = plate_on_street()
    payload = {"image": base64.b64encode(scene.jpeg).decode(), "regions": ["eu-generic"]}
    response = httpx.post(f"{plate_server}/v1/plate-reader", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    assert [p["plate"] for p in response.json()["results"]] == [scene.plate]


def test_a_photo_without_plates_gives_no_results(plate_server: str) -> None:
    response = httpx.post(
        f"{plate_server}/v1/plate-reader", files={"upload": asset("bus").read_bytes()}, timeout=30
    )
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_several_images_in_one_request_come_back_in_order(plate_server: str) -> None:
    scene = plate_on_street()
    files = [
        ("upload", ("a.jpg", scene.jpeg)),
        ("upload", ("b.jpg", asset("bus").read_bytes())),
        ("upload", ("c.jpg", plate_on_street(at=(100, 200)).jpeg)),
    ]
    response = httpx.post(f"{plate_server}/v1/plate-reader", files=files, timeout=60)
    assert response.status_code == 200, response.text
    bodies = response.json()
    assert [b["filename"] for b in bodies] == ["a.jpg", "b.jpg", "c.jpg"]
    assert [[p["plate"] for p in b["results"]] for b in bodies] == [[scene.plate], [], [scene.plate]]


def test_annotated_returns_the_photo_as_jpeg(plate_server: str) -> None:
    scene = plate_on_street()
    [plate] = httpx.post(f"{plate_server}/v1/plate-reader", files={"upload": scene.jpeg}, timeout=30).json()[
        "results"
    ]
    response = httpx.post(
        f"{plate_server}/v1/plate-reader/annotated", files={"upload": scene.jpeg}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content)).convert("RGB")
    assert image.size == scene.size
    # The box outline (green, or orange for review) runs along the detected box's edges.
    box = plate["box"]
    middle_of_left_edge = (box["xmin"] + 1, (box["ymin"] + box["ymax"]) // 2)
    r, g, b = image.getpixel(middle_of_left_edge)
    assert g > 120 and b < 110, (r, g, b)


def _counts(url: str) -> dict[str, float]:
    """Each plate counter on /metrics, summed over its labels (cameras)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name.startswith(("modelport_plate", "modelport_plates")):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def test_metrics_count_plates(plate_server: str) -> None:
    # The server is the whole session's: what this request adds, not what the counters hold.
    before = _counts(plate_server)
    one_plate, no_plate = plate_on_street(), asset("bus").read_bytes()
    flagged = 0
    for photo in (one_plate.jpeg, no_plate):
        response = httpx.post(
            f"{plate_server}/v1/plate-reader",
            files={"upload": photo},
            data={"camera_id": "metrics-test"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        flagged += sum(plate["review"] for plate in response.json()["results"])
    after = _counts(plate_server)
    added = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    assert added["modelport_plates_read_total"] == 1, added
    assert added["modelport_plate_images_total"] == 2, added
    assert added["modelport_plate_images_without_plate_total"] == 1, added
    assert added["modelport_plate_reading_score_count"] == 1, added
    assert added["modelport_plate_reviews_total"] == flagged, added


def test_concurrent_requests_are_all_answered(plate_server: str) -> None:
    import asyncio

    scene = plate_on_street()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{plate_server}/v1/plate-reader", files={"upload": scene.jpeg})
                    for _ in range(8)
                )
            )

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert all([p["plate"] for p in r.json()["results"]] == [scene.plate] for r in responses)


def test_docs_page_describes_the_upload_field(plate_server: str) -> None:
    spec = httpx.get(f"{plate_server}/v1/openapi.json").json()
    body = spec["paths"]["/plate-reader"]["post"]["requestBody"]["content"]
    assert "upload" in body["multipart/form-data"]["schema"]["properties"]
    assert httpx.get(f"{plate_server}/v1/docs").status_code == 200
