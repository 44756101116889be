"""Continuous batching for one causal LM, the scheduling side: every decode step is one
forward pass over all running sequences; new requests join between steps and finished ones
leave. No HTTP here.

    engine = Engine(lambda: TorchBackend(*load_causal_lm(path)), max_batch_size=32)
    stream = engine.submit([engine.encode("Once upon")], SamplingParams(max_tokens=20), n=2)
    async for delta in stream:          # Delta(index, text, logprobs, finish_reason)
        print(delta.index, delta.text, delta.finish_reason)
    stream.cancel()                     # e.g. the client went away: its rows leave the batch

`submit` raises `services.core.admission.Busy` when more than `max_waiting_rows` sequences
already wait for a batch slot (the service answers 429 + Retry-After): the queue in front of
the batch is bounded, like the HTTP queue in front of the service. A request whose timeout
passes while it waits ends with `timeout` without being prefilled.

`observe_load`, if given, is called from the engine thread with a `Load` (rows running and
waiting, KV cells reserved) whenever that changes: the service turns it into gauges.

New requests are prefilled right away, together when several are waiting and in the same
forward pass as the running rows' next tokens (so a first token does not wait for the batch
to finish, and the batch does not wait for a pass of the new prompts'), then join the batch. The model and its KV
cache live in a `Backend` (backend.py): torch_backend.py (transformers) or llama_backend.py
(GGUF in llama.cpp). Here: the engine thread, admission, room in the KV cache, the batch's
rows and their prefill and decode steps. What a row's tokens become (text, stop strings,
logprobs, finish reasons, the stream) is generation.py's; both are the same for every backend.

torch is imported inside the functions that run the model: BentoML's parent process
imports this module with the service definition but never runs a model, and importing
torch there would cost it about 500 MB.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.autocomplete.backend import Backend
from services.autocomplete.generation import ChoiceOutput, FinishReason, GenerationStream
from services.autocomplete.sampling import SamplingParams, choose_tokens, new_generator
from services.core.admission import Busy
from services.core.memory import return_freed_memory

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("modelport.autocomplete")

PREFILL_MAX_REQUESTS = 16  # new requests prefilled together between two decode steps ...
PREFILL_MAX_TOKENS = 2048  # ... and their prompt tokens (bounds the pause for running rows)


@dataclass(frozen=True)
class Load:
    """How busy the engine is, in rows (one per choice: a request with n=3 is 3 rows)."""

    running: int  # rows in the batch
    waiting: int  # rows submitted, not yet in the batch
    kv_used: int  # KV cells the running rows may fill (reserved: prompt + max_tokens each)
    kv_capacity: int | None  # None: the backend's cache grows as needed


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    n: int
    first_index: int  # of its choices in the stream
    stream: GenerationStream

    @property
    def indices(self) -> range:
        return range(self.first_index, self.first_index + self.n)


@dataclass
class _Row:
    """One choice being generated: a row of the batch."""

    request: _Request
    output: ChoiceOutput
    generator: torch.Generator

    @property
    def params(self) -> SamplingParams:
        return self.request.params


class Engine:
    def __init__(self, load: Callable[[], Backend], *, max_batch_size: int = 32,
                 max_waiting_rows: int | None = None,
                 observe_load: Callable[[Load], None] | None = None) -> None:
        """Start the engine thread, which calls `load()` for its `Backend`; wait for it.

        The model is loaded in the engine's own thread because torch's OpenMP pool is per
        thread: a second thread doing parallel work makes libgomp count more threads than
        cores and stop spinning between parallel regions (`tune_openmp`). With the model
        loaded in the main thread, an int8 decode step took 54 ms in the engine thread
        instead of 31 ms (SmolLM2-135M, 2 cores).
        """
        self.max_batch_size = max_batch_size
        self.max_waiting_rows = max_waiting_rows  # None: no bound (in-process use)
        self._inbox: queue.Queue[_Request] = queue.Queue()
        self._waiting_rows = 0  # rows submitted and not yet taken into the batch (or ended)
        self._waiting_lock = threading.Lock()  # submit runs on the event loop, _admit in the engine
        self._rows: list[_Row] = []
        self._next: list[int] = []  # the token each row feeds in next
        self._held: _Request | None = None  # first in line, waiting for room in the KV cache
        self._observe_load = observe_load
        self._last_load: Load | None = None
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
        rows = len(prompts) * n
        stream = GenerationStream(rows, timeout_s)
        with self._waiting_lock:
            # An empty queue takes any request, so one larger than the bound is not refused forever.
            if (self.max_waiting_rows is not None and self._waiting_rows
                    and self._waiting_rows + rows > self.max_waiting_rows):
                raise Busy(f"the model is busy: {self._waiting_rows} sequences are waiting for a "
                           "place in the batch; retry after the time in Retry-After")
            self._waiting_rows += rows
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
                    return_freed_memory()  # about to wait idle: the KV cache of the last busy moment goes
                new = self._admit()
                self._report_load()
                self._step(new)
                self._report_load()

    def load(self) -> Load:
        """Read in the engine thread (`observe_load`); elsewhere, a snapshot that may be stale."""
        return Load(len(self._rows), self._waiting_rows, self._kv_reserved(), self.kv_capacity)

    def _report_load(self) -> None:
        if self._observe_load is None:
            return
        load = self.load()
        if load != self._last_load:
            self._last_load = load
            try:
                self._observe_load(load)
            except Exception:  # metrics never stop the engine
                logger.exception("observe_load failed")

    def _admit(self) -> list[_Request]:
        """The waiting requests to prefill now, together (blocking while there is nothing else to do).

        At most PREFILL_MAX_REQUESTS / PREFILL_MAX_TOKENS at a time, so a burst of new
        requests does not stall the tokens of the running ones for long; and, where the
        backend's KV cache is a fixed pool, only as many as it has room for: the next in
        line waits (in order) until running rows finish.
        """
        self._drop(self._expired)  # cancelled rows leave first: their room goes to new requests
        waiting: list[_Request] = []
        rows, tokens = len(self._rows), 0
        room = self._kv_room()
        while len(waiting) < PREFILL_MAX_REQUESTS and rows < self.max_batch_size:
            request = self._next_request(block=not self._rows and not waiting)
            if request is None:
                break
            if request.stream.cancelled:
                self._taken(request)
                continue
            deadline = request.stream.deadline
            if deadline is not None and time.monotonic() > deadline:  # waited all its time
                self._taken(request)
                self._fail(request, reason=FinishReason.TIMEOUT)
                continue
            need = kv_cells_needed(request.n, len(request.prompt), request.params.max_tokens)
            if room is not None and need > room:  # cached prefixes make way first
                room += self.backend.evict(need - room)
            if room is not None and need > room:
                if self._rows or waiting:
                    self._held = request  # its turn comes when rows leave
                    break
                self._taken(request)
                self._fail(request, f"needs {need} KV cache cells; the cache has {room}")
                continue
            self._taken(request)
            room = None if room is None else room - need
            stats = request.stream.stats
            stats.started_at = stats.started_at or time.perf_counter()
            waiting.append(request)
            rows, tokens = rows + request.n, tokens + len(request.prompt)
            if tokens >= PREFILL_MAX_TOKENS:
                break
        return waiting

    def _next_request(self, block: bool) -> _Request | None:
        if self._held is not None:
            request, self._held = self._held, None
            return request
        try:
            return self._inbox.get(block=block)
        except queue.Empty:
            return None

    def _kv_reserved(self) -> int:
        """KV cells the running rows may fill (their prompts and all their tokens)."""
        return sum(kv_cells_needed(1, len(row.request.prompt), row.params.max_tokens)
                   for row in self._rows)

    def _kv_room(self) -> int | None:
        """KV cells free for new requests: not reserved by running rows, nor held by the
        backend's cached prefixes (which `evict` frees on demand)."""
        if self.kv_capacity is None:
            return None
        return self.kv_capacity - self._kv_reserved() - self.backend.cached_cells

    def _taken(self, request: _Request) -> None:
        """`request` no longer waits: it joins the batch now, or has ended."""
        with self._waiting_lock:
            self._waiting_rows -= request.n

    @staticmethod
    def _fail(request: _Request, why: str = "", reason: FinishReason = FinishReason.ERROR) -> None:
        if why:
            logger.error("request failed: %s", why)
        for index in request.indices:
            request.stream.fail(index, reason)

    def _step(self, new: list[_Request]) -> None:
        """One forward pass: the new prompts' prefill and the running rows' next tokens together
        (as llama.cpp's server batches them: a new request does not stall the batch with a pass
        of its own); then the rows' next tokens, and the new requests' rows join. (Cancelled and
        timed-out rows already left in `_admit`.)"""
        if not new and not self._rows:
            return
        try:
            every_position = any(r.params.echo and r.params.logprobs is not None for r in new)
            prompt_logits, logits = self.backend.step([r.prompt for r in new], every_position,
                                                      self._next)
            reused = list(self.backend.reused_tokens)  # before rows leave (a reset clears it)
            if self._rows:
                self._advance(logits)
        except Exception:  # a failed pass fails its sequences, never the worker
            logger.exception("forward pass failed; ending its sequences")
            for request in new:
                self._fail(request)
            for row in self._rows:
                row.request.stream.fail(row.output.index)
            self._reset_batch()
            return
        if new:
            self._join(new, prompt_logits, reused)

    def _join(self, requests: list[_Request], logits: list[torch.Tensor], reused: list[int]) -> None:
        """The prefilled requests' first tokens; the rows that go on join the batch. A request
        whose start fails fails alone."""
        sources, rows, tokens = [], [], []
        for i, request in enumerate(requests):
            request.stream.stats.cached_tokens += reused[i]
            try:
                started = self._start(request, logits[i])
            except Exception:
                logger.exception("starting a request failed; ending it")
                self._fail(request)
                continue
            for row, token in started:
                sources.append(i)
                rows.append(row)
                tokens.append(token)
        self.backend.join(sources)
        self._rows += rows
        self._next += tokens

    def _start(self, request: _Request, logits: torch.Tensor) -> list[tuple[_Row, int]]:
        """Open the request's choices, pick their first tokens; the rows that go on, with theirs."""
        params, n = request.params, request.n
        outputs = ChoiceOutput.open(request.stream, request.indices, request.prompt, params,
                                    self.backend, logits)
        rows = [_Row(request, output,
                     new_generator(None if params.seed is None else params.seed + output.index))
                for output in outputs]
        if params.max_tokens == 0:
            for row in rows:
                row.output.finish(FinishReason.LENGTH)
            return []
        if params.first_token_rank:
            import torch

            last = logits[-1:].float()
            logprobs = torch.log_softmax(last, dim=-1).expand(n, -1)
            scores = last[0].clone()  # an alternative that ends at once is no alternative
            scores[list(self.backend.stop_token_ids)] = float("-inf")
            skip = params.first_token_rank - 1
            tokens = torch.topk(scores, skip + n).indices.tolist()[skip:]
        else:
            tokens, logprobs = choose_tokens(logits[-1:].expand(n, -1), [params] * n,
                                             [r.generator for r in rows], [request.prompt] * n,
                                             [[]] * n)
        stats = request.stream.stats
        stats.first_token_at = stats.first_token_at or time.perf_counter()
        return [(row, token) for row, token, lp in zip(rows, tokens, logprobs)
                if row.output.accept(token, lp)]

    def _advance(self, logits: torch.Tensor) -> None:
        """Each running row's next token from its logits; the rows that finished leave."""
        rows = self._rows
        tokens, logprobs = choose_tokens(logits, [r.params for r in rows],
                                         [r.generator for r in rows],
                                         [r.request.prompt for r in rows],
                                         [r.output.tokens for r in rows])
        done = {id(row) for row, token, lp in zip(rows, tokens, logprobs)
                if not row.output.accept(token, lp)}
        self._next = tokens
        self._drop(lambda row: id(row) in done)

    @staticmethod
    def _expired(row: _Row) -> bool:
        stream = row.request.stream
        if stream.cancelled:
            row.output.finish(FinishReason.CANCELLED)
            return True
        if stream.deadline is not None and time.monotonic() > stream.deadline:
            row.output.finish(FinishReason.TIMEOUT)
            return True
        return False

    # --- the batch ---------------------------------------------------------------------

    def _drop(self, leaves: Any) -> None:
        """Remove the rows for which `leaves(row)` is true."""
        keep = [i for i, row in enumerate(self._rows) if not leaves(row)]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._next = [], []
            self.backend.keep([])  # (not reset: the backend may keep their cells as a cache)
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
