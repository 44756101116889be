"""The review queue for real: a real plate reader records unsure readings in its database,
and the review API lists, shows and decides them over real HTTP."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.reviews import recorded_reviews
from tests.scenes import plate_on_street

pytestmark = pytest.mark.slow


def read(url: str, scene_bytes: bytes, **data: str) -> dict:
    response = httpx.post(
        f"{url}/v1/plate-reader", files={"upload": ("car.jpg", scene_bytes)}, data=data, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_an_unsure_reading_is_queued_shown_and_corrected(plate_server: str) -> None:
    hard = plate_on_street(plate_asset="plate_krw301")
    [plate] = read(plate_server, hard.jpeg, camera_id="gate-7")["results"]
    assert plate["review"] is True

    page = recorded_reviews(plate_server, count=1, status="pending", camera_id="gate-7")
    [item] = [i for i in page if i["plate"] == plate["plate"]]
    assert item["reason"] == "review" and item["camera_id"] == "gate-7" and item["score"] == plate["score"]
    assert item["box"] == plate["box"] and item["detector_model"].startswith("plate-detector:")

    crop = httpx.get(f"{plate_server}/v1/reviews/{item['id']}/crop")
    photo = httpx.get(f"{plate_server}/v1/reviews/{item['id']}/photo")
    assert crop.headers["content-type"] == photo.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(photo.content)).size == hard.size
    assert Image.open(io.BytesIO(crop.content)).width < 400

    # The text read, typed back (any case, spaces): the reviewer confirms the reading.
    typed = " ".join((plate["plate"][:3], plate["plate"][3:])).lower()
    confirmed = httpx.post(f"{plate_server}/v1/reviews/{item['id']}", json={"plate": typed}).json()
    assert confirmed["status"] == "done" and confirmed["decision"] == "confirmed"
    assert confirmed["corrected_plate"] == plate["plate"]
    # The plate's own text: confirmed again where the reader read it so (PP-OCRv4 read KRW301,
    # unsure), a correction where it did not (PP-OCRv6 reads KRN301, flagged).
    decided = httpx.post(f"{plate_server}/v1/reviews/{item['id']}", json={"plate": "krw 301"}).json()
    expected = "confirmed" if plate["plate"] == "KRW301" else "corrected"
    assert decided["status"] == "done" and decided["decision"] == expected
    assert decided["corrected_plate"] == "KRW301"
    # Idempotent: the same decision again changes nothing; a later one replaces it.
    again = httpx.post(f"{plate_server}/v1/reviews/{item['id']}", json={"plate": "KRW301"}).json()
    assert again["corrected_plate"] == "KRW301"
    other = httpx.post(f"{plate_server}/v1/reviews/{item['id']}", json={"plate": "krw 307"}).json()
    assert (
        other["decision"] == "corrected" and other["corrected_plate"] == "KRW307"
    )  # text other than the read
    assert (
        httpx.post(f"{plate_server}/v1/reviews/{item['id']}", json={"not_a_plate": True}).json()["decision"]
        == "not_a_plate"
    )
    pending = httpx.get(f"{plate_server}/v1/reviews", params={"status": "pending"}).json()["data"]
    assert item["id"] not in [i["id"] for i in pending]
    metrics = httpx.get(f"{plate_server}/metrics").text
    assert "modelport_reviews_pending" in metrics and 'decision="not_a_plate"' in metrics


def test_pages_follow_the_cursor_oldest_first(plate_server: str) -> None:
    for at in ((300, 700), (200, 600), (400, 650)):  # three photos (the same one again is skipped)
        read(plate_server, plate_on_street(plate_asset="plate_krw301", at=at).jpeg, camera_id="paging")
    recorded_reviews(plate_server, count=3, camera_id="paging")
    seen, cursor = [], None
    while True:
        params = {"camera_id": "paging", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{plate_server}/v1/reviews", params=params).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 3 and len({i["id"] for i in seen}) == 3
    assert [i["created_at"] for i in seen] == sorted(i["created_at"] for i in seen)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/v1/reviews/nope", None, 404, "review_not_found"),
        ("POST", "/v1/reviews/nope", {"skip": True}, 404, "review_not_found"),
        ("GET", "/v1/reviews?status=maybe", None, 400, None),
        ("GET", "/v1/reviews?cursor=garbage", None, 400, "invalid_cursor"),
        ("GET", "/v1/reviews?limit=0", None, 400, None),
    ],
)
def test_bad_review_requests_are_clear_4xx(
    plate_server: str, method: str, path: str, body: dict | None, status: int, code: str | None
) -> None:
    response = httpx.request(method, f"{plate_server}{path}", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code


def test_a_decision_body_must_say_one_thing(plate_server: str) -> None:
    hard = plate_on_street(plate_asset="plate_krw301")
    read(plate_server, hard.jpeg, camera_id="bodies")
    [item, *_] = recorded_reviews(plate_server, count=1, camera_id="bodies")  # written after the answer
    for body in ({}, {"plate": "AB1", "skip": True}, {"plate": "--"}, {"verdict": "ok"}):
        response = httpx.post(f"{plate_server}/v1/reviews/{item['id']}", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["message"]


def test_a_corrected_box_must_lie_inside_the_photo(plate_server: str) -> None:
    # A box outside its photo became detector training data and failed `reviews export` whole
    # (schemathesis had decided an item with such a box on the shared server).
    read(plate_server, plate_on_street(plate_asset="plate_krw301", at=(250, 640)).jpeg, camera_id="boxes")
    [item, *_] = recorded_reviews(plate_server, count=1, camera_id="boxes")
    photo = Image.open(io.BytesIO(httpx.get(f"{plate_server}/v1/reviews/{item['id']}/photo").content))
    width, height = photo.size
    for box in (
        {"xmin": 236472, "ymin": 1579, "xmax": 167907, "ymax": 2220},  # the one export choked on
        {"xmin": 10, "ymin": 10, "xmax": width + 1, "ymax": 20},
        {"xmin": 30, "ymin": 10, "xmax": 20, "ymax": 20},
    ):
        response = httpx.post(f"{plate_server}/v1/reviews/{item['id']}", json={"plate": "KRW301", "box": box})
        assert response.status_code == 400, (box, response.text)
        assert response.json()["error"]["code"] == "invalid_box"
    inside = {"xmin": 0, "ymin": 0, "xmax": width, "ymax": height}
    decided = httpx.post(f"{plate_server}/v1/reviews/{item['id']}", json={"plate": "KRW301", "box": inside})
    assert decided.status_code == 200 and decided.json()["corrected_box"] == inside, decided.text
