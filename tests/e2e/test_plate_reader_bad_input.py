"""Every kind of bad input gets a clear 4xx in OpenAI's error shape, and the server keeps
serving: each case is followed by a good request that must still succeed."""

from __future__ import annotations

import io
import pickle

import httpx
import pytest
from PIL import Image

from tests.scenes import plate_on_street

pytestmark = pytest.mark.slow


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG")
    return out.getvalue()


GOOD = plate_on_street()  # fetched once per run (cached in ~/.cache/modelport)


def _assert_still_serving(url: str) -> None:
    response = httpx.post(f"{url}/v1/plate-reader", files={"upload": GOOD.jpeg}, timeout=30)
    assert response.status_code == 200, response.text
    assert [p["plate"] for p in response.json()["results"]] == [GOOD.plate]


def _post(url: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/plate-reader", timeout=30, **kwargs)


CASES = {
    "empty file": (dict(files={"upload": ("car.jpg", b"")}), 400, "empty_image"),
    "not an image": (
        dict(files={"upload": ("car.jpg", b"hello, I am text not a JPEG")}),
        415,
        "unsupported_image",
    ),
    "truncated jpeg": (dict(files={"upload": GOOD.jpeg[: len(GOOD.jpeg) // 2]}), 400, "corrupt_image"),
    "gif not allowed": (
        dict(files={"upload": ("a.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")}),
        415,
        "unsupported_image",
    ),
    "upload over the size limit": (
        dict(files={"upload": b"\xff\xd8" + b"\0" * 2_100_000}),
        413,
        "image_too_large",
    ),
    "decompression bomb": (dict(files={"upload": _png(5000, 5000)}), 413, "too_many_pixels"),
    "wrong field name": (dict(files={"file": GOOD.jpeg}), 400, "missing_upload"),
    "too many images": (dict(files=[("upload", GOOD.jpeg)] * 5), 400, "too_many_images"),
    "body over the request limit": (dict(files=[("upload", b"x" * 1_900_000)] * 4), 413, "request_too_large"),
    "min_score out of range": (
        dict(files={"upload": GOOD.jpeg}, data={"min_score": "7"}),
        400,
        "invalid_min_score",
    ),
    "review_threshold not a number": (
        dict(files={"upload": GOOD.jpeg}, data={"review_threshold": "high"}),
        400,
        "invalid_review_threshold",
    ),
    "unknown region": (
        dict(files={"upload": GOOD.jpeg}, data={"regions": "atlantis"}),
        400,
        "invalid_regions",
    ),
    "bad base64": (dict(json={"image": "not base64 !!"}), 400, "invalid_base64"),
    "base64 of a number": (dict(json={"image": 12}), 400, "invalid_base64"),
    "json without image": (dict(json={"picture": "abc"}), 400, "missing_image"),
    "invalid json": (
        dict(content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    ),
    "no content type": (dict(content=GOOD.jpeg), 415, "unsupported_media_type"),
    "pickled body": (
        dict(
            content=pickle.dumps({"image": b"x"}), headers={"content-type": "application/vnd.bentoml+pickle"}
        ),
        415,
        "unsupported_media_type",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(plate_server: str, case: str) -> None:
    kwargs, status, code = CASES[case]
    response = _post(plate_server, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 20  # a sentence that says what to fix, not just a code
    _assert_still_serving(plate_server)


def test_annotated_refuses_several_images(plate_server: str) -> None:
    response = httpx.post(
        f"{plate_server}/v1/plate-reader/annotated",
        files=[("upload", GOOD.jpeg), ("upload", GOOD.jpeg)],
        timeout=30,
    )
    assert response.status_code == 400
    assert "exactly one image" in response.json()["error"]["message"]
    _assert_still_serving(plate_server)


def test_unknown_route_is_a_json_404(plate_server: str) -> None:
    response = httpx.post(f"{plate_server}/v1/plate-raeder", files={"upload": GOOD.jpeg})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]  # the one error shape (services/core/api_errors.py)
    assert error["code"] == "not_found" and error["type"] == "invalid_request_error", error
    assert error["message"] and "param" in error, error
    _assert_still_serving(plate_server)
