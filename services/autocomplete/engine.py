"""Continuous batching for one causal LM: every decode step is one forward pass over all
running sequences; new requests join between steps and finished ones leave. No HTTP here.

    engine = Engine(lambda: TorchBackend(*load_causal_lm(path)), max_batch_size=32)
    stream = engine.submit([engine.encode("Once upon")], SamplingParams(max_tokens=20), n=2)
    async for delta in stream:          # Delta(index, text, logprobs, finish_reason)
        print(delta.index, delta.text, delta.finish_reason)
    stream.cancel()                     # e.g. the client went away: its rows leave the batch

New requests are prefilled right away, together when several are waiting (so a first
token does not wait for the batch to finish), then join the batch. The model and its KV
cache live in a `Backend`: torch_backend.py (transformers) or llama_backend.py (GGUF in
llama.cpp); sampling, stop strings, logprobs, limits and streaming are the engine's, the
same for both.

torch is imported inside the functions that run the model: BentoML's parent process
imports this module with the service definition but never runs a model, and importing
torch there would cost it about 500 MB.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from services.autocomplete.sampling import SamplingParams, choose_tokens, new_generator
from services.autocomplete.stops import StoppableText

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("modelport.autocomplete")

MAX_TOP_LOGPROBS = 5  # OpenAI's limit for the completions API
PREFILL_MAX_REQUESTS = 16  # new requests prefilled together between two decode steps ...
PREFILL_MAX_TOKENS = 2048  # ... and their prompt tokens (bounds the pause for running rows)


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
    finish_reason: str | None = None  # "stop", "length", "timeout", "cancelled" or "error"


@dataclass(frozen=True)
class Finished:
    """One choice, complete: what `GenerationStream.collect` returns per choice index."""

    text: str
    finish_reason: str
    logprobs: list[TokenLogprob]


@dataclass
class Stats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    submitted_at: float = field(default_factory=time.perf_counter)
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
        self._queue: asyncio.Queue[Delta] = asyncio.Queue()
        self._open = choices

    def cancel(self) -> None:
        """Stop generating (safe from any thread); the rows leave the batch at the next step."""
        self.cancelled = True

    def _put(self, delta: Delta) -> None:  # called from the engine thread
        self._loop.call_soon_threadsafe(self._queue.put_nowait, delta)

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._deltas()

    async def collect(self) -> dict[int, Finished]:
        """Wait for every choice; their whole texts, finish reasons and logprobs by index."""
        texts: dict[int, list[str]] = {}
        entries: dict[int, list[TokenLogprob]] = {}
        reasons: dict[int, str] = {}
        async for delta in self:
            texts.setdefault(delta.index, []).append(delta.text)
            entries.setdefault(delta.index, []).extend(delta.logprobs)
            if delta.finish_reason is not None:
                reasons[delta.index] = delta.finish_reason
        return {i: Finished("".join(texts[i]), reasons[i], entries[i]) for i in sorted(texts)}

    async def _deltas(self) -> AsyncIterator[Delta]:
        while self._open:
            delta = await self._queue.get()
            if delta.finish_reason is not None:
                self._open -= 1
            yield delta


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    n: int
    first_index: int  # of its choices in the stream
    stream: GenerationStream


@dataclass
class _Row:
    """One choice being generated: a row of the batch."""

    request: _Request
    index: int
    generator: torch.Generator
    text: StoppableText
    text_offset: int  # length of the echoed prompt in front of the generated text
    output: list[int] = field(default_factory=list)
    pending: list[TokenLogprob] = field(default_factory=list)  # logprobs not yet sent

    @property
    def params(self) -> SamplingParams:
        return self.request.params


class Backend(Protocol):
    """A model and its KV cache over the batch's rows, kept in the engine's row order."""

    description: str  # for the start-up log
    context_length: int  # tokens a sequence may hold, prompt included
    vocab_size: int  # ids a prompt may hold
    stop_token_ids: frozenset[int]  # end-of-text and other special tokens
    kv_capacity: int | None  # KV cells all rows share (None: grows as needed)

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def prefill(self, prompts: list[list[int]], every_position: bool) -> list[torch.Tensor]:
        """Run new prompts; each one's logits, [len(prompt) or 1, vocab]. Held until `join`."""

    def join(self, sources: list[int]) -> None:
        """Append a row per entry that continues prefilled prompt `sources[i]`; drop the rest."""

    def decode_step(self, tokens: list[int]) -> torch.Tensor:
        """Feed every row its next token; the logits for the one after, [rows, vocab]."""

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (indices into the current order, in order)."""

    def reset(self) -> None: ...


class Engine:
    def __init__(self, load: Callable[[], Backend], *, max_batch_size: int = 32) -> None:
        """Start the engine thread, which calls `load()` for its `Backend`; wait for it.

        The model is loaded in the engine's own thread because torch's OpenMP pool is per
        thread: a second thread doing parallel work makes libgomp count more threads than
        cores and stop spinning between parallel regions (`tune_openmp`). With the model
        loaded in the main thread, an int8 decode step took 54 ms in the engine thread
        instead of 31 ms (SmolLM2-135M, 2 cores).
        """
        self.max_batch_size = max_batch_size
        self._inbox: queue.Queue[_Request] = queue.Queue()
        self._rows: list[_Row] = []
        self._next: list[int] = []  # the token each row feeds in next
        self._held: _Request | None = None  # first in line, waiting for room in the KV cache
        loaded = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(load, loaded, failed),
                                        name="autocomplete-engine", daemon=True)
        self._thread.start()
        loaded.wait()
        if failed:
            raise failed[0]

    def _load(self, load: Callable[[], Backend]) -> None:
        self.backend = load()
        self.context_length = self.backend.context_length
        self.vocab_size = self.backend.vocab_size
        self.stop_token_ids = self.backend.stop_token_ids
        self.kv_capacity = self.backend.kv_capacity
        self._reset_batch()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(ids)

    def submit(self, prompts: Sequence[Sequence[int]], params: SamplingParams, *, n: int = 1,
               timeout_s: float | None = None) -> GenerationStream:
        """Queue prompts (token ids) for `n` choices each; call from the event loop."""
        if not prompts or not all(prompts):
            raise ValueError("every prompt needs at least one token")
        stream = GenerationStream(len(prompts) * n, timeout_s)
        stream.stats.prompt_tokens = sum(len(p) for p in prompts)
        for i, prompt in enumerate(prompts):
            self._inbox.put(_Request(list(prompt), params, n, i * n, stream))
        return stream

    # --- the worker thread -------------------------------------------------------------

    def _run(self, load: Callable[[], Backend], loaded: threading.Event,
             failed: list[BaseException]) -> None:
        import torch

        try:
            self._load(load)
        except BaseException as exc:  # handed to the constructor, which raises it
            failed.append(exc)
            return
        finally:
            loaded.set()
        with torch.inference_mode():
            while True:
                if not self._rows and self._held is None and self._inbox.empty():
                    _return_freed_memory()  # about to wait idle
                self._admit()
                try:
                    if self._rows:
                        self._decode_step()
                except Exception:  # a failed step fails its rows, never the worker
                    logger.exception("decode step failed; ending the batch's sequences")
                    for row in self._rows:
                        row.request.stream._put(Delta(row.index, "", (), "error"))
                    self._reset_batch()

    def _admit(self) -> None:
        """Prefill the waiting requests together (blocking while there is nothing else to do).

        At most PREFILL_MAX_REQUESTS / PREFILL_MAX_TOKENS at a time, so a burst of new
        requests does not stall the tokens of the running ones for long; and, where the
        backend's KV cache is a fixed pool, only as many as it has room for: the next in
        line waits (in order) until running rows finish.
        """
        waiting: list[_Request] = []
        rows, tokens = len(self._rows), 0
        room = self._kv_room()
        while len(waiting) < PREFILL_MAX_REQUESTS and rows < self.max_batch_size:
            request = self._next_request(block=not self._rows and not waiting)
            if request is None:
                break
            if request.stream.cancelled:
                continue
            need = kv_cells_needed(request.n, len(request.prompt), request.params.max_tokens)
            if room is not None and need > room:
                if self._rows or waiting:
                    self._held = request  # its turn comes when rows leave
                    break
                self._fail(request, f"needs {need} KV cache cells; the cache has {room}")
                continue
            room = None if room is None else room - need
            waiting.append(request)
            rows, tokens = rows + request.n, tokens + len(request.prompt)
            if tokens >= PREFILL_MAX_TOKENS:
                break
        if not waiting:
            return
        try:
            self._prefill(waiting)
        except Exception:
            logger.exception("prefill failed")
            self.backend.join([])  # drop whatever the failed prefill holds
            for request in waiting:
                self._fail(request)

    def _next_request(self, block: bool) -> _Request | None:
        if self._held is not None:
            request, self._held = self._held, None
            return request
        try:
            return self._inbox.get(block=block)
        except queue.Empty:
            return None

    def _kv_room(self) -> int | None:
        if self.kv_capacity is None:
            return None
        return self.kv_capacity - sum(
            kv_cells_needed(1, len(row.request.prompt), row.params.max_tokens) for row in self._rows)

    def _fail(self, request: _Request, why: str = "") -> None:
        if why:
            logger.error("request failed: %s", why)
        for index in range(request.first_index, request.first_index + request.n):
            request.stream._put(Delta(index, "", (), "error"))

    def _prefill(self, requests: list[_Request]) -> None:
        """One forward pass over the new prompts; their first tokens; the rows that go on join."""
        every_position = any(r.params.echo and r.params.logprobs is not None for r in requests)
        logits = self.backend.prefill([r.prompt for r in requests], every_position)
        sources, rows, tokens = [], [], []
        for i, request in enumerate(requests):
            for row, token in self._start(request, logits[i]):
                sources.append(i)
                rows.append(row)
                tokens.append(token)
        self.backend.join(sources)
        self._rows += rows
        self._next += tokens

    def _start(self, request: _Request, logits: torch.Tensor) -> list[tuple[_Row, int]]:
        """Echo the prompt, pick each choice's first token; the rows that go on, with it."""
        params, stream, n = request.params, request.stream, request.n
        prompt_text = self.decode(request.prompt) if params.echo else ""
        echoed = (self._prompt_logprobs(request.prompt, logits, params.logprobs)
                  if params.echo and params.logprobs is not None else ())
        rows = []
        for index in range(request.first_index, request.first_index + n):
            seed = None if params.seed is None else params.seed + index
            rows.append(_Row(request, index, new_generator(seed),
                             StoppableText(self.decode, params.stop), len(prompt_text)))
            if prompt_text:
                stream._put(Delta(index, prompt_text, echoed))
        if params.max_tokens == 0:
            for row in rows:
                self._finish(row, "length")
            return []
        tokens, logprobs = choose_tokens(logits[-1:].expand(n, -1), [params] * n,
                                         [r.generator for r in rows], [request.prompt] * n, [[]] * n)
        stream.stats.first_token_at = stream.stats.first_token_at or time.perf_counter()
        return [(row, token) for row, token, lp in zip(rows, tokens, logprobs)
                if self._accept(row, token, lp)]

    def _decode_step(self) -> None:
        self._drop(lambda row: self._expired(row))
        if not self._rows:
            return
        logits = self.backend.decode_step(self._next)
        rows = self._rows
        tokens, logprobs = choose_tokens(logits, [r.params for r in rows],
                                         [r.generator for r in rows],
                                         [r.request.prompt for r in rows], [r.output for r in rows])
        done = {id(row) for row, token, lp in zip(rows, tokens, logprobs)
                if not self._accept(row, token, lp)}
        self._next = tokens
        self._drop(lambda row: id(row) in done)

    def _accept(self, row: _Row, token: int, logprobs: torch.Tensor) -> bool:
        """Record `token` for `row`; False when the row has finished."""
        stream, params = row.request.stream, row.params
        if token in self.stop_token_ids:
            self._finish(row, "stop")
            return False
        offset = row.text_offset + len(row.text.text)
        row.output.append(token)
        stream.stats.completion_tokens += 1
        if params.logprobs is not None:
            row.pending.append(self._token_logprob(token, logprobs, params.logprobs, offset))
        piece = row.text.push(row.output)
        if row.text.stopped:
            self._finish(row, "stop", piece)
            return False
        if len(row.output) >= params.max_tokens or (
                len(row.request.prompt) + len(row.output) >= self.context_length):
            self._finish(row, "length", piece)
            return False
        if piece:
            released = row.text_offset + row.text.released
            stream._put(Delta(row.index, piece, self._take_logprobs(row, released)))
        return True

    def _finish(self, row: _Row, reason: str, piece: str = "") -> None:
        piece += row.text.flush()
        end = row.text_offset + len(row.text.text)
        row.request.stream.stats.finished_at = time.perf_counter()
        row.request.stream._put(Delta(row.index, piece, self._take_logprobs(row, end), reason))

    def _expired(self, row: _Row) -> bool:
        stream = row.request.stream
        if stream.cancelled:
            self._finish(row, "cancelled")
            return True
        if stream.deadline is not None and time.monotonic() > stream.deadline:
            self._finish(row, "timeout")
            return True
        return False

    # --- logprobs ----------------------------------------------------------------------

    def _token_logprob(self, token: int, logprobs: torch.Tensor, top_n: int,
                       offset: int) -> TokenLogprob:
        import torch

        top: dict[str, float] = {}
        if top_n > 0:
            values, ids = torch.topk(logprobs, min(top_n, MAX_TOP_LOGPROBS))
            top = {self.decode([int(i)]): float(v) for v, i in zip(values, ids)}
        return TokenLogprob(self.decode([token]), float(logprobs[token]), top, offset)

    def _prompt_logprobs(self, prompt: list[int], logits: torch.Tensor,
                         top_n: int) -> tuple[TokenLogprob, ...]:
        """Each prompt token's logprob given the ones before it (`logits`: one row per token)."""
        import torch

        logprobs = torch.log_softmax(logits.float(), dim=-1)
        entries = [TokenLogprob(self.decode(prompt[:1]), None, {}, 0)]
        for i in range(1, len(prompt)):
            offset = len(self.decode(prompt[:i]))
            entries.append(self._token_logprob(prompt[i], logprobs[i - 1], top_n, offset))
        return tuple(entries)

    @staticmethod
    def _take_logprobs(row: _Row, released: int) -> tuple[TokenLogprob, ...]:
        """The pending logprobs of tokens whose text starts inside the released text."""
        ready = [lp for lp in row.pending if lp.offset < released]
        row.pending = row.pending[len(ready):]
        return tuple(ready)

    # --- the batch ---------------------------------------------------------------------

    def _drop(self, leaves: Any) -> None:
        """Remove the rows for which `leaves(row)` is true."""
        keep = [i for i, row in enumerate(self._rows) if not leaves(row)]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset_batch()
            return
        self._rows = [self._rows[i] for i in keep]
        self._next = [self._next[i] for i in keep]
        self.backend.keep(keep)

    def _reset_batch(self) -> None:
        self._rows, self._next = [], []
        self.backend.reset()


def kv_cells_needed(rows: int, prompt_tokens: int, max_tokens: int) -> int:
    """KV cells a request may fill: its prompt and all its tokens, for each of its rows."""
    return rows * (prompt_tokens + max_tokens)


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the OS, as glibc otherwise keeps them: an idle server's
    RSS then no longer holds the KV cache of its last busy moment (~40-90 MB for GPT-2 at 16
    clients). It costs a few ms, paid only when the engine goes idle."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc: nothing to do
        pass
