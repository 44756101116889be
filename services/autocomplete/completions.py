"""OpenAI's completions API on top of the engine: request checks, the JSON answer, the stream.

job = prepare(body, engine, settings, model_name)     # raises ApiError with a 4xx
completion = await collect(job, engine.submit(...))   # a `Completion`
async for line in sse(job, stream): ...               # "data: {...}\\n\\n" ... "data: [DONE]\\n\\n"
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from services.autocomplete.engine import Engine, kv_cells_needed
from services.autocomplete.generation import (
    ClientFinishReason,
    Delta,
    FinishReason,
    GenerationStream,
    TokenLogprob,
)
from services.autocomplete.http_schema import (
    Choice,
    Completion,
    CompletionRequest,
    Logprobs,
    PromptTokensDetails,
    Usage,
)
from services.autocomplete.sampling import SamplingParams
from services.autocomplete.settings import Settings
from services.core.api_errors import ApiError

MAX_STOPS = 4  # as OpenAI
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
TOKENISING_THREADS = 2  # one per core: more only contend with the engine's thread
# Text up to this long is tokenised on the event loop (well under a millisecond): a hand-off to a
# worker thread and back costs more than that, two thread wake-ups per request on a busy machine.
INLINE_CHARS = 2048
_tokenising = ThreadPoolExecutor(TOKENISING_THREADS, thread_name_prefix="autocomplete-tokenise")
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    id: str
    created: int
    model: str
    prompts: list[list[int]]
    params: SamplingParams
    n: int
    stream: bool
    include_usage: bool


async def in_worker_thread(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a worker thread: tokenising is CPU work (a 900 KB prompt took 0.7 s),
    which on the event loop froze every other request, /livez too."""
    return await asyncio.get_running_loop().run_in_executor(_tokenising, work, *args)


