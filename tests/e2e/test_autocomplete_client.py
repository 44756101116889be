"""The Python client's autocompleter calls (sync, async, streaming) against a real server."""

from __future__ import annotations

import asyncio

import pytest
from modelport_client import AsyncClient, BadRequest, Client, Completion, Suggestion, Superseded

pytestmark = pytest.mark.slow


def test_complete_stream_and_suggest(tiny_server: str) -> None:
    with Client(tiny_server) as client:
        completion = client.complete("Hello world", max_tokens=8, temperature=0, logprobs=1)
        pieces = list(client.stream_complete("Hello world", max_tokens=8, temperature=0))
        suggestions = client.suggest("The weather today", n=4)
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
            pieces = [p async for p in client.stream_complete("Hello world", max_tokens=6,
                                                              temperature=0)]
            return completion, pieces, await client.suggest("Hello", n=2)

    completion, pieces, suggestions = asyncio.run(calls())
    assert "".join(pieces) == completion.text and completion.usage.completion_tokens == 6
    assert 1 <= len(suggestions) <= 2


def test_a_superseded_suggestion_raises_superseded(tiny_server: str) -> None:
    async def keystrokes() -> list[object]:
        async with AsyncClient(tiny_server) as client:
            return await asyncio.gather(*(client.suggest("The weather" + " is" * i, session="ed-1")
                                          for i in range(5)), return_exceptions=True)

    outcomes = asyncio.run(keystrokes())
    assert any(isinstance(o, Superseded) for o in outcomes), outcomes
    assert any(isinstance(o, list) for o in outcomes), outcomes  # the latest answered
    with Client(tiny_server) as client:  # the prefix cache's count reaches the client
        first = client.complete("Hello world, this is a longer prompt", max_tokens=2, temperature=0)
        again = client.complete("Hello world, this is a longer prompt", max_tokens=2, temperature=0)
    assert first.usage.prompt_tokens == again.usage.prompt_tokens
    assert again.usage.cached_tokens in (0, again.usage.prompt_tokens - 1)  # torch: 0
