"""What generation hands out: each choice's text, logprobs and finish reason, as a stream.

    stream = engine.submit(prompts, params, n=2)     # a GenerationStream (engine.py)
    async for delta in stream:                       # Delta(index, text, logprobs, finish_reason)
        ...
    finished = await stream.collect()                # or: {index: Finished(text, reason, logprobs)}

The engine thread feeds each choice's tokens to its `ChoiceOutput`, which turns them into
text (cut at stop strings), logprobs and the finish reason, and sends the `Delta`s. Sampling
and stop-string matching are the same for every backend.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from services.autocomplete.sampling import SamplingParams
from services.autocomplete.stops import PARTIAL_CHARACTER, StoppableText

if TYPE_CHECKING:  # imported where used: see engine.py's docstring
    import torch

    from services.autocomplete.backend import Backend

MAX_TOP_LOGPROBS = 5  # OpenAI's limit for the completions API


class FinishReason(enum.StrEnum):
    """Why a choice ended; its value is the string OpenAI's API uses."""

    STOP = "stop"  # end of text or a stop string
    LENGTH = "length"  # max_tokens reached, or the model's context is full
    TIMEOUT = "timeout"  # past the request's deadline
    CANCELLED = "cancelled"  # `GenerationStream.cancel` (the client went away)
    ERROR = "error"  # the model failed (logged), or the request can never fit the KV cache


# The finish reasons a client sees in a completion; the others end the request with an error.
ClientFinishReason = Literal[FinishReason.STOP, FinishReason.LENGTH]


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float | None  # None for the first prompt token (nothing predicts it)
    top: dict[str, float]  # the most likely alternatives at this position
    offset: int  # where the token's text starts in the choice's text


@dataclass(frozen=True)
class Delta:
    """A piece of one choice's text; the last piece of a choice carries its finish_reason."""

    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class Finished:
    """One choice, complete: what `GenerationStream.collect` returns per choice index."""

    text: str
    finish_reason: FinishReason
    logprobs: list[TokenLogprob]


@dataclass
class Stats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    completion_tokens: int = 0
    submitted_at: float = field(default_factory=time.perf_counter)
    started_at: float | None = None  # taken from the queue into a prefill (its first prompt)
    first_token_at: float | None = None
    finished_at: float | None = None


class GenerationStream:
    """What `Engine.submit` returns: an async iterator of the `Delta`s of every choice.

    Choice `i * n + j` is the j-th choice for prompt i, as in OpenAI's API.
    """

    def __init__(self, choices: int, timeout_s: float | None) -> None:
        self.stats = Stats()
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.cancelled = False
        self._loop = asyncio.get_running_loop()
        self._ready: deque[Delta] = deque()  # appended by the engine thread, taken by the loop
        self._arrived = asyncio.Event()
        # Every delta wakes the event loop while someone streams; `collect` wants only the last
        # of each choice. A wake-up per token took a core from llama.cpp's threads mid-step.
        self._wake_each = True
        self._open = choices

    def cancel(self) -> None:
        """Stop generating (safe from any thread); the rows leave the batch at the next step."""
        self.cancelled = True

    def fail(self, index: int, reason: FinishReason = FinishReason.ERROR) -> None:  # engine thread
        """End choice `index` with an error (or a timeout), sending nothing more of it."""
        self._put(Delta(index, "", (), reason))

    def _put(self, delta: Delta) -> None:  # called from the engine thread
        self._ready.append(delta)
        if self._wake_each or delta.finish_reason is not None:
            self._loop.call_soon_threadsafe(self._arrived.set)

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._deltas()

    async def collect(self) -> dict[int, Finished]:
        """Wait for every choice; their whole texts, finish reasons and logprobs by index."""
        texts: dict[int, list[str]] = {}
        entries: dict[int, list[TokenLogprob]] = {}
        reasons: dict[int, FinishReason] = {}
        self._wake_each = False
        async for delta in self:
            texts.setdefault(delta.index, []).append(delta.text)
            entries.setdefault(delta.index, []).extend(delta.logprobs)
            if delta.finish_reason is not None:
                reasons[delta.index] = delta.finish_reason
        return {i: Finished("".join(texts[i]), reasons[i], entries[i]) for i in sorted(texts)}

    async def _deltas(self) -> AsyncIterator[Delta]:
        while self._open:
            if not self._ready:
                # Cleared after the check, before waiting: a delta appended since comes with a
                # `set` that runs after this (call_soon_threadsafe), so none is missed.
                self._arrived.clear()
                await self._arrived.wait()
                continue
            delta = self._ready.popleft()
            if delta.finish_reason is not None:
                self._open -= 1
            yield delta


