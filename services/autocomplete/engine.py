"""Continuous batching for one causal LM: every decode step is one forward pass over all
running sequences; new requests join between steps and finished ones leave. No HTTP here.

    engine = Engine(lambda: load_causal_lm(path), max_batch_size=32)  # loads in its thread
    stream = engine.submit([engine.encode("Once upon")], SamplingParams(max_tokens=20), n=2)
    async for delta in stream:          # Delta(index, text, logprobs, finish_reason)
        print(delta.index, delta.text, delta.finish_reason)
    stream.cancel()                     # e.g. the client went away: its rows leave the batch

How the batch is kept: one KV cache (transformers' DynamicCache) holds every running row,
left-padded to a common length, with an attention mask that hides the padding and per-row
position ids. New requests are prefilled right away, together when several are waiting (so
a first token does not wait for the batch to finish), then their cache rows are padded and
appended. Rows that finish are
dropped from the cache, and columns that became padding for every row are trimmed.

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
from typing import TYPE_CHECKING, Any

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


class Engine:
    def __init__(self, load: Callable[[], tuple[Any, Any]], *, max_batch_size: int = 32) -> None:
        """Start the engine thread, which calls `load()` for (model, tokenizer); wait for it.

        The model is loaded in the engine's own thread because torch's OpenMP pool is per
        thread: a second thread doing parallel work makes libgomp count more threads than
        cores and stop spinning between parallel regions (`tune_openmp`). With the model
        loaded in the main thread, an int8 decode step took 54 ms in the engine thread
        instead of 31 ms (SmolLM2-135M, 2 cores).
        """
        self.max_batch_size = max_batch_size
        self._inbox: queue.Queue[_Request] = queue.Queue()
        self._rows: list[_Row] = []
        self._cache: Any = None  # DynamicCache over self._rows
        self._mask: torch.Tensor  # [rows, cache length]
        self._next: torch.Tensor  # token each row feeds in next
        self._positions: torch.Tensor
        loaded = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(load, loaded, failed),
                                        name="autocomplete-engine", daemon=True)
        self._thread.start()
        loaded.wait()
        if failed:
            raise failed[0]

    def _load(self, load: Callable[[], tuple[Any, Any]]) -> None:
        self.model, self.tokenizer = load()
        self.context_length = _context_length(self.model.config)
        self.stop_token_ids = _stop_token_ids(self.model, self.tokenizer)
        # The Rust tokenizer itself: the Python wrapper mutates padding state on each call,
        # which fails when the event loop encodes while this engine's thread decodes.
        self._codec = self.tokenizer.backend_tokenizer
        self._reset_batch()

    def encode(self, text: str) -> list[int]:
        return list(self._codec.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._codec.decode(list(ids), skip_special_tokens=False))

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])  # ids a prompt may hold

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

    def _run(self, load: Callable[[], tuple[Any, Any]], loaded: threading.Event,
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
                if not self._rows and self._inbox.empty():
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
        requests does not stall the tokens of the running ones for long.
        """
        waiting: list[_Request] = []
        rows, tokens = len(self._rows), 0
        while len(waiting) < PREFILL_MAX_REQUESTS:
            try:
                request = self._inbox.get(block=not self._rows and not waiting)
            except queue.Empty:
                break
            if request.stream.cancelled:
                continue
            waiting.append(request)
            rows, tokens = rows + request.n, tokens + len(request.prompt)
            if rows >= self.max_batch_size or tokens >= PREFILL_MAX_TOKENS:
                break
        if not waiting:
            return
        try:
            self._prefill(waiting)
        except Exception:
            logger.exception("prefill failed")
            for request in waiting:
                for index in range(request.first_index, request.first_index + request.n):
                    request.stream._put(Delta(index, "", (), "error"))

    def _prefill(self, requests: list[_Request]) -> None:
        """One forward pass over the new prompts (left-padded); their first tokens; join the batch."""
        import torch
        from transformers import DynamicCache

        width = max(len(r.prompt) for r in requests)
        ids = torch.zeros(len(requests), width, dtype=torch.long)  # 0: any id, masked anyway
        mask = torch.zeros(len(requests), width, dtype=torch.long)
        for i, request in enumerate(requests):
            ids[i, width - len(request.prompt):] = torch.tensor(request.prompt)
            mask[i, width - len(request.prompt):] = 1
        every_position = any(r.params.echo and r.params.logprobs is not None for r in requests)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True,
                         position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                         logits_to_keep=0 if every_position else 1)
        joining: list[tuple[int, _Row, int]] = []  # (cache row, row, first token)
        for i, request in enumerate(requests):
            logits = out.logits[i, width - len(request.prompt):] if every_position else out.logits[i]
            for row, token in self._start(request, logits):
                joining.append((i, row, token))
        if joining:
            cache.batch_select_indices(torch.tensor([i for i, _, _ in joining]))
            self._join([row for _, row, _ in joining], cache, mask[[i for i, _, _ in joining]],
                       [token for _, _, token in joining])

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
        import torch

        self._drop(lambda row: self._expired(row))
        if not self._rows:
            return
        self._mask = torch.cat([self._mask, torch.ones(len(self._rows), 1, dtype=torch.long)], 1)
        out = self.model(input_ids=self._next[:, None], attention_mask=self._mask,
                         position_ids=self._positions[:, None], past_key_values=self._cache,
                         use_cache=True)
        self._positions += 1
        rows = self._rows
        tokens, logprobs = choose_tokens(out.logits[:, -1], [r.params for r in rows],
                                         [r.generator for r in rows],
                                         [r.request.prompt for r in rows], [r.output for r in rows])
        done = {id(row) for row, token, lp in zip(rows, tokens, logprobs)
                if not self._accept(row, token, lp)}
        self._next = torch.tensor(tokens, dtype=torch.long)
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

    # --- the batch's KV cache ------------------------------------------------------------

    def _join(self, rows: list[_Row], cache: Any, new_mask: torch.Tensor, tokens: list[int]) -> None:
        """Append prefilled rows (their cache and its mask `new_mask`) to the batch."""
        import torch

        length = new_mask.shape[1]
        if self._cache is None:
            self._cache, self._mask = cache, new_mask
        else:
            width = max(self._mask.shape[1], length)
            for old, new in zip(self._cache.layers, cache.layers):
                old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)])
                old.values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)])
            self._mask = torch.cat([_pad_left(self._mask, width, dim=1),
                                    _pad_left(new_mask, width, dim=1)])
        self._rows += rows
        self._next = torch.cat([self._next, torch.tensor(tokens, dtype=torch.long)])
        self._positions = torch.cat([self._positions, new_mask.sum(1)])

    def _drop(self, leaves: Any) -> None:
        """Remove the rows for which `leaves(row)` is true; trim all-padding columns."""
        import torch

        keep = [i for i, row in enumerate(self._rows) if not leaves(row)]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset_batch()
            return
        index = torch.tensor(keep)
        self._rows = [self._rows[i] for i in keep]
        self._mask, self._next, self._positions = self._mask[index], self._next[index], self._positions[index]
        self._cache.batch_select_indices(index)
        padding = int((self._mask.sum(0) == 0).long().cumprod(0).sum())
        if padding:
            self._mask = self._mask[:, padding:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[..., padding:, :], layer.values[..., padding:, :]

    def _reset_batch(self) -> None:
        import torch

        self._rows, self._cache = [], None
        self._mask = torch.zeros(0, 0, dtype=torch.long)
        self._next = torch.zeros(0, dtype=torch.long)
        self._positions = torch.zeros(0, dtype=torch.long)


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the OS, as glibc otherwise keeps them: an idle server's
    RSS then no longer holds the KV cache of its last busy moment (~40-90 MB for GPT-2 at 16
    clients). It costs a few ms, paid only when the engine goes idle."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc: nothing to do
        pass


def _pad_left(tensor: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    import torch

    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _context_length(config: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return 2048


def _stop_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """End-of-text and every other special token: plain-text completion ends at any of them."""
    ids = set(tokenizer.all_special_ids)
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return frozenset(int(i) for i in ids)
