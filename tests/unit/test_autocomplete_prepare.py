"""`completions.prepare`'s refusals that come before any model work: a prompt too long to
tokenise, a request too large to finish in time. The engine here is a fake (no model): these
checks only read its limits and step time."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from services.autocomplete.completions import prepare
from services.autocomplete.http_schema import CompletionRequest
from services.autocomplete.settings import Settings
from services.core.api_errors import ApiError


@dataclass
class FakeEngine:
    """What `prepare` reads of an Engine; `encode` counts its calls (one token per word)."""

    vocab_size: int = 1000
    context_length: int = 2048
    kv_capacity: int | None = 8192
    max_batch_size: int = 32
    step_seconds: float | None = None
    encoded: list[int] = field(default_factory=list)

    def encode(self, text: str) -> list[int]:
        self.encoded.append(len(text))
        return [1] * len(text.split())


def _prepare(engine: FakeEngine, settings: Settings | None = None, **fields: object) -> object:
    body = CompletionRequest(**fields)
    return prepare(body, engine, settings or Settings(), "tiny", frozenset({"tiny"}))


def test_a_prompt_over_the_character_limit_is_refused_before_it_is_tokenised() -> None:
    engine = FakeEngine()
    settings = Settings(max_prompt_chars=1000)
    with pytest.raises(ApiError) as raised:
        _prepare(engine, settings, prompt=["short", "x" * 1001], truncate_prompt_tokens=5)
    error = raised.value
    assert (error.status, error.code, error.param) == (413, "prompt_too_long", "prompt")
    assert "1,001 characters" in error.message and "MAX_PROMPT_CHARS" in error.message
    assert engine.encoded == []  # not even the short one
    _prepare(engine, settings, prompt="y " * 500)  # 1,000 characters: taken
    assert engine.encoded == [1000]


def test_a_request_that_cannot_finish_in_time_is_refused_with_why() -> None:
    # The issue's request: 16 prompts x n=8 x 512 tokens is 128 sequences, 4 batches' worth
    # (a cache that grows as needed, as torch's: only the batch size counts).
    engine = FakeEngine(step_seconds=0.05, kv_capacity=None)
    with pytest.raises(ApiError) as raised:
        _prepare(engine, prompt=["Hi"] * 16, n=8, max_tokens=512)
    error = raised.value
    assert (error.status, error.code, error.param) == (400, "cannot_finish_in_time", "max_tokens")
    assert "128 sequences" in error.message and "4 rounds" in error.message
    _prepare(engine, prompt=["Hi"] * 16, n=2, max_tokens=512)  # one round: always taken
    _prepare(engine, prompt=["Hi"] * 16, n=8, max_tokens=64)  # 4 x 64 x 50 ms = 13 s: in time


def test_the_kv_cache_counts_every_prompt_and_choice() -> None:
    # 16 x 8 x (1 + 500) cells is 8 cache-fulls: 8 rounds, though each prompt fits alone.
    engine = FakeEngine(step_seconds=0.02, max_batch_size=256)
    with pytest.raises(ApiError) as raised:
        _prepare(engine, prompt=["Hi"] * 16, n=8, max_tokens=500)
    assert "8 rounds" in raised.value.message
