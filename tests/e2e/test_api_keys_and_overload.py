"""API keys and overload on both services, served for real (`bentoml serve`), over real HTTP.

Each server runs with keys (one from MODELPORT_API_KEYS, one with a quota from a keys file)
and tiny limits (1 request in flight, none waiting), so a small burst overloads it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.core.api_keys import digest
from services.core.database import database_url
from services.core.usage import CallCounts
from tests.autocomplete_fixtures import SERVICE as AUTOCOMPLETE, import_tiny_gpt2
from tests.reviews import recorded_reviews
from tests.scenes import plate_on_street
from tests.servers import serve

pytestmark = pytest.mark.slow

KEY = "k3y-from-the-environment-0123"
QUOTA_KEY = "k3y-from-the-file-with-a-quota"
QUOTA = 2
REVIEWER_KEY = "k3y-of-a-person-who-reviews"
TINY_LIMITS = {"MAX_IN_FLIGHT": "1", "MAX_QUEUE": "0"}


def keyed_env(tmp: Path, service_prefix: str) -> dict[str, str]:
    keys_file = tmp / "api-keys"
    keys_file.write_text(
        f"# test keys\n{QUOTA_KEY} reader {QUOTA}   # quota'd\n"
        "k3y-of-a-plate-recognizer-app 500\n"
        f"{REVIEWER_KEY} reviewer\n"
    )
    return {
        "MODELPORT_API_KEYS": KEY,
        "MODELPORT_API_KEYS_FILE": str(keys_file),
        "MODELPORT_METRICS_REQUIRE_KEY": "1",
        "MODELPORT_DATA_DIR": str(tmp / "data"),
        **{f"{service_prefix}{name}": value for name, value in TINY_LIMITS.items()},
    }


@pytest.fixture(scope="module")
def plate_keyed(
    plate_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("plate-keyed")
    with serve(
        "services.plate_reader.service:PlateReader",
        env=keyed_env(tmp, "MODELPORT_PLATE_"),
        log_path=tmp / "server.log",
    ) as url:
        yield url, tmp


@pytest.fixture(scope="module")
def autocomplete_keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("autocomplete-keyed")
    env = {
        "MODELPORT_AUTOCOMPLETE_MODEL": import_tiny_gpt2(),
        "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1",
        **keyed_env(tmp, "MODELPORT_AUTOCOMPLETE_"),
    }
    with serve(AUTOCOMPLETE, env=env, log_path=tmp / "server.log") as url:
        yield url


def auth(key: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {key}"}


def photo() -> dict[str, tuple[str, bytes, str]]:
    return {"upload": ("street.jpg", plate_on_street().jpeg, "image/jpeg")}


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and set(error) == {"message", "type", "param", "code"}
    return error


# --- API keys ---------------------------------------------------------------------------------


def test_plate_reader_refuses_a_missing_or_wrong_key_in_the_error_shape(
    plate_keyed: tuple[str, Path],
) -> None:
    url, _ = plate_keyed
    missing = httpx.post(f"{url}/v1/plate-reader", files=photo(), timeout=30)
    assert "Authorization: Bearer KEY" in assert_refused(missing, 401, "missing_api_key")["message"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    for header in (auth("not-the-key-but-long-enough"), auth(KEY, "Basic"), {"Authorization": KEY}):
        wrong = httpx.post(f"{url}/v1/plate-reader", files=photo(), headers=header, timeout=30)
        message = assert_refused(wrong, 401, "invalid_api_key")["message"]
        assert KEY not in message


def test_plate_reader_accepts_token_and_bearer(plate_keyed: tuple[str, Path]) -> None:
    url, _ = plate_keyed
    scene = plate_on_street()
    for scheme in ("Token", "Bearer", "bearer"):
        response = httpx.post(
            f"{url}/v1/plate-reader",
            headers=auth(KEY, scheme),
            timeout=30,
            files={"upload": ("street.jpg", scene.jpeg, "image/jpeg")},
        )
        assert response.status_code == 200, response.text
        assert [p["plate"] for p in response.json()["results"]] == [scene.plate]


def test_health_and_docs_stay_open_and_metrics_takes_a_key(plate_keyed: tuple[str, Path]) -> None:
    url, _ = plate_keyed
    for path in ("/livez", "/readyz", "/v1/docs", "/v1/openapi.json"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path
    assert_refused(httpx.get(f"{url}/metrics", timeout=10), 401, "missing_api_key")
    metrics = httpx.get(f"{url}/metrics", headers=auth(KEY), timeout=10)
    assert metrics.status_code == 200 and "modelport_plates_read_total" in metrics.text


def test_a_key_past_its_monthly_quota_gets_429_and_calls_are_counted(
    plate_keyed: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, tmp = plate_keyed
    for _ in range(QUOTA):
        ok = httpx.post(f"{url}/v1/plate-reader", files=photo(), headers=auth(QUOTA_KEY, "Token"), timeout=30)
        assert ok.status_code == 200, ok.text
    over = httpx.post(f"{url}/v1/plate-reader", files=photo(), headers=auth(QUOTA_KEY, "Token"), timeout=30)
    error = assert_refused(over, 429, "quota_exceeded")
    assert f"monthly quota of {QUOTA} calls" in error["message"] and "resets on" in error["message"]
    assert int(over.headers["retry-after"]) > 0
    # The counts are in the data folder's database (the review queue's), by key id, never by key.
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp / "data"))  # as the server has it
    url = database_url()
    assert CallCounts(url).calls(digest(QUOTA_KEY).hex()[:12]) == QUOTA
    assert all(QUOTA_KEY.encode() not in f.read_bytes() for f in (tmp / "data").glob("*.sqlite3*"))


def test_the_review_queue_takes_a_reviewer_key_and_deciding_is_not_a_call(
    plate_keyed: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, tmp = plate_keyed
    unsure = plate_on_street(plate_asset="plate_krw301")
    read = httpx.post(
        f"{url}/v1/plate-reader", files={"upload": ("car.jpg", unsure.jpeg)}, headers=auth(KEY), timeout=30
    )
    assert read.status_code == 200 and read.json()["results"][0]["review"] is True
    assert_refused(httpx.get(f"{url}/v1/reviews", headers=auth(KEY)), 403, "insufficient_role")
    assert_refused(httpx.get(f"{url}/v1/reviews"), 401, "missing_api_key")
    [item, *_] = recorded_reviews(url, count=1, status="pending", headers=auth(REVIEWER_KEY))
    decided = httpx.post(
        f"{url}/v1/reviews/{item['id']}", json={"plate": "KRW301"}, headers=auth(REVIEWER_KEY)
    )
    assert decided.status_code == 200 and decided.json()["corrected_plate"] == "KRW301"
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp / "data"))  # the server's database
    assert CallCounts(database_url()).calls(digest(REVIEWER_KEY).hex()[:12]) == 0


def test_plate_recognizer_usage_and_statistics_are_the_keys(plate_keyed: tuple[str, Path]) -> None:
    url, _ = plate_keyed
    key = "k3y-of-a-plate-recognizer-app"  # its own key (the file's), so its count starts at 0
    first = httpx.post(f"{url}/v1/plate-reader/", files=photo(), headers=auth(key, "Token"), timeout=30)
    assert first.status_code == 200, first.text
    second = httpx.post(f"{url}/v1/plate-reader/", files=photo(), headers=auth(key, "Token"), timeout=30)
    assert [first.json()["usage"], second.json()["usage"]] == [
        {"calls": 1, "max_calls": 500},
        {"calls": 2, "max_calls": 500},
    ]
    statistics = httpx.get(f"{url}/v1/statistics/", headers=auth(key, "Token"), timeout=10).json()
    assert statistics["usage"]["calls"] == 2 and statistics["total_calls"] == 500
    assert_refused(httpx.get(f"{url}/v1/statistics/", timeout=10), 401, "missing_api_key")


def test_autocompleter_takes_the_openai_sdks_key_and_refuses_none(autocomplete_keyed: str) -> None:
    import openai

    with openai.OpenAI(base_url=f"{autocomplete_keyed}/v1", api_key=KEY, max_retries=0) as client:
        completion = client.completions.create(model="tiny-gpt2", prompt="Hello", max_tokens=4)
        assert completion.choices[0].text
    with (
        openai.OpenAI(
            base_url=f"{autocomplete_keyed}/v1", api_key="wrong-key-of-some-length", max_retries=0
        ) as client,
        pytest.raises(openai.AuthenticationError) as refused,
    ):
        client.completions.create(model="tiny-gpt2", prompt="Hello", max_tokens=4)
    assert refused.value.code == "invalid_api_key"
    bare = httpx.post(f"{autocomplete_keyed}/v1/completions", json={"prompt": "Hello"}, timeout=30)
    assert_refused(bare, 401, "missing_api_key")
    assert (
        httpx.post(
            f"{autocomplete_keyed}/v1/suggest",
            json={"text": "Dear Sir"},
            headers=auth(KEY, "Token"),
            timeout=30,
        ).status_code
        == 200
    )


# --- overload ---------------------------------------------------------------------------------


async def burst(url: str, n: int, **request: object) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return await asyncio.gather(*(client.post(url, **request) for _ in range(n)))


def assert_only_200s_and_429s(responses: list[httpx.Response]) -> Counter[int]:
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses  # never a hang, a 5xx or a dropped connection
    for response in responses:
        if response.status_code == 429:
            assert_refused(response, 429, "server_busy")
            assert 1 <= int(response.headers["retry-after"]) <= 60
    return statuses


def test_plate_reader_burst_gets_only_200s_and_429s_with_retry_after(plate_keyed: tuple[str, Path]) -> None:
    url, _ = plate_keyed
    responses = asyncio.run(burst(f"{url}/v1/plate-reader", 24, files=photo(), headers=auth(KEY)))
    statuses = assert_only_200s_and_429s(responses)
    assert statuses[429] >= 12, statuses  # 1 in flight, 0 waiting: most are turned away at once
    # The server is unharmed: the next request is read.
    assert (
        httpx.post(f"{url}/v1/plate-reader", files=photo(), headers=auth(KEY), timeout=30).status_code == 200
    )


def test_autocompleter_burst_gets_only_200s_and_429s_streams_too(autocomplete_keyed: str) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 32}
    statuses = assert_only_200s_and_429s(
        asyncio.run(burst(f"{autocomplete_keyed}/v1/completions", 24, json=body, headers=auth(KEY)))
    )
    assert statuses[429] >= 12, statuses
    streams = asyncio.run(
        burst(f"{autocomplete_keyed}/v1/completions", 12, headers=auth(KEY), json={**body, "stream": True})
    )
    assert_only_200s_and_429s(streams)
    for done in (r for r in streams if r.status_code == 200):
        events = [line[6:] for line in done.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and all("error" not in json.loads(e) for e in events[:-1])


def test_the_python_client_sends_its_api_key(
    plate_keyed: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelport_client import AuthenticationError, Client

    url, _ = plate_keyed
    scene = plate_on_street()
    monkeypatch.delenv("MODELPORT_API_KEY", raising=False)
    with Client(url, api_key=KEY) as client:
        assert [p.plate for p in client.read_plates(scene.jpeg).results] == [scene.plate]
    with Client(url) as client, pytest.raises(AuthenticationError) as refused:
        client.read_plates(scene.jpeg)
    assert refused.value.code == "missing_api_key"
