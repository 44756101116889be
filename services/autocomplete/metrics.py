"""Generation metrics on /metrics, next to BentoML's own request metrics.

The engine's load has vLLM's metric names with our prefix (`vllm:num_requests_running` ->
`modelport:num_requests_running`, ...), so dashboards and autoscaling rules written for vLLM
work after replacing the prefix. They count rows (one per choice: n=3 is 3), the unit the
engine schedules in. With several workers: running and waiting are summed, KV cache usage is
the fullest worker's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import bentoml

from services.autocomplete.generation import Stats
from services.core.bounded_labels import BoundedLabels

if TYPE_CHECKING:
    from services.autocomplete.engine import Load

TOKENS_GENERATED = bentoml.metrics.Counter(
    name="modelport_autocomplete_tokens_generated", documentation="Completion tokens generated"
)
PROMPT_TOKENS = bentoml.metrics.Counter(
    name="modelport_autocomplete_prompt_tokens", documentation="Prompt tokens processed"
)
TIME_TO_FIRST_TOKEN = bentoml.metrics.Histogram(
    name="modelport_autocomplete_time_to_first_token_seconds",
    documentation="From a request reaching the engine to its first generated token",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 5.0),
)
TOKENS_PER_SECOND = bentoml.metrics.Histogram(
    name="modelport_autocomplete_tokens_per_second",
    documentation="Decode speed of each request (tokens after the first / time after the first)",
    buckets=(1, 2.5, 5, 10, 20, 40, 80, 160, 320),
)
REQUESTS_RUNNING = bentoml.metrics.Gauge(
    name="modelport:num_requests_running",
    multiprocess_mode="livesum",
    documentation="Sequences in the engine's batch (one per choice)",
)
REQUESTS_WAITING = bentoml.metrics.Gauge(
    name="modelport:num_requests_waiting",
    multiprocess_mode="livesum",
    documentation="Sequences submitted and waiting for a place in the batch",
)
KV_CACHE_USAGE = bentoml.metrics.Gauge(
    name="modelport:kv_cache_usage_perc",
    multiprocess_mode="livemax",
    documentation="Fraction of the KV cache pool reserved by running sequences (0-1; 1 = full); "
    "llama.cpp backend only, 0 on torch, whose cache grows as needed",
)
PREFIX_CACHE_QUERIES = bentoml.metrics.Counter(
    name="modelport:prefix_cache_queries", documentation="Prompt tokens looked up in the prefix cache"
)
PREFIX_CACHE_HITS = bentoml.metrics.Counter(
    name="modelport:prefix_cache_hits",
    documentation="Prompt tokens whose KV came from the prefix cache (not run again)",
)
VERSIONS_LOADED = bentoml.metrics.Gauge(
    name="modelport_autocomplete_versions_loaded",
    multiprocess_mode="livesum",
    documentation="User versions (LoRA adapters) loaded beside the base model",
)
VERSION_LOADS = bentoml.metrics.Counter(
    name="modelport_autocomplete_version_loads", documentation="User versions loaded on first use"
)
VERSION_EVICTIONS = bentoml.metrics.Counter(
    name="modelport_autocomplete_version_evictions",
    documentation="User versions unloaded, least recently used, to keep within the adapter budget",
)
VERSION_LOAD_SECONDS = bentoml.metrics.Histogram(
    name="modelport_autocomplete_version_load_seconds",
    documentation="Loading a user version's adapter into the engine (its first use)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
# What users do with suggestions, as their editors report it (POST /v1/suggest/feedback), per
# user (the API key's name; "" on an open API) and model: keystroke savings per user is
# (accepted_chars - accepted) / (typed + accepted_chars) (README, "Savings per user").
TYPED_CHARS = bentoml.metrics.Counter(
    name="modelport_suggest_typed_chars",
    documentation="Characters users typed by hand (editors' feedback)",
    labelnames=["user", "model"],
)
ACCEPTED = bentoml.metrics.Counter(
    name="modelport_suggest_accepted",
    documentation="Suggestions users took (a keystroke each)",
    labelnames=["user", "model"],
)
ACCEPTED_CHARS = bentoml.metrics.Counter(
    name="modelport_suggest_accepted_chars",
    documentation="Characters the suggestions users took inserted",
    labelnames=["user", "model"],
)
MAX_USER_LABELS = 200  # key names and models are configured, but bound them all the same
_users, _models = BoundedLabels(MAX_USER_LABELS), BoundedLabels(MAX_USER_LABELS)
REQUEST_QUEUE_TIME = bentoml.metrics.Histogram(
    name="modelport:request_queue_time_seconds",
    documentation="From a request reaching the engine to the start of its prefill",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def observe_load(load: Load) -> None:
    """The engine's `observe_load`: called from its thread when the load changes."""
    REQUESTS_RUNNING.set(load.running)
    REQUESTS_WAITING.set(load.waiting)
    KV_CACHE_USAGE.set(load.kv_used / load.kv_capacity if load.kv_capacity else 0.0)


def observe(stats: Stats) -> None:
    PROMPT_TOKENS.inc(stats.prompt_tokens)
    PREFIX_CACHE_QUERIES.inc(stats.prompt_tokens)
    PREFIX_CACHE_HITS.inc(stats.cached_tokens)
    TOKENS_GENERATED.inc(stats.completion_tokens)
    if stats.started_at is not None:
        REQUEST_QUEUE_TIME.observe(stats.started_at - stats.submitted_at)
    if stats.first_token_at is None:
        return
    TIME_TO_FIRST_TOKEN.observe(stats.first_token_at - stats.submitted_at)
    if stats.finished_at is not None and stats.completion_tokens > 1:
        decode_s = stats.finished_at - stats.first_token_at
        if decode_s > 0:
            TOKENS_PER_SECOND.observe((stats.completion_tokens - 1) / decode_s)


def observe_feedback(user: str | None, model: str, typed: int, accepted: int, accepted_chars: int) -> None:
    labels = {"user": _users(user or ""), "model": _models(model)}
    TYPED_CHARS.labels(**labels).inc(typed)
    ACCEPTED.labels(**labels).inc(accepted)
    ACCEPTED_CHARS.labels(**labels).inc(accepted_chars)
