"""The Python client's autocompleter calls (sync, async, streaming) against a real server."""

from __future__ import annotations

import asyncio

import pytest

from modelport_client import AsyncClient, BadRequest, Client, Completion, Suggestion, Superseded
from tests.autocomplete_fixtures import engine_kept_busy

pytestmark = pytest.mark.slow


def test_complete_stream_and_suggest(tiny_server: str) -> None:
    with Client(tiny_server) as client:
        completion = client.complete("Hello world", max_tokens=8, temperature=0, logprobs=1)
        pieces = list(client.stream_complete("Hello world", max_tokens=8, temperature=0))
        suggestions = client.suggest("The weather today", n=4)
        saved = client.suggest_feedback(typed=30, accepted=2, accepted_chars=19)
        with pytest.raises(BadRequest, match="accepted_chars"):
            client.suggest_feedback(typed=1, accepted=3, accepted_chars=2)
    assert saved == 17  # 19 characters for 2 keystrokes
    assert isinstance(completion, Completion) and completion.model == "tiny-gpt2"
    assert completion.usage.completion_tokens == 8 and completion.choices[0].finish_reason == "length"
    assert completion.choices[0].logprobs is not None
    assert "".join(completion.choices[0].logprobs.tokens) == completion.text
    assert len(pieces) > 1 and "".join(pieces) == completion.text
    assert 1 <= len(suggestions) <= 4 and all(isinstance(s, Suggestion) for s in suggestions)


def test_errors_are_the_clients_exceptions(tiny_server: str) -> None:
    with Client(tiny_server) as client:
        with pytest.raises(BadRequest, match="max_tokens"):
            client.complete("Hi", max_tokens=-1)
        with pytest.raises(BadRequest, match="max_tokens"):
            list(client.stream_complete("Hi", max_tokens=-1))
        assert client.complete("Hi", max_tokens=1).text


def test_async_calls(tiny_server: str) -> None:
    async def calls() -> tuple[Completion, list[str], list[Suggestion]]:
        async with AsyncClient(tiny_server) as client:
            completion = await client.complete("Hello world", max_tokens=6, temperature=0)
            pieces = [p async for p in client.stream_complete("Hello world", max_tokens=6, temperature=0)]
            assert await client.suggest_feedback(typed=5, accepted=1, accepted_chars=4) == 3
            return completion, pieces, await client.suggest("Hello", n=2)

    completion, pieces, suggestions = asyncio.run(calls())
    assert "".join(pieces) == completion.text and completion.usage.completion_tokens == 6
    assert 1 <= len(suggestions) <= 2


def test_a_superseded_suggestion_raises_superseded(tiny_server: str) -> None:
    async def keystrokes() -> list[object]:
        # Sent in order, each reaching the server before the next; all wait in the engine.
        async with AsyncClient(tiny_server) as client:
            sent = []
            async with engine_kept_busy(tiny_server):
                for i in range(4):
                    sent.append(
                        asyncio.create_task(client.suggest("The weather" + " is" * i, session="ed-1"))
                    )
                    await asyncio.sleep(0.1)
            return await asyncio.gather(*sent, return_exceptions=True)  # the engine is free now

    *older, newest = asyncio.run(keystrokes())
    assert all(isinstance(o, Superseded) for o in older), older
    assert isinstance(newest, list) and newest and isinstance(newest[0], Suggestion), newest


def test_the_prefix_caches_count_reaches_the_client(tiny_server: str, request: pytest.FixtureRequest) -> None:
    with Client(tiny_server) as client:
        first = client.complete("Hello world, this is a longer prompt", max_tokens=2, temperature=0)
        again = client.complete("Hello world, this is a longer prompt", max_tokens=2, temperature=0)
    assert first.usage.prompt_tokens == again.usage.prompt_tokens
    if request.node.callspec.params["tiny_server"] == "llama.cpp":
        # The whole prompt was cached but its last token, which runs again for the next token's logits.
        assert again.usage.cached_tokens == again.usage.prompt_tokens - 1 > 0, again.usage
    else:  # torch has no prefix cache, and says so
        assert again.usage.cached_tokens == 0, again.usage
