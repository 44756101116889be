"""services/core/api_errors.py under a real uvicorn server: an unexpected exception is one 500
in the error shape, logged once, and the client's keep-alive connection goes on serving.

The failing route is a fake (it raises on purpose); the error handling, FastAPI, Starlette and
uvicorn around it are the real ones both services run on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from services.core import api_errors
from tests.servers import free_port


class FakeRouteFailure(RuntimeError):
    pass


def failing_app() -> FastAPI:
    app = FastAPI()
    api_errors.install(app)

    @app.post("/fails")
    async def fails() -> None:
        raise FakeRouteFailure("a defect in a route")

    @app.post("/works")
    async def works() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.fixture()
def server_url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(failing_app(), host="127.0.0.1", port=port, log_config=None, timeout_keep_alive=30)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def local_address(response: httpx.Response) -> tuple[str, int]:
    return response.extensions["network_stream"].get_extra_info("client_addr")


def test_an_unexpected_error_is_one_logged_500_and_the_connection_serves_on(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with httpx.Client(base_url=server_url, limits=httpx.Limits(max_connections=1), timeout=10) as client:
        failed = client.post("/fails")
        assert failed.status_code == 500, failed.text
        assert failed.json() == {
            "error": {
                "message": "internal error (FakeRouteFailure); the server logged it",
                "type": "server_error",
                "param": None,
                "code": "internal_error",
            }
        }
        assert failed.headers.get("connection") != "close"
        time.sleep(0.3)  # time for the server to close the connection, if it were going to
        first_address = local_address(failed)
        after = [client.post("/works") for _ in range(3)]
        addresses = {local_address(r) for r in after}
    assert [r.status_code for r in after] == [200, 200, 200]
    # One TCP connection throughout: the 500 did not cost the client its keep-alive connection.
    assert addresses == {first_address}
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is FakeRouteFailure]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert logged[0].getMessage() == "unexpected error on POST /fails"