async def tokenising(chars: int, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)`, which tokenises `chars` characters: on the event loop when that is short
    (INLINE_CHARS), else `in_worker_thread`."""
    if chars <= INLINE_CHARS:
        return work(*args)
    return await in_worker_thread(work, *args)


def prompt_chars(body: CompletionRequest) -> int:
    """What `prepare` tokenises, in characters (a token id counts as one)."""
    if isinstance(body.prompt, str):
        return len(body.prompt)
    return sum(len(item) if isinstance(item, str | list) else 1 for item in body.prompt)


def prepare(
    body: CompletionRequest, engine: Engine, settings: Settings, model: str, aliases: frozenset[str]
) -> Job:
    """Check a request against the limits and tokenise it; ApiError (4xx) says what to fix.
    CPU work: call it through `tokenising(prompt_chars(body), prepare, ...)`."""
    if body.model is not None and body.model not in aliases:
        raise ApiError(
            404,
            f"model {body.model!r} is not served here; this server serves "
            f"{model!r} (GET /v1/models lists it)",
            code="model_not_found",
            param="model",
        )
    n = body.n or 1
    max_tokens = DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    if max_tokens > settings.max_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens={max_tokens} is above this server's limit of "
            f"{settings.max_tokens_limit}; ask for fewer",
            code="max_tokens_too_large",
            param="max_tokens",
        )
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise ApiError(
            400, f"stop takes up to {MAX_STOPS} non-empty strings", code="invalid_stop", param="stop"
        )
    _refuse_unsupported(body, n)
    logit_bias = _logit_bias(body, engine.vocab_size)
    prompts = _tokenised_prompts(body, engine, settings, max_tokens)
    if n > settings.max_n or len(prompts) > settings.max_prompts:
        raise ApiError(
            400,
            f"at most {settings.max_prompts} prompts and n={settings.max_n} choices per request",
            code="too_many_choices",
            param="n",
        )
    need = kv_cells_needed(n, max(len(ids) for ids in prompts), max_tokens)
    if engine.kv_capacity is not None and need > engine.kv_capacity:
        raise ApiError(
            400,
            f"n x (prompt + max_tokens) is {need} tokens, more than this server's "
            f"KV cache holds ({engine.kv_capacity}, MODELPORT_AUTOCOMPLETE_KV_CACHE_TOKENS)"
            ": lower n or max_tokens, or shorten the prompt",
            code="context_length_exceeded",
            param="max_tokens",
        )
    _refuse_what_cannot_finish(engine, settings, prompts, n, max_tokens)
    return Job(
        f"cmpl-{uuid.uuid4().hex}",
        int(time.time()),
        model,
        prompts,
        sampling_params(body, max_tokens, stops, logit_bias),
        n,
        bool(body.stream),
        bool(body.stream_options and body.stream_options.include_usage),
    )


def sampling_params(
    body: CompletionRequest, max_tokens: int, stops: list[str], logit_bias: dict[int, float] | None = None
) -> SamplingParams:
    """How a request samples: the one place its defaults live (`None`: OpenAI's default).

    `logit_bias`: the request's, checked against the vocabulary (`_logit_bias`)."""
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=body.top_p or 1.0,
        top_k=max(body.top_k or 0, 0),  # 0 and -1 (vLLM's "all"): no top-k cut
        repetition_penalty=body.repetition_penalty or 1.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        stop=tuple(stops),
        seed=body.seed,
        logprobs=body.logprobs,
        echo=bool(body.echo),
        logit_bias=tuple(sorted((logit_bias or {}).items())),
    )


def _refuse_what_cannot_finish(
    engine: Engine, settings: Settings, prompts: list[list[int]], n: int, max_tokens: int
) -> None:
    """A 400 for a request too large to finish within the request timeout even on an idle
    server: its sequences (prompts x n) need more rounds than the batch (max_batch_size rows)
    or the KV cache (all of them, prompt + max_tokens each) holds at once, each round up to
    max_tokens steps, at the engine's recent step time. A request that fits in one round is
    always taken: if the server is busy, it ends at the timeout with what it generated."""
    rows = len(prompts) * n
    cells = sum(kv_cells_needed(n, len(ids), max_tokens) for ids in prompts)
    rounds = max(
        math.ceil(rows / engine.max_batch_size),
        1 if engine.kv_capacity is None else math.ceil(cells / engine.kv_capacity),
    )
    step_s = engine.step_seconds
    if rounds == 1 or step_s is None:
        return
    estimate = rounds * max_tokens * step_s
    if estimate > settings.request_timeout_s:
        raise ApiError(
            400,
            f"this request cannot finish within the {settings.request_timeout_s:g}s "
            f"request timeout: {len(prompts)} prompt(s) x n={n} is {rows} sequences, "
            f"which run in {rounds} rounds of up to max_tokens={max_tokens} steps, about "
            f"{estimate:.0f}s at {step_s * 1000:.0f} ms a step. Lower n, send fewer prompts "
            "per request, or lower max_tokens",
            code="cannot_finish_in_time",
            param="max_tokens",
        )


def _refuse_unsupported(body: CompletionRequest, n: int) -> None:
    """OpenAI parameters this server does not implement: a 400 that says what to do instead."""
    if body.suffix:
        raise ApiError(
            400,
            "suffix is not supported: this server only continues the prompt "
            "(no fill-in-the-middle). Drop suffix and send the text before the "
            "insertion point as prompt, with stop strings to end the insertion",
            code="unsupported_parameter",
            param="suffix",
        )
    if body.best_of is not None and body.best_of not in (1, n):
        raise ApiError(
            400,
            f"best_of={body.best_of} is not supported (only 1 or n): this server "
            "does not rank completions server-side. Ask for n choices with logprobs=0 "
            "instead and keep the one with the highest mean token_logprobs",
            code="unsupported_parameter",
            param="best_of",
        )


def _logit_bias(body: CompletionRequest, vocab_size: int) -> dict[int, float]:
    """The request's logit_bias keyed by token id; ApiError for a key that is not one."""
    bias: dict[int, float] = {}
    for key, value in (body.logit_bias or {}).items():
        token = int(key) if key.isascii() and key.isdigit() else -1  # int() takes "1_0", " 1"
        if not 0 <= token < vocab_size:
            raise ApiError(
                400,
                f"logit_bias keys must be token ids in 0..{vocab_size - 1} (as strings); got {key!r}",
                code="invalid_logit_bias",
                param="logit_bias",
            )
        bias[token] = value
    if sum(value <= -100 for value in bias.values()) >= vocab_size:
        raise ApiError(
            400,
            "logit_bias bans every token (-100): leave at least one allowed",
            code="invalid_logit_bias",
            param="logit_bias",
        )
    return bias


def _tokenised_prompts(
    body: CompletionRequest, engine: Engine, settings: Settings, max_tokens: int
) -> list[list[int]]:
    # One prompt (text or token ids) or a list of them; pydantic checked which.
    raw = cast(
        "list[str | list[int]]",
        [body.prompt]
        if isinstance(body.prompt, str) or (body.prompt and all(isinstance(t, int) for t in body.prompt))
        else body.prompt,
    )
    if not raw:
        raise ApiError(
            400, "prompt is an empty list: send the text to complete", code="empty_prompt", param="prompt"
        )
    for item in raw:  # before any is tokenised: its cost grows with its length
        if isinstance(item, str) and len(item) > settings.max_prompt_chars:
            raise ApiError(
                413,
                f"a prompt has {len(item):,} characters, more than the "
                f"{settings.max_prompt_chars:,} this server tokenises "
                "(MODELPORT_AUTOCOMPLETE_MAX_PROMPT_CHARS): send only the end of a "
                "long text",
                code="prompt_too_long",
                param="prompt",
            )
    limit = min(settings.max_prompt_tokens, engine.context_length - max_tokens)
    prompts = []
    for item in raw:
        ids = engine.encode(item) if isinstance(item, str) else list(item)
        if not ids:
            raise ApiError(
                400, "prompt is empty: send the text to complete", code="empty_prompt", param="prompt"
            )
        if body.truncate_prompt_tokens is not None:
            ids = ids[-min(body.truncate_prompt_tokens, max(limit, 1)) :]
        if len(ids) > limit:
            raise ApiError(
                400,
                f"the prompt has {len(ids)} tokens, more than the {limit} allowed "
                f"(at most {settings.max_prompt_tokens}, and prompt + max_tokens="
                f"{max_tokens} must fit the model's {engine.context_length}-token "
                "context). Shorten it, lower max_tokens, or set truncate_prompt_tokens "
                "to keep only its end.",
                code="context_length_exceeded",
                param="prompt",
            )
        # After the cut: a loop over 100k ids holds the GIL, which the event loop waits for.
        if any(not 0 <= t < engine.vocab_size for t in ids):
            raise ApiError(
                400,
                f"prompt token ids must be in 0..{engine.vocab_size - 1}",
                code="invalid_token",
                param="prompt",
            )
        prompts.append(ids)
    return prompts


def client_finish_reason(
    reason: FinishReason | None, settings: Settings, started: bool
) -> ClientFinishReason | None:
    """What a client sees of a finish reason: stop or length; the others are an ApiError.

    A timeout after generation `started` is "length": the choices keep the text they have (a
    504 threw finished tokens away). Before the first token, there is nothing to keep: 504."""
    if reason is FinishReason.TIMEOUT and started:
        return FinishReason.LENGTH
    if reason is FinishReason.TIMEOUT:
        raise ApiError(
            504,
            f"generation ran past the {settings.request_timeout_s:g}s request "
            "timeout before its first token; retry when the server is less busy",
            code="timeout",
            type="server_error",
        )
    if reason is FinishReason.ERROR:
        raise ApiError(
            500, "generation failed; the server logged why", code="generation_failed", type="server_error"
        )
    if reason is FinishReason.CANCELLED:  # only a client that went away cancels a stream
        raise ApiError(499, "client closed the request", code="client_closed")
    return reason


def _logprobs(entries: list[TokenLogprob], want: int | None) -> Logprobs | None:
    if want is None:
        return None
    return Logprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[e.top if e.logprob is not None else None for e in entries],
        text_offset=[e.offset for e in entries],
    )


def _usage(stream: GenerationStream) -> Usage:
    stats = stream.stats
    return Usage(
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        total_tokens=stats.prompt_tokens + stats.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=stats.cached_tokens),
    )


async def collect(job: Job, stream: GenerationStream, settings: Settings) -> Completion:
    finished = await stream.collect()
    started = stream.stats.first_token_at is not None
    reasons = {i: client_finish_reason(c.finish_reason, settings, started) for i, c in finished.items()}
    choices = [
        Choice(
            text=c.text,
            index=i,
            finish_reason=reasons[i],
            logprobs=_logprobs(c.logprobs, job.params.logprobs),
        )
        for i, c in finished.items()
    ]
    return Completion(id=job.id, created=job.created, model=job.model, choices=choices, usage=_usage(stream))


async def sse(job: Job, stream: GenerationStream, settings: Settings) -> AsyncIterator[str]:
    """Server-sent events as OpenAI streams them; a failure mid-stream is an `error` event."""
    async for delta in stream:
        try:
            reason = client_finish_reason(
                delta.finish_reason, settings, stream.stats.first_token_at is not None
            )
        except ApiError as exc:
            yield _event(
                {"error": {"message": exc.message, "type": exc.type, "code": exc.code, "param": None}}
            )
            break
        if delta.text or reason or delta.logprobs:
            yield _event(_chunk(job, delta, reason).model_dump())
    else:
        if job.include_usage:
            yield _event({**_chunk(job).model_dump(), "usage": _usage(stream).model_dump()})
    yield "data: [DONE]\n\n"


def _chunk(job: Job, delta: Delta | None = None, reason: ClientFinishReason | None = None) -> Completion:
    choices = (
        []
        if delta is None
        else [
            Choice(
                text=delta.text,
                index=delta.index,
                finish_reason=reason,
                logprobs=_logprobs(list(delta.logprobs), job.params.logprobs),
            )
        ]
    )
    return Completion(id=job.id, created=job.created, model=job.model, choices=choices)


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
