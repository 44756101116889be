"""`upload_url` on a real plate reader (`bentoml serve`): off unless the operator lists hosts,
and even a listed host is never fetched from a loopback address. Each rule's other refusals:
tests/unit/test_upload_url.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PLATE_LIMITS
from tests.scenes import plate_on_street
from tests.servers import serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plate_server_fetching_localhost(
    plate_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A plate reader whose operator listed `localhost` in MODELPORT_PLATE_UPLOAD_URL_HOSTS."""
    log = tmp_path_factory.mktemp("logs") / "plate_reader_upload_url.log"
    with serve(
        "services.plate_reader.service:PlateReader",
        log_path=log,
        env={**PLATE_LIMITS, "MODELPORT_PLATE_UPLOAD_URL_HOSTS": "localhost"},
    ) as url:
        yield url


@pytest.fixture()
def listener() -> Iterator[socket.socket]:
    """A TCP port on loopback that records whether anything connected to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        yield sock


def _connected(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
        return True
    except BlockingIOError:
        return False


def _form(fields: dict[str, str]) -> dict[str, tuple[None, str]]:
    """Text fields as multipart/form-data (what Plate Recognizer's clients send), not urlencoded."""
    return {name: (None, value) for name, value in fields.items()}


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, "upload_url")
    return error["message"]


@pytest.mark.parametrize("as_json", [False, True])
def test_upload_url_is_refused_when_no_host_is_listed(plate_server: str, as_json: bool) -> None:
    fields = {"upload_url": "https://example.com/car.jpg"}
    response = (
        httpx.post(plate_server + "/v1/plate-reader/", json=fields, timeout=30)
        if as_json
        else httpx.post(plate_server + "/v1/plate-reader/", files=_form(fields), timeout=30)
    )
    assert "MODELPORT_PLATE_UPLOAD_URL_HOSTS" in _error(response, 400, "upload_url_disabled")


@pytest.mark.parametrize("as_json", [False, True])
def test_a_listed_host_resolving_to_loopback_is_refused_without_connecting(
    plate_server_fetching_localhost: str, listener: socket.socket, as_json: bool
) -> None:
    port = listener.getsockname()[1]
    fields = {"upload_url": f"https://localhost:{port}/car.jpg"}
    url = plate_server_fetching_localhost + "/v1/plate-reader/"
    response = (
        httpx.post(url, json=fields, timeout=30)
        if as_json
        else httpx.post(url, files=_form(fields), timeout=30)
    )
    message = _error(response, 400, "upload_url_refused")
    assert "loopback" in message
    assert not _connected(listener)


def test_the_listed_host_over_http_or_an_unlisted_one_is_refused(
    plate_server_fetching_localhost: str,
) -> None:
    url = plate_server_fetching_localhost + "/v1/plate-reader/"
    for target, says in (
        ("http://localhost/car.jpg", "https"),
        ("https://127.0.0.1/car.jpg", "MODELPORT_PLATE_UPLOAD_URL_HOSTS"),
    ):
        assert says in _error(
            httpx.post(url, files=_form({"upload_url": target}), timeout=30), 400, "upload_url_refused"
        )


def test_upload_and_upload_url_together_are_refused_and_upload_still_works(
    plate_server_fetching_localhost: str,
) -> None:
    url = plate_server_fetching_localhost + "/v1/plate-reader/"
    photo = {"upload": ("car.jpg", plate_on_street().jpeg, "image/jpeg")}
    both = httpx.post(url, files=photo, data={"upload_url": "https://localhost/car.jpg"}, timeout=30)
    assert both.status_code == 400 and both.json()["error"]["code"] == "upload_url_and_image"
    assert httpx.post(url, files=photo, timeout=30).status_code == 200
