"""The autocompleter over real HTTP (a real `bentoml serve`), on a tiny GPT-2 with GPT-2's tokenizer."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.autocomplete_fixtures import engine_kept_busy, gpt2_tokenizer

pytestmark = pytest.mark.slow


def complete(url: str, **body: object) -> dict:
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_models_names_the_served_model(tiny_server: str) -> None:
    models = httpx.get(f"{tiny_server}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny-gpt2"]
    assert models["data"][0]["root"].startswith("tiny-gpt2:")
    assert httpx.get(f"{tiny_server}/readyz").status_code == 200


def test_completion_shape_usage_and_greedy_determinism(tiny_server: str) -> None:
    body = complete(tiny_server, prompt="Hello world", max_tokens=7, temperature=0)
    again = complete(tiny_server, prompt="Hello world", max_tokens=7, temperature=0)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "tiny-gpt2"
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length" and choice["text"]
    usage = {k: v for k, v in body["usage"].items() if k != "prompt_tokens_details"}
    assert usage == {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}
    assert again["choices"][0]["text"] == choice["text"]


def test_a_prompt_that_continues_an_earlier_one_reuses_its_cells(
    tiny_server: str, request: pytest.FixtureRequest
) -> None:
    text = "The old harbour town was quiet in the winter, when the boats stayed in and the"
    first = complete(tiny_server, prompt=text, max_tokens=4, temperature=0)
    longer = complete(tiny_server, prompt=text + " fishermen mended their nets", max_tokens=4, temperature=0)
    cached = longer["usage"]["prompt_tokens_details"]["cached_tokens"]
    if request.node.callspec.params["tiny_server"] == "llama.cpp":
        # Every token of the first prompt was in the cache; only the new words ran.
        assert cached >= first["usage"]["prompt_tokens"] - 1, longer["usage"]
        metrics = httpx.get(f"{tiny_server}/metrics").text
        hits = re.search(r"^modelport:prefix_cache_hits_total (\S+)$", metrics, re.M)
        assert hits and float(hits.group(1)) >= cached, metrics[-2000:]
    else:  # torch has no prefix cache: it says so honestly
        assert cached == 0


def test_logprobs_echo_n_and_several_prompts(tiny_server: str) -> None:
    body = complete(
        tiny_server,
        prompt=["Hello world", "Good morning"],
        n=2,
        max_tokens=4,
        temperature=1.0,
        seed=7,
        echo=True,
        logprobs=3,
    )
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert all(c["text"].startswith("Hello world") for c in choices[:2])
    assert all(c["text"].startswith("Good morning") for c in choices[2:])
    logprobs = choices[0]["logprobs"]
    assert logprobs["tokens"][:2] == ["Hello", " world"] and len(logprobs["tokens"]) == 6
    assert logprobs["token_logprobs"][0] is None and all(lp < 0 for lp in logprobs["token_logprobs"][1:])
    assert all(len(top) == 3 for top in logprobs["top_logprobs"][1:])
    assert "".join(logprobs["tokens"]) == choices[0]["text"]
    assert [
        choices[0]["text"][o:].startswith(t) for t, o in zip(logprobs["tokens"], logprobs["text_offset"])
    ] == [True] * 6
    assert body["usage"]["prompt_tokens"] == 4 and body["usage"]["completion_tokens"] == 16


def test_seed_reproduces_a_sampled_completion(tiny_server: str) -> None:
    texts = [
        complete(tiny_server, prompt="Once upon a time", max_tokens=12, seed=s)["choices"][0]["text"]
        for s in (42, 42, 43)
    ]
    assert texts[0] == texts[1] != texts[2]


def test_stop_strings_cut_exactly_and_are_not_included(tiny_server: str) -> None:
    full = complete(tiny_server, prompt="The quick brown fox", max_tokens=12, temperature=0)
    text = full["choices"][0]["text"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]  # three characters from the middle
    cut = complete(
        tiny_server, prompt="The quick brown fox", max_tokens=12, temperature=0, stop=["never appears", stop]
    )["choices"][0]
    assert cut["text"] == text[: text.index(stop)] and cut["finish_reason"] == "stop"


def test_stream_is_server_sent_events_ending_with_done(tiny_server: str) -> None:
    expected = complete(tiny_server, prompt="Hello world", max_tokens=10, temperature=0)
    body = {
        "prompt": "Hello world",
        "max_tokens": 10,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{tiny_server}/v1/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == expected["choices"][0]["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 10 and len(chunks) >= 4


def test_suggest_returns_ranked_short_continuations(tiny_server: str) -> None:
    response = httpx.post(f"{tiny_server}/v1/suggest", json={"text": "The weather today", "n": 5}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["model"] == "tiny-gpt2"
    suggestions = body["suggestions"]
    assert 1 <= len(suggestions) <= 5
    scores = [s["score"] for s in suggestions]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    texts = [s["text"] for s in suggestions]
    assert len(set(texts)) == len(texts) and all(t.strip() and t == t.rstrip() for t in texts)


def test_a_newer_suggestion_of_the_same_session_supersedes_the_running_one(tiny_server: str) -> None:
    async def keystrokes() -> list[httpx.Response]:
        # An editor whose keystrokes outrun the answers: four requests in flight at once, sent
        # in order (each reaches the server before the next is sent; all wait in the engine).
        async with httpx.AsyncClient(base_url=tiny_server, timeout=60) as http:
            sent = []
            async with engine_kept_busy(tiny_server):
                for i in range(4):
                    sent.append(
                        asyncio.create_task(
                            http.post(
                                "/v1/suggest",
                                json={"text": "The weather today" + " is" * i, "session": "editor-1"},
                            )
                        )
                    )
                    await asyncio.sleep(0.1)
            return await asyncio.gather(*sent)

    responses = asyncio.run(keystrokes())
    statuses = [r.status_code for r in responses]
    assert statuses == [409, 409, 409, 200], statuses  # the newest answers; older ones cut off
    assert responses[-1].json()["suggestions"], responses[-1].text
    for superseded in responses[:-1]:
        assert superseded.json()["error"]["code"] == "superseded", superseded.text
    # Another session, or none, is never cancelled by these.
    other = httpx.post(f"{tiny_server}/v1/suggest", json={"text": "Dear Sir", "session": "editor-2"})
    assert other.status_code == 200


def test_logit_bias_bans_and_forces_tokens(tiny_server: str, tmp_path: Path) -> None:
    tokenizer = gpt2_tokenizer(tmp_path)
    plain = complete(tiny_server, prompt="Hello world", max_tokens=8, temperature=0, logprobs=0)
    tokens = plain["choices"][0]["logprobs"]["tokens"]
    ids = [tokenizer.encode(t) for t in tokens]
    banned = {i[0] for i in ids if len(i) == 1}
    assert ids[0][0] in banned  # at least what greedy decoding picks first
    biased = complete(
        tiny_server,
        prompt="Hello world",
        max_tokens=8,
        temperature=0,
        logprobs=0,
        logit_bias={str(i): -100 for i in banned},
    )
    banned_text = {tokenizer.decode([i]) for i in banned}
    new_tokens = biased["choices"][0]["logprobs"]["tokens"]
    assert len(new_tokens) == 8 and not banned_text & set(new_tokens), (banned_text, new_tokens)

    comma = str(tokenizer.encode(",")[0])
    for temperature in (0, 1):
        forced = complete(
            tiny_server,
            prompt="Hello world",
            max_tokens=5,
            temperature=temperature,
            logit_bias={comma: 100, str(ids[0][0]): -100},
        )
        assert forced["choices"][0]["text"] == ",,,,,"


def _tokens_generated(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    match = re.search(r"^modelport_autocomplete_tokens_generated_total(?:\{[^}]*\})? (\S+)$", metrics, re.M)
    assert match, "the tokens-generated counter is missing from /metrics"
    return float(match.group(1))


def _metric(metrics: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", metrics, re.M)
    assert match, f"{name} is missing from /metrics"
    return float(match.group(1))


def test_metrics_in_vllms_shape_show_the_engines_load(
    tiny_server: str, request: pytest.FixtureRequest
) -> None:
    complete(tiny_server, prompt="Hello", max_tokens=5, temperature=0)
    time.sleep(0.3)  # the engine reports after the last row leaves
    metrics = httpx.get(f"{tiny_server}/metrics").text
    assert _metric(metrics, "modelport:num_requests_running") == 0
    assert _metric(metrics, "modelport:num_requests_waiting") == 0
    assert _metric(metrics, "modelport:kv_cache_usage_perc") == 0
    count = _metric(metrics, "modelport:request_queue_time_seconds_count")
    assert count >= 1 and 0 <= _metric(metrics, "modelport:request_queue_time_seconds_sum") < 5 * count

    async def busy() -> list[float]:  # while 6 long completions run: their rows and KV cells
        async with httpx.AsyncClient(timeout=300) as client:
            body = {"prompt": "Once upon a time", "max_tokens": 500, "temperature": 0}
            running = [
                asyncio.create_task(client.post(f"{tiny_server}/v1/completions", json=body)) for _ in range(6)
            ]
            for _ in range(200):
                await asyncio.sleep(0.05)
                seen = (await client.get(f"{tiny_server}/metrics")).text
                load = [
                    _metric(seen, f"modelport:{name}")
                    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc")
                ]
                if load[0]:
                    break
            await asyncio.gather(*running)
        return load

    running, waiting, kv_usage = asyncio.run(busy())
    assert 1 <= running <= 6 and 0 <= waiting <= 6 - running, (running, waiting)
    if request.node.callspec.params["tiny_server"] == "llama.cpp":  # 504 cells a row, of 8192
        assert 0 < kv_usage <= 1
    else:  # torch's cache grows as needed: no pool to fill
        assert kv_usage == 0


def test_metrics_count_tokens_and_time_to_first_token(tiny_server: str) -> None:
    before = _tokens_generated(tiny_server)
    complete(tiny_server, prompt="Hello", max_tokens=5, temperature=0)
    assert _tokens_generated(tiny_server) - before == 5
    metrics = httpx.get(f"{tiny_server}/metrics").text
    assert "modelport_autocomplete_time_to_first_token_seconds_bucket" in metrics
    assert "modelport_autocomplete_tokens_per_second_bucket" in metrics


def _settled_tokens(url: str) -> float:
    """The tokens-generated counter once it stops moving."""
    previous = -1.0
    while True:
        time.sleep(0.6)
        now = _tokens_generated(url)
        if now == previous:
            return now
        previous = now


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_stops_its_generation(tiny_server: str, stream: bool) -> None:
    before = _settled_tokens(tiny_server)
    body = {"prompt": "Hello", "max_tokens": 500, "temperature": 1.0, "stream": stream}
    if stream:
        with httpx.stream("POST", f"{tiny_server}/v1/completions", json=body, timeout=60) as response:
            next(response.iter_lines())  # the first event arrived: generation is under way
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{tiny_server}/v1/completions", json=body, timeout=0.3)
    generated = _settled_tokens(tiny_server) - before
    assert generated < 500, f"{generated} tokens generated for a client that left"


@pytest.mark.parametrize("chunked", [False, True])
def test_a_50_mb_json_body_is_refused_before_parsing_and_the_server_keeps_serving(
    tiny_server: str, chunked: bool
) -> None:
    prompt = "x" * (50 * 1024 * 1024)
    body = json.dumps({"prompt": prompt, "max_tokens": 1}).encode()

    def in_pieces():  # no Content-Length: Transfer-Encoding: chunked
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    started = time.perf_counter()
    response = httpx.post(
        f"{tiny_server}/v1/completions",
        content=in_pieces() if chunked else body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "limit" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert time.perf_counter() - started < 10
    assert complete(tiny_server, prompt="Hello", max_tokens=2, temperature=0)["choices"][0]["text"]
