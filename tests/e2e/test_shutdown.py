"""SIGTERM with requests in flight, as Kubernetes sends it (to `bentoml serve`, the container's
process), on both services served for real: every request in flight is answered in full, and
the server then exits. A grace period too short for the work ends streams with a final error
event, never a cut socket.

Requests are made slow on purpose: one image or one sequence at a time (batch size 1), several
of them per request, so they are still running when SIGTERM comes.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.autocomplete_fixtures import SERVICE as AUTOCOMPLETE, import_tiny_gpt2
from tests.scenes import plate_on_street
from tests.servers import Server, serve_process

pytestmark = pytest.mark.slow


def in_flight_then_sigterm(
    server: Server,
    calls: list[Callable[[], object]],
    settle_s: float = 0.5,
    answering: threading.Semaphore | None = None,
) -> tuple[list[object], list[float], float]:
    """Start `calls` in threads, SIGTERM the server `settle_s` later (after each call has
    released `answering`, when given: its answer has begun); their results, the times they
    finished, and when SIGTERM was sent."""
    results: list[object] = [None] * len(calls)
    finished = [0.0] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported by the assertions, with the request's number
            results[i] = exc
        finished[i] = time.monotonic()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for _ in calls if answering else ():
        assert answering.acquire(timeout=120), "a request got no answer's start within 120 s"
    time.sleep(settle_s)
    sigterm_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=120)
    return results, finished, sigterm_at


def assert_exits(server: Server, within_s: float) -> None:
    server.process.wait(timeout=within_s)
    with pytest.raises(httpx.TransportError):  # and nothing listens any more
        httpx.get(f"{server.url}/livez", timeout=2)


def test_plate_reader_finishes_requests_in_flight_then_exits(
    plate_models: dict[str, Path], tmp_path: Path
) -> None:
    scene = plate_on_street()
    env = {"MODELPORT_PLATE_BATCH_MAX_SIZE": "1", "MODELPORT_SHUTDOWN_GRACE_S": "60"}
    files = [("upload", (f"{i}.jpg", scene.jpeg, "image/jpeg")) for i in range(4)]

    def read() -> httpx.Response:
        return httpx.post(f"{server.url}/v1/plate-reader", files=files, timeout=120)

    with serve_process(
        "services.plate_reader.service:PlateReader", env=env, log_path=tmp_path / "server.log"
    ) as server:
        results, finished, sigterm_at = in_flight_then_sigterm(server, [read] * 6)
        assert_exits(server, within_s=30)
    for response in results:
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 200, response.text
        assert [r["results"][0]["plate"] for r in response.json()] == [scene.plate] * 4
    assert sum(t > sigterm_at for t in finished) >= 3  # most were still in flight at SIGTERM


def complete(
    url: str, stream: bool, max_tokens: int, answering: threading.Semaphore | None = None
) -> tuple[int, list[str]]:
    body = {"prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as response:
        if answering:  # the status and headers are here: the app is running this request
            answering.release()
        text = response.read().decode()
    if not stream:
        return response.status_code, [text]
    return response.status_code, [line[6:] for line in text.splitlines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def tiny_model() -> str:
    return import_tiny_gpt2()


def autocomplete_env(tiny_model: str, grace_s: str) -> dict[str, str]:
    return {
        "MODELPORT_AUTOCOMPLETE_MODEL": tiny_model,
        "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1",
        "MODELPORT_AUTOCOMPLETE_BACKEND": "torch",
        "MODELPORT_AUTOCOMPLETE_MAX_BATCH_SIZE": "1",
        "MODELPORT_SHUTDOWN_GRACE_S": grace_s,
    }


def test_autocompleter_finishes_streams_and_completions_in_flight(tiny_model: str, tmp_path: Path) -> None:
    with serve_process(
        AUTOCOMPLETE, env=autocomplete_env(tiny_model, "60"), log_path=tmp_path / "server.log"
    ) as server:
        calls = [lambda s=stream: complete(server.url, s, 200) for stream in (True, False) * 4]
        results, finished, sigterm_at = in_flight_then_sigterm(server, calls)
        assert_exits(server, within_s=60)
    for (status, events), stream in zip(results, (True, False) * 4):
        assert status == 200, events
        if stream:
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert all("error" not in c for c in chunks)
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        else:
            assert json.loads(events[0])["choices"][0]["finish_reason"] == "length"
    assert sum(t > sigterm_at for t in finished) >= 4


def test_a_grace_period_too_short_ends_streams_with_a_final_error_event(
    tiny_model: str, tmp_path: Path
) -> None:
    with serve_process(
        AUTOCOMPLETE, env=autocomplete_env(tiny_model, "1"), log_path=tmp_path / "server.log"
    ) as server:
        # One sequence at a time: the last of 8 long streams cannot finish within 1 s. SIGTERM
        # only once every stream has begun: on a loaded machine a fixed 0.5 s could end before
        # some had reached the server, which stops accepting at SIGTERM.
        answering = threading.Semaphore(0)
        calls = [lambda: complete(server.url, True, 500, answering)] * 8
        results, _, _ = in_flight_then_sigterm(server, calls, answering=answering)
        assert_exits(server, within_s=30)
    cut = 0
    for status, events in results:
        assert status == 200 and events[-1] == "[DONE]", events[-3:]  # every stream ends properly
        last = json.loads(events[-2])
        if "error" in last:
            assert last["error"]["code"] == "shutting_down"
            cut += 1
        else:
            assert last["choices"][0]["finish_reason"] == "length"
    assert cut >= 1


def test_a_sigterm_before_the_first_request_reaches_the_app_still_bounds_it(
    tiny_model: str, tmp_path: Path
) -> None:
    # A fresh server (only /readyz asked, which BentoML answers outside the app) gets its very
    # first request, a stream far longer than the 1 s grace, and SIGTERM right behind it (to the
    # worker, where the handler runs: from the arbiter the signal comes later than the request
    # does; then to `bentoml serve` too). The worker's handler runs before the request has reached
    # the app. The guard's handler was chained at the first request: it missed this SIGTERM, and
    # the stream ran to its end, unbounded. Chained at startup, it starts the grace, and the
    # stream is cut when the grace ends.
    import http.client
    from urllib.parse import urlsplit

    import psutil

    env = {**autocomplete_env(tiny_model, "1"), "MODELPORT_AUTOCOMPLETE_MAX_TOKENS_LIMIT": "1000"}
    with serve_process(AUTOCOMPLETE, env=env, log_path=tmp_path / "server.log") as server:
        [worker] = [
            p
            for p in psutil.Process(server.process.pid).children(recursive=True)
            if "_bentoml_impl.worker" in " ".join(p.cmdline())
        ]
        address = urlsplit(server.url)
        body = {"prompt": "Once upon a time", "max_tokens": 1000, "temperature": 0, "stream": True}
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
        connection.request(
            "POST", "/v1/completions", json.dumps(body), {"content-type": "application/json"}
        )  # sent whole
        worker.send_signal(signal.SIGTERM)
        sigterm_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)  # and as Kubernetes does (no worker restarted)
        response = connection.getresponse()
        events = [line[6:] for line in response.read().decode().splitlines() if line.startswith("data: ")]
        answered_s = time.monotonic() - sigterm_at
        assert_exits(server, within_s=30)
    assert response.status == 200 and events[-1] == "[DONE]", events[-3:]
    assert json.loads(events[-2]).get("error", {}).get("code") == "shutting_down", (events[-2], answered_s)