class ChoiceOutput:
    """One choice's output as the engine thread generates it: its tokens, its text (cut at
    stop strings, after the echoed prompt if any), its logprobs, and when it is finished."""

    def __init__(
        self,
        stream: GenerationStream,
        index: int,
        prompt: list[int],
        params: SamplingParams,
        backend: Backend,
        text_offset: int,
    ) -> None:
        self.stream, self.index, self.prompt, self.params = stream, index, prompt, params
        self._backend = backend  # for decode, stop_token_ids and context_length
        self.text = StoppableText(backend.decode, params.stop)
        self.text_offset = text_offset  # length of the echoed prompt in front of the generated text
        self.tokens: list[int] = []
        self._pending: list[TokenLogprob] = []  # logprobs not yet sent

    @classmethod
    def open(
        cls,
        stream: GenerationStream,
        indices: range,
        prompt: list[int],
        params: SamplingParams,
        backend: Backend,
        echoed: Sequence[TokenLogprob] = (),
    ) -> list[ChoiceOutput]:
        """A request's choices, each starting with the prompt when `params.echo` asks for it
        (with `echoed`, its logprobs from the prefill, when `params.logprobs` does too)."""
        prompt_text = backend.decode(prompt) if params.echo else ""
        choices = []
        for index in indices:
            choices.append(cls(stream, index, prompt, params, backend, len(prompt_text)))
            if prompt_text:
                stream._put(Delta(index, prompt_text, tuple(echoed)))
        return choices

    def accept(self, token: int, logprobs: torch.Tensor | None) -> bool:
        """Record `token` (`logprobs`: the row's, over the vocabulary; None when the request
        asks for none); False once finished."""
        stream, params = self.stream, self.params
        if token in self._backend.stop_token_ids:
            self.finish(FinishReason.STOP)
            return False
        offset = self.text_offset + len(self.text.text)
        self.tokens.append(token)
        stream.stats.completion_tokens += 1
        if params.logprobs is not None and logprobs is not None:
            self._pending.append(
                token_logprob(self._backend.decode, token, logprobs, params.logprobs, offset)
            )
        piece = self.text.push(self.tokens)
        if self.text.stopped:
            self.finish(FinishReason.STOP, piece)
            return False
        if len(self.tokens) >= params.max_tokens or (
            len(self.prompt) + len(self.tokens) >= self._backend.context_length
        ):
            self.finish(FinishReason.LENGTH, piece)
            return False
        if piece:
            released = self.text_offset + self.text.released
            stream._put(Delta(self.index, piece, self._take_logprobs(released)))
        return True

    def finish(self, reason: FinishReason, piece: str = "") -> None:
        """Send the rest of the text (what stop-string matching held back) and `reason`."""
        piece += self.text.flush()
        end = self.text_offset + len(self.text.text)
        self.stream.stats.finished_at = time.perf_counter()
        self.stream._put(Delta(self.index, piece, self._take_logprobs(end), reason))

    def _take_logprobs(self, released: int) -> tuple[TokenLogprob, ...]:
        """The pending logprobs of tokens whose text starts inside the released text."""
        ready = [lp for lp in self._pending if lp.offset < released]
        self._pending = self._pending[len(ready) :]
        return tuple(ready)


Decode = Callable[[Sequence[int]], str]


def token_logprob(
    decode: Decode, token: int, logprobs: torch.Tensor, top_n: int, offset: int
) -> TokenLogprob:
    import torch

    top: dict[str, float] = {}
    if top_n > 0:
        values, ids = torch.topk(logprobs, min(top_n, MAX_TOP_LOGPROBS))
        top = {decode([int(i)]): float(v) for v, i in zip(values, ids)}
    return TokenLogprob(decode([token]), float(logprobs[token]), top, offset)


class PromptLogprobs:
    """Each prompt token's logprob given the ones before it (echo with logprobs), built as the
    prefill's chunks run: a chunk's logits become entries at once and are not kept (16 prompts
    of 845 tokens kept 2.6 GB of them), and each offset decodes only the text since a recent
    point where the decoded text was whole (decoding every prefix was O(n^2)).

        echo = PromptLogprobs(tokenizer.decode, prompt, top_n=2)
        echo.add(0, chunk_logits)          # as each chunk of the prefill runs
        echo.entries                       # [TokenLogprob(...), ...], one per prompt token
    """

    SETTLE_EVERY = 32  # tokens: how far an offset's decode reaches back at most, about

    def __init__(self, decode: Decode, prompt: list[int], top_n: int) -> None:
        self._decode, self._prompt, self._top_n = decode, prompt, top_n
        self.entries = [TokenLogprob(decode(prompt[:1]), None, {}, 0)]
        self._base, self._base_length = 0, 0  # decode(prompt[:base]) is whole, this long

    def add(self, start: int, logits: torch.Tensor) -> None:
        """The logits of positions start, start + 1, ...: each predicts the token after it."""
        import torch

        rows = min(len(logits), len(self._prompt) - 1 - start)  # the last predicts no prompt token
        if rows <= 0:
            return
        # logprob = logit - logsumexp: no second [rows, vocab] tensor (log_softmax's) to fill.
        logits = logits[:rows].float()
        normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)
        targets = torch.tensor(self._prompt[start + 1 : start + 1 + rows])
        chosen = (logits.gather(1, targets[:, None]) - normaliser)[:, 0].tolist()
        k = min(self._top_n, MAX_TOP_LOGPROBS)
        values, ids = torch.topk(logits, k, dim=-1) if k > 0 else (None, None)
        if values is not None:
            values = values - normaliser
        decode = self._decode
        for row in range(rows):
            i = start + 1 + row
            top = (
                {}
                if values is None or ids is None
                else {decode([t]): v for v, t in zip(values[row].tolist(), ids[row].tolist())}
            )
            self.entries.append(TokenLogprob(decode([self._prompt[i]]), chosen[row], top, self._offset(i)))

    def _offset(self, i: int) -> int:
        """len(decode(prompt[:i])), decoding only from the last whole point on (with the token
        before it, whose text is then taken away: a tokenizer may drop a leading space)."""
        base, prompt, decode = self._base, self._prompt, self._decode
        if base == 0:
            text = decode(prompt[:i])
            offset = len(text)
        else:
            text = decode(prompt[base - 1 : i])
            offset = self._base_length + len(text) - len(decode(prompt[base - 1 : base]))
        if i - base >= self.SETTLE_EVERY and not text.endswith(PARTIAL_CHARACTER):
            self._base, self._base_length = i, offset
        return offset
