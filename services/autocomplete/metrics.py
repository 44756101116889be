"""Generation metrics on /metrics, next to BentoML's own request metrics."""

from __future__ import annotations

import bentoml

from services.autocomplete.generation import Stats

TOKENS_GENERATED = bentoml.metrics.Counter(
    name="modelport_autocomplete_tokens_generated", documentation="Completion tokens generated")
PROMPT_TOKENS = bentoml.metrics.Counter(
    name="modelport_autocomplete_prompt_tokens", documentation="Prompt tokens processed")
TIME_TO_FIRST_TOKEN = bentoml.metrics.Histogram(
    name="modelport_autocomplete_time_to_first_token_seconds",
    documentation="From a request reaching the engine to its first generated token",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 5.0))
TOKENS_PER_SECOND = bentoml.metrics.Histogram(
    name="modelport_autocomplete_tokens_per_second",
    documentation="Decode speed of each request (tokens after the first / time after the first)",
    buckets=(1, 2.5, 5, 10, 20, 40, 80, 160, 320))


def observe(stats: Stats) -> None:
    PROMPT_TOKENS.inc(stats.prompt_tokens)
    TOKENS_GENERATED.inc(stats.completion_tokens)
    if stats.first_token_at is None:
        return
    TIME_TO_FIRST_TOKEN.observe(stats.first_token_at - stats.submitted_at)
    if stats.finished_at is not None and stats.completion_tokens > 1:
        decode_s = stats.finished_at - stats.first_token_at
        if decode_s > 0:
            TOKENS_PER_SECOND.observe((stats.completion_tokens - 1) / decode_s)
