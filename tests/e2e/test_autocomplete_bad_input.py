"""Every bad request gets a 4xx in OpenAI's error shape that names the problem, and the
server answers the next good request as if nothing happened."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.slow

LONG_PROMPT = " ".join(["word"] * 1100)  # 1,100 tokens: over the 1,024-token prompt limit

BAD_COMPLETIONS = [
    # (body, status, param the error names, words its message must contain)
    ({"prompt": 42}, 400, "prompt", "valid string"),
    ({"prompt": "Hi", "max_tokens": "ten"}, 400, "max_tokens", "valid integer"),
    ({"prompt": "Hi", "max_tokens": 3.5}, 400, "max_tokens", "valid integer"),
    ({"prompt": "Hi", "max_tokens": -1}, 400, "max_tokens", "greater than or equal to 0"),
    ({"prompt": "Hi", "max_tokens": 10**9}, 400, "max_tokens", "limit of 512"),
    ({"prompt": "Hi", "temperature": "hot"}, 400, "temperature", "valid number"),
    ({"prompt": "Hi", "temperature": 3}, 400, "temperature", "less than or equal to 2"),
    ({"prompt": "Hi", "top_p": 0}, 400, "top_p", "greater than 0"),
    ({"prompt": "Hi", "n": 0}, 400, "n", "greater than or equal to 1"),
    ({"prompt": "Hi", "n": 1000}, 400, "n", "n=8"),
    ({"prompt": "Hi", "logprobs": 6}, 400, "logprobs", "less than or equal to 5"),
    ({"prompt": "Hi", "stream": "yes"}, 400, "stream", "valid boolean"),
    ({"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "up to 4"),
    ({"prompt": "Hi", "stop": [""]}, 400, "stop", "non-empty"),
    ({"prompt": "Hi", "max_token": 5}, 400, "max_token", "Extra inputs are not permitted"),
    ({"prompt": ""}, 400, "prompt", "empty"),
    ({"prompt": []}, 400, "prompt", "empty"),
    ({"prompt": [99999999]}, 400, "prompt", "token ids"),
    ({}, 400, "prompt", "Field required"),
    ({"prompt": LONG_PROMPT}, 400, "prompt", "truncate_prompt_tokens"),
    ({"prompt": "Hi", "model": "gpt-4"}, 404, "model", "tiny-gpt2"),
    ({"prompt": "Hi", "suffix": " the end."}, 400, "suffix", "send the text before"),
    ({"prompt": "Hi", "best_of": 3}, 400, "best_of", "Ask for n choices"),
    ({"prompt": "Hi", "n": 2, "best_of": 3}, 400, "best_of", "not supported"),
    ({"prompt": "Hi", "best_of": 0}, 400, "best_of", "greater than or equal to 1"),
    ({"prompt": "Hi", "logit_bias": {"comma": 1}}, 400, "logit_bias", "token ids in 0..50256"),
    ({"prompt": "Hi", "logit_bias": {"50257": 1}}, 400, "logit_bias", "token ids in 0..50256"),
    ({"prompt": "Hi", "logit_bias": {"11": 101}}, 400, "logit_bias", "less than or equal to 100"),
    ({"prompt": "Hi", "logit_bias": {"11": "ban"}}, 400, "logit_bias", "valid number"),
    ({"prompt": "Hi", "logit_bias": [11]}, 400, "logit_bias", "valid dictionary"),
    ({"prompt": "Hi", "seed": 2**64}, 400, "seed", "0..18446744073709551615"),
    ({"prompt": "Hi", "seed": 10**30}, 400, "seed", "0..18446744073709551615"),
    ({"prompt": "Hi", "seed": -(2**63) - 1}, 400, "seed", "0..18446744073709551615"),
    ({"prompt": "\ud800abc"}, 400, "prompt", "lone UTF-16 surrogate"),
    ({"prompt": ["Hi", "\udfffabc"]}, 400, "prompt", "lone UTF-16 surrogate"),
    ({"prompt": "Hi", "stop": ["\ud800"]}, 400, "stop", "lone UTF-16 surrogate"),
]


def _good_request_still_works(url: str) -> None:
    response = httpx.post(
        f"{url}/v1/completions", timeout=60, json={"prompt": "Hello", "max_tokens": 3, "temperature": 0}
    )
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("body", "status", "param", "says"), BAD_COMPLETIONS, ids=[f"{b!r:.40}" for b, *_ in BAD_COMPLETIONS]
)
def test_bad_completion_request(tiny_server: str, body: dict, status: int, param: str, says: str) -> None:
    # json.dumps escapes a lone surrogate as "\\ud800", as a browser's JSON.stringify does (httpx's
    # own encoder would fail on it).
    response = httpx.post(
        f"{tiny_server}/v1/completions",
        content=json.dumps(body),
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert error["type"] == "invalid_request_error"
    _good_request_still_works(tiny_server)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", "\u00e9".encode("latin-1")])
def test_invalid_json_body(tiny_server: str, raw: bytes) -> None:
    response = httpx.post(
        f"{tiny_server}/v1/completions", content=raw, timeout=30, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500 and "error" in response.json()
    _good_request_still_works(tiny_server)


def test_long_prompt_is_left_truncated_when_asked(tiny_server: str) -> None:
    response = httpx.post(
        f"{tiny_server}/v1/completions",
        timeout=60,
        json={"prompt": LONG_PROMPT, "max_tokens": 2, "truncate_prompt_tokens": 100, "echo": True},
    )
    body = response.json()
    assert response.status_code == 200 and body["usage"]["prompt_tokens"] == 100
    assert body["choices"][0]["text"].startswith(" word" * 100)  # the prompt's end was kept


@pytest.mark.parametrize(
    ("body", "param"),
    [({"text": ""}, "text"), ({"text": "Hi", "n": 6}, "n"), ({"text": 5}, "text"), ({}, "text")],
)
def test_bad_suggest_request(tiny_server: str, body: dict, param: str) -> None:
    response = httpx.post(f"{tiny_server}/v1/suggest", json=body, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    ok = httpx.post(f"{tiny_server}/v1/suggest", json={"text": "Hello"}, timeout=30)
    assert ok.status_code == 200 and ok.json()["suggestions"]
