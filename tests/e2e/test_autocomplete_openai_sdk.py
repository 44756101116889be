"""The official `openai` SDK, unchanged, against the autocompleter (streaming included)."""

from __future__ import annotations

import asyncio

import openai
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def client(tiny_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tiny_server}/v1", api_key="unused", max_retries=0)


def test_models_and_a_completion(client: openai.OpenAI) -> None:
    [model] = client.models.list().data
    completion = client.completions.create(
        model=model.id, prompt="Hello world", max_tokens=6, temperature=0, logprobs=2
    )
    assert completion.model == model.id == "tiny-gpt2"
    choice = completion.choices[0]
    assert choice.finish_reason == "length" and choice.text
    assert choice.logprobs is not None and "".join(choice.logprobs.tokens or []) == choice.text
    assert completion.usage is not None and completion.usage.completion_tokens == 6


def test_stream_yields_the_same_text(client: openai.OpenAI) -> None:
    kwargs = dict(model="tiny-gpt2", prompt="The quick brown fox", max_tokens=12, temperature=0)
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason == "length" and len(chunks) > 2


def test_async_client_and_seed(tiny_server: str) -> None:
    async def twice() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=f"{tiny_server}/v1", api_key="unused", max_retries=0
        ) as client:
            return [
                (
                    await client.completions.create(
                        model="tiny-gpt2", prompt="Once upon a time", max_tokens=10, seed=5
                    )
                )
                .choices[0]
                .text
                for _ in range(2)
            ]

    texts = asyncio.run(twice())
    assert texts[0] == texts[1] and texts[0]


def test_errors_raise_the_sdks_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="tiny-gpt2", prompt="Hi", max_tokens=-5)
    assert "max_tokens" in str(bad.value)
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt-5", prompt="Hi")
    assert "tiny-gpt2" in str(missing.value)
    assert client.completions.create(model="tiny-gpt2", prompt="Hi", max_tokens=2).choices[0].text
