"""The autocompleter as it ships offline: real SmolLM2-135M weights, imported from their
package, served when GPT-2 is asked for but not in the store (and said so); and the
production switch that turns that fallback into a start-up error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.autocomplete_fixtures import SERVICE
from tests.servers import serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from services.core.model_store import import_model

    import_model("smollm2-135m")
    log = tmp_path_factory.mktemp("logs") / "autocomplete_smollm2.log"
    with serve(SERVICE, env={"MODELPORT_AUTOCOMPLETE_MODEL": "gpt2"}, log_path=log) as url:
        yield url, log


def test_the_fallback_is_visible_in_the_log_and_the_api(smollm2_server: tuple[str, Path]) -> None:
    url, log = smollm2_server
    text = log.read_text()
    assert "MODEL 'gpt2' IS NOT IN THE MODEL STORE" in text
    assert "modelport models import gpt2" in text
    assert "autocompleter serving model smollm2-135m:" in text
    assert "(llama.cpp: 135M-parameter llama, Q8_0 weights" in text  # the GGUF, in llama.cpp
    assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["smollm2-135m"]


def test_greedy_completion_knows_a_capital(smollm2_server: tuple[str, Path]) -> None:
    url, _ = smollm2_server
    body = httpx.post(
        f"{url}/v1/completions",
        timeout=120,
        json={"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0},
    ).json()
    assert body["model"] == "smollm2-135m"
    assert body["choices"][0]["text"].strip().startswith("Paris")


def test_suggestions_continue_the_sentence(smollm2_server: tuple[str, Path]) -> None:
    url, _ = smollm2_server
    body = httpx.post(
        f"{url}/v1/suggest", timeout=60, json={"text": "Thank you for your email. I will get back to", "n": 3}
    ).json()
    texts = [s["text"] for s in body["suggestions"]]
    assert texts and any(t.startswith(" you") for t in texts), texts


def test_a_request_the_kv_cache_cannot_hold_is_a_400_and_the_server_goes_on(
    smollm2_server: tuple[str, Path],
) -> None:
    url, _ = smollm2_server
    # 8 choices x (prompt + 512 tokens) is more than the 8192 cells of llama.cpp's KV cache.
    response = httpx.post(
        f"{url}/v1/completions", timeout=60, json={"prompt": "word " * 600, "max_tokens": 512, "n": 8}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and "KV cache" in error["message"]
    assert "lower n or max_tokens" in error["message"]
    after = httpx.post(f"{url}/v1/completions", timeout=60, json={"prompt": "Hi", "max_tokens": 2})
    assert after.status_code == 200


def test_require_model_makes_a_missing_model_a_start_up_error(tmp_path: Path) -> None:
    env = {"MODELPORT_AUTOCOMPLETE_MODEL": "gpt2", "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1"}
    with (
        pytest.raises(RuntimeError) as failed,
        serve(SERVICE, env=env, log_path=tmp_path / "serve.log", startup_timeout=120),
    ):
        pass
    assert "modelport models import gpt2" in str(failed.value)
