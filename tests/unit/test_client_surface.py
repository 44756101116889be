"""The client's public surface: sorted __all__, every name importable, no torch needed."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

import modelport_client


def test_all_is_sorted_and_complete() -> None:
    assert modelport_client.__all__ == sorted(modelport_client.__all__)
    for name in modelport_client.__all__:
        assert hasattr(modelport_client, name), name


def test_importing_the_client_does_not_import_torch_or_bentoml() -> None:
    code = "import sys, modelport_client; print(sorted({'torch','bentoml','numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_timeout_is_finite() -> None:
    client = modelport_client.Client("http://127.0.0.1:9")
    try:
        assert 0 < client._http.timeout.read <= 60
    finally:
        client.close()


def fake_server(
    status: int, headers: dict[str, str], body: dict
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A fake server (httpx.MockTransport): answers every request alike and keeps them."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers, json=body)

    return httpx.MockTransport(answer), seen


def test_api_key_goes_as_a_bearer_token_and_429_says_when_to_retry(monkeypatch) -> None:
    busy = {
        "error": {
            "message": "busy: 64 requests waiting",
            "type": "rate_limit_error",
            "param": None,
            "code": "overloaded",
        }
    }
    transport, seen = fake_server(429, {"retry-after": "3"}, busy)
    with (
        modelport_client.Client("http://fake", api_key="k3y", transport=transport) as client,
        pytest.raises(modelport_client.RateLimited) as raised,
    ):
        client.read_plates(b"\xff\xd8 not really a jpeg")
    assert seen[0].headers["authorization"] == "Bearer k3y"
    assert raised.value.retry_after == 3.0 and raised.value.code == "overloaded"
    # The key may come from the environment, as the OpenAI SDK's does; explicit headers win.
    monkeypatch.setenv("MODELPORT_API_KEY", "from-env")
    transport, seen = fake_server(401, {}, {"error": {"message": "wrong key", "code": "invalid_api_key"}})
    with (
        modelport_client.Client("http://fake", transport=transport) as client,
        pytest.raises(modelport_client.AuthenticationError),
    ):
        client.read_plates(b"x")
    assert seen[0].headers["authorization"] == "Bearer from-env"
    with (
        modelport_client.Client(
            "http://fake", headers={"Authorization": "Token other"}, transport=transport
        ) as client,
        pytest.raises(modelport_client.AuthenticationError),
    ):
        client.read_plates(b"x")
    assert seen[-1].headers["authorization"] == "Token other"
