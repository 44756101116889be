"""On a real plate reader: a path no route takes is a 404 in the error shape, and however many
such paths are asked for, BentoML's request metrics gain one `endpoint` label for all of them
(services/core/route_metrics.py); ids in a route's path do not make labels either. An error
that echoes an invalid `regions` list echoes a short excerpt of it."""

from __future__ import annotations

import base64
import re
import uuid

import httpx
import pytest

from tests.scenes import plate_on_street

pytestmark = pytest.mark.slow

ENDPOINT = re.compile(r'^bentoml_service_request_total\{[^}]*endpoint="([^"]*)"', re.MULTILINE)


def endpoints(url: str) -> set[str]:
    return set(ENDPOINT.findall(httpx.get(f"{url}/metrics", timeout=30).text))


def series(url: str) -> int:
    return sum(
        1
        for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines()
        if line and not line.startswith("#")
    )


def assert_not_found(response: httpx.Response, code: str = "not_found") -> None:
    assert response.status_code == 404, (response.request.url, response.text)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/no-such-page"),
        ("GET", "/v1/no-such-route"),
        ("POST", "/v1/plate-reader/extra"),
        ("GET", "/v1/reviews/some-id/crop/more"),
        ("GET", "/v1/reviewz"),
        ("GET", "/review/no-such-page"),
    ],
)
def test_a_path_no_route_takes_is_a_404_in_the_error_shape(plate_server: str, method: str, path: str) -> None:
    assert_not_found(httpx.request(method, f"{plate_server}{path}", timeout=10))


def test_known_paths_still_answer(plate_server: str) -> None:
    assert httpx.get(f"{plate_server}/v1/docs", timeout=10).status_code == 200
    assert httpx.get(f"{plate_server}/review/", timeout=10).status_code == 200
    assert httpx.get(f"{plate_server}/review", timeout=10, follow_redirects=True).status_code == 200
    assert httpx.get(f"{plate_server}/livez", timeout=10).status_code == 200
    wrong_method = httpx.delete(f"{plate_server}/v1/plate-reader", timeout=10)
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]


def test_200_unknown_paths_add_one_endpoint_label_and_few_series(plate_server: str) -> None:
    httpx.get(f"{plate_server}/no-such-page", timeout=10)  # the one label exists from here on
    httpx.get(f"{plate_server}/v1/reviews/{uuid.uuid4().hex}", timeout=10)
    before_labels, before_series = endpoints(plate_server), series(plate_server)
    with httpx.Client(base_url=plate_server, timeout=10) as client:
        for i in range(200):
            path = [f"/{uuid.uuid4().hex}", f"/v1/{uuid.uuid4().hex}/x", f"/v1/reviews/{uuid.uuid4().hex}"][
                i % 3
            ]
            assert client.get(path).status_code == 404
    after_labels, after_series = endpoints(plate_server), series(plate_server)
    assert after_labels == before_labels, after_labels - before_labels
    assert {"/{unknown}", "/v1/reviews/{item_id}"} <= after_labels
    assert not any(re.search(r"[0-9a-f]{32}", label) for label in after_labels)
    # Before: every path made ~20 series (a histogram's buckets, counters), 4,000 for 200.
    assert after_series - before_series < 40, after_series - before_series


def test_an_invalid_regions_list_is_echoed_as_a_short_excerpt(plate_server: str) -> None:
    names = [f"atlantis{i:06d}" for i in range(20_000)]  # none a region, none shaped like a code
    image = base64.b64encode(plate_on_street().jpeg).decode()
    response = httpx.post(
        f"{plate_server}/v1/plate-reader", json={"image": image, "regions": names}, timeout=30
    )
    assert response.status_code == 400, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "invalid_regions"
    assert "atlantis000000" in error["message"] and "19,995 more" in error["message"]
    assert len(error["message"]) < 1_000, len(error["message"])
