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
passes while it waits ends with `timeout` without being prefilled. A request that waits for
room in the KV cache lets later ones that fit pass it, for HOLD_AGING_S; then none pass it
until it fits (so it is not starved).

User versions (LoRA adapters on llama.cpp; `run_in_engine` loads them between steps): a
request's `version` (None: the base model) says which adapter its rows run with. Rows of
different versions cannot share a forward pass, so the backend runs one per version each
step; so that one busy user does not starve the others, batch slots and the per-step prefill
budget go round the versions in turns (each version's oldest first), not oldest first overall.

`observe_load`, if given, is called from the engine thread with a `Load` (rows running and
waiting, KV cells reserved) whenever that changes: the service turns it into gauges.

New requests are prefilled right away, in the same forward pass as the running rows' next
tokens (so a first token does not wait for the batch to finish), in chunks: each step runs
at most `prefill_chunk_tokens` prompt tokens, oldest prompt first, as vLLM's chunked prefill
and llama-server's batch size do, so a long prompt does not stall the running rows' tokens
for its whole prefill (a 200-token stream waited 14.5 s while three 800-token prompts were
prefilled). A prompt joins the batch after its last chunk. The model and its KV
cache live in a `Backend` (backend.py): torch_backend.py (transformers) or llama_backend.py
(GGUF in llama.cpp). Here: the engine thread, admission, room in the KV cache, the batch's
rows and their prefill and decode steps. What a row's tokens become (text, stop strings,
logprobs, finish reasons, the stream) is generation.py's; both are the same for every backend.

torch is imported inside the functions that run the model: BentoML's parent process
imports this module with the service definition but never runs a model, and importing
torch there would cost it about 500 MB.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from services.autocomplete.backend import Backend, PromptChunk
from services.autocomplete.generation import ChoiceOutput, FinishReason, GenerationStream, PromptLogprobs
from services.autocomplete.sampling import SamplingParams, choose_tokens, new_generator, only
from services.autocomplete.settings import Settings
from services.autocomplete.token_prefix import TokenPrefixes
from services.core.admission import Busy
from services.core.memory import return_freed_memory

if TYPE_CHECKING:
    import numpy as np
    import torch

logger = logging.getLogger("modelport.autocomplete")
T = TypeVar("T")

HOLD_AGING_S = 5.0  # how long later requests may pass one waiting for KV room
# A prompt token whose logits are wanted costs a vocabulary-wide row (the output layer, then
# logsumexp and top-k over it): on the tiny GPT-2 (vocabulary 50k, 2 busy cores) a 256-token
# chunk took 0.7-1.1 s with them and their logprobs, 0.2 s without; so echo's tokens count 4
# times against the per-step prefill budget.
ECHO_TOKEN_COST = 4


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
    version: int | None = None  # the backend's id of the user version it runs with (None: the base)
    held_since: float | None = None  # when it first found no room in the KV cache

    @property
    def indices(self) -> range:
        return range(self.first_index, self.first_index + self.n)

    @property
    def every_position(self) -> bool:  # echo's prompt logprobs need every position's logits
        return self.params.echo and self.params.logprobs is not None

    @property
    def kv_cells(self) -> int:
        return kv_cells_needed(self.n, len(self.prompt), self.params.max_tokens)


@dataclass
class _Prefill:
    """A prompt being prefilled, chunk by chunk, for the requests that share it (the same
    prompt, e.g. a suggestion's two requests, runs once)."""

    key: int  # the backend's name for it
    prompt: list[int]
    every_position: bool
    done: int  # prompt tokens whose KV is in the cache
    version: int | None = None
    requests: list[_Request] = field(default_factory=list)
    echo: PromptLogprobs | None = None  # the prompt's logprobs, as its chunks run

    @property
    def rows(self) -> int:
        return sum(r.n for r in self.requests)


@dataclass
class _Row:
    """One choice being generated: a row of the batch."""

    request: _Request
    output: ChoiceOutput
    generator: torch.Generator
    rest: bytes = b""  # of the request's required start (`SamplingParams.prefix`), still to come

    @property
    def params(self) -> SamplingParams:
        return self.request.params


class Engine:
    def __init__(
        self,
        load: Callable[[], Backend],
        *,
        max_batch_size: int = 32,
        max_waiting_rows: int | None = None,
        prefill_chunk_tokens: int = Settings.prefill_chunk_tokens,
        observe_load: Callable[[Load], None] | None = None,
    ) -> None:
        """Start the engine thread, which calls `load()` for its `Backend`; wait for it.

        The model is loaded in the engine's own thread because torch's OpenMP pool is per
        thread: a second thread doing parallel work makes libgomp count more threads than
        cores and stop spinning between parallel regions (`tune_openmp`). With the model
        loaded in the main thread, an int8 decode step took 54 ms in the engine thread
        instead of 31 ms (SmolLM2-135M, 2 cores).
        """
        self.max_batch_size = max_batch_size
        self.max_waiting_rows = max_waiting_rows  # None: no bound (in-process use)
        self._inbox: queue.Queue[_Request | _Call] = queue.Queue()
        self._waiting_rows = 0  # rows submitted and not yet taken into the batch (or ended)
        self._waiting_lock = threading.Lock()  # submit runs on the event loop, _admit in the engine
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self._waiting: deque[_Request] = deque()  # taken from the inbox, in order
        self._prefills: list[_Prefill] = []  # admitted, being prefilled, oldest first
        self._keys = itertools.count()
        self._rows: list[_Row] = []
        self._next: list[int] = []  # the token each row feeds in next
        self.step_seconds: float | None = None  # a decode step's recent duration (moving average)
        self._observe_load = observe_load
        self._last_load: Load | None = None
        loaded = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(load, loaded, failed), name="autocomplete-engine", daemon=True
        )
        self._thread.start()
        loaded.wait()
        if failed:
            raise failed[0]

    def _load(self, load: Callable[[], Backend]) -> None:
        self.backend = load()
        self.context_length = self.backend.context_length
        self.vocab_size = self.backend.vocab_size
        self.kv_capacity = self.backend.kv_capacity
        self.prefixes = TokenPrefixes(self.backend.token_bytes())
        self._reset_batch()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(ids)

    def submit(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        *,
        n: int = 1,
        timeout_s: float | None = None,
        version: int | None = None,
    ) -> GenerationStream:
        """Queue prompts (token ids) for `n` choices each, run with user `version`'s adapter (None:
        the base model); call from the event loop."""
        if not prompts or not all(prompts):
            raise ValueError("every prompt needs at least one token")
        rows = len(prompts) * n
        stream = GenerationStream(rows, timeout_s)
        with self._waiting_lock:
            # An empty queue takes any request, so one larger than the bound is not refused forever.
            if (
                self.max_waiting_rows is not None
                and self._waiting_rows
                and self._waiting_rows + rows > self.max_waiting_rows
            ):
                raise Busy(
                    f"the model is busy: {self._waiting_rows} sequences are waiting for a "
                    "place in the batch; retry after the time in Retry-After"
                )
            self._waiting_rows += rows
        stream.stats.prompt_tokens = sum(len(p) for p in prompts)
        for i, prompt in enumerate(prompts):
            self._inbox.put(_Request(list(prompt), params, n, i * n, stream, version))
        return stream

    def run_in_engine(self, work: Callable[[Backend], Any]) -> Future[Any]:
        """`work(backend)` in the engine thread, between two steps (loading or freeing a user
        version's adapter: nothing else touches the backend meanwhile); its result or error."""
        call = _Call(work, Future())
        self._inbox.put(call)
        return call.future

    # --- the worker thread -------------------------------------------------------------

    def _run(self, load: Callable[[], Backend], loaded: threading.Event, failed: list[BaseException]) -> None:
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
                if self._idle() and self._inbox.empty():
                    return_freed_memory()  # about to wait idle: the KV cache of the last busy moment goes
                self._admit()
                self._report_load()
                self._step()
                self._report_load()

    def _idle(self) -> bool:
        return not self._rows and not self._prefills and not self._waiting

    def load(self) -> Load:
        """Read in the engine thread (`observe_load`); elsewhere, a snapshot that may be stale."""
        running = len(self._rows) + sum(p.rows for p in self._prefills)
        return Load(running, self._waiting_rows, self._kv_reserved(), self.kv_capacity)

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

    def _admit(self) -> None:
        """Start prefilling the waiting requests there is room for (blocking while there is
        nothing else to do): as many rows as the batch holds and, where the backend's KV cache is
        a fixed pool, as many cells as it has free. One that does not fit waits for running rows
        to finish; later ones that fit pass it for HOLD_AGING_S, then none do."""
        self._drop(self._expired)  # cancelled rows leave first: their room goes to new requests
        self._drop_prefills()
        self._take_inbox(block=self._idle())
        rows = len(self._rows) + sum(p.rows for p in self._prefills)
        room = self._kv_room()
        for request in in_turns(self._waiting, lambda r: r.version):
            if rows >= self.max_batch_size:
                break
            if request.stream.cancelled:
                self._taken(request)
                continue
            deadline = request.stream.deadline
            if deadline is not None and time.monotonic() > deadline:  # waited all its time
                self._taken(request)
                self._fail(request, reason=FinishReason.TIMEOUT)
                continue
            need = request.kv_cells
            if room is not None and need > room:  # cached prefixes make way first
                room += self.backend.evict(need - room)
            if room is not None and need > room:
                if not self._rows and not self._prefills:  # (prepare refuses these with a 400)
                    self._taken(request)
                    self._fail(request, f"needs {need} KV cache cells; the cache has {room}")
                    continue
                now = time.monotonic()
                request.held_since = request.held_since or now
                if now - request.held_since > HOLD_AGING_S:
                    break  # it has let others pass long enough: its turn comes when rows leave
                continue
            self._taken(request)
            room = None if room is None else room - need
            self._begin(request)
            rows += request.n

    def _take_inbox(self, block: bool) -> None:
        """Move what was submitted into `_waiting` (waiting for one if `block`); run the calls."""
        try:
            item = self._inbox.get() if block else self._inbox.get_nowait()
            while True:
                if isinstance(item, _Call):
                    item.run(self.backend)
                else:
                    self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass

    def _begin(self, request: _Request) -> None:
        """`request` starts prefilling: its own prompt, or one being prefilled that it equals."""
        stats = request.stream.stats
        stats.started_at = stats.started_at or time.perf_counter()
        if not request.every_position:
            for prefill in self._prefills:
                if (
                    not prefill.every_position
                    and prefill.version == request.version
                    and prefill.prompt == request.prompt
                ):
                    prefill.requests.append(request)
                    stats.cached_tokens += len(request.prompt)  # run once, for the other
                    return
        key = next(self._keys)
        # (only a backend that serves versions gets one: the base's requests begin as before)
        reused = (
            self.backend.begin(key, request.prompt, request.every_position)
            if request.version is None
            else self.backend.begin(key, request.prompt, request.every_position, version=request.version)
        )
        stats.cached_tokens += reused
        echo = (
            PromptLogprobs(self.backend.decode, request.prompt, request.params.logprobs or 0)
            if request.every_position
            else None
        )
        self._prefills.append(
            _Prefill(key, request.prompt, request.every_position, reused, request.version, [request], echo)
        )

    def _drop_prefills(self) -> None:
        """Cancelled and timed-out requests leave their prefill; one left with none ends."""
        now = time.monotonic()
        for prefill in list(self._prefills):
            keep = []
            for request in prefill.requests:
                if request.stream.cancelled:
                    continue
                if request.stream.deadline is not None and now > request.stream.deadline:
                    self._fail(request, reason=FinishReason.TIMEOUT)
                    continue
                keep.append(request)
            prefill.requests = keep
            if not keep:
                self._prefills.remove(prefill)
                self.backend.abandon(prefill.key)

    def _kv_reserved(self) -> int:
        """KV cells the running rows and the prompts being prefilled may fill (their prompts
        and all their tokens)."""
        return sum(
            kv_cells_needed(1, len(row.request.prompt), row.params.max_tokens) for row in self._rows
        ) + sum(r.kv_cells for p in self._prefills for r in p.requests)

    def _kv_room(self) -> int | None:
        """KV cells free for new requests: not reserved by running rows, nor held by the
        backend's cached prefixes (which `evict` frees on demand)."""
        if self.kv_capacity is None:
            return None
        return self.kv_capacity - self._kv_reserved() - self.backend.cached_cells

    def _taken(self, request: _Request) -> None:
        """`request` no longer waits: it starts now, or has ended."""
        self._waiting.remove(request)
        with self._waiting_lock:
            self._waiting_rows -= request.n

    @staticmethod
    def _fail(request: _Request, why: str = "", reason: FinishReason = FinishReason.ERROR) -> None:
        if why:
            logger.error("request failed: %s", why)
        for index in request.indices:
            request.stream.fail(index, reason)

    def _chunks(self) -> list[PromptChunk]:
        """This step's prefill: up to `prefill_chunk_tokens` prompt tokens, oldest prompt of each
        version first, the versions in turns. A token whose logits are wanted (echo's logprobs)
        counts ECHO_TOKEN_COST times."""
        chunks, budget = [], self.prefill_chunk_tokens
        for prefill in in_turns(self._prefills, lambda p: p.version):
            cost = ECHO_TOKEN_COST if prefill.every_position else 1
            if budget < cost:
                break
            end = min(len(prefill.prompt), prefill.done + budget // cost)
            chunks.append(PromptChunk(prefill.key, prefill.prompt, prefill.done, end, prefill.every_position))
            budget -= (end - prefill.done) * cost
        return chunks

    def _step(self) -> None:
        """One forward pass: chunks of the prompts being prefilled and the running rows' next
        tokens together (as llama.cpp's server batches them); then the rows' next tokens, and
        the prompts whose last chunk ran join the batch. (Cancelled and timed-out rows already
        left in `_admit`.)"""
        chunks = self._chunks()
        if not chunks and not self._rows:
            return
        started, decoding = time.perf_counter(), bool(self._rows)
        try:
            prompt_logits, logits = self.backend.step(chunks, self._next)
            if self._rows:
                self._advance(logits)
            prefilled = self._prefilled(chunks, prompt_logits)
        except Exception:  # a failed pass fails its sequences, never the worker
            logger.exception("forward pass failed; ending its sequences")
            for prefill in self._prefills:
                for request in prefill.requests:
                    self._fail(request)
            for row in self._rows:
                row.request.stream.fail(row.output.index)
            self._prefills = []
            self._reset_batch()
            return
        if decoding:
            elapsed = time.perf_counter() - started
            self.step_seconds = (
                elapsed if self.step_seconds is None else 0.9 * self.step_seconds + 0.1 * elapsed
            )
        if prefilled:
            self._join(prefilled)

    def _prefilled(
        self, chunks: list[PromptChunk], logits: list[torch.Tensor]
    ) -> list[tuple[_Prefill, torch.Tensor]]:
        """Record the chunks that ran (echo's logprobs from their logits, at once); the prompts
        whose last chunk it was, with the logits for their first token."""
        by_key = {prefill.key: prefill for prefill in self._prefills}
        done = []
        for chunk, rows in zip(chunks, logits):
            prefill = by_key[chunk.key]
            prefill.done = chunk.end
            if prefill.echo is not None:
                prefill.echo.add(chunk.start, rows)
            if chunk.last:
                done.append((prefill, rows[-1:]))
        self._prefills = [p for p in self._prefills if p.done < len(p.prompt)]
        return done

    def _join(self, prefilled: list[tuple[_Prefill, torch.Tensor]]) -> None:
        """The prefilled requests' first tokens; the rows that go on join the batch. A request
        whose start fails fails alone."""
        keys, rows, tokens = [], [], []
        for prefill, logits in prefilled:
            echoed = prefill.echo.entries if prefill.echo is not None else []
            joined = False
            for request in prefill.requests:
                try:
                    started = self._start(request, logits, echoed)
                except Exception:
                    logger.exception("starting a request failed; ending it")
                    self._fail(request)
                    continue
                for row, token in started:
                    keys.append(prefill.key)
                    rows.append(row)
                    tokens.append(token)
                    joined = True
            if not joined:
                self.backend.abandon(prefill.key)
        self.backend.join(keys)
        self._rows += rows
        self._next += tokens

    def _start(
        self, request: _Request, logits: torch.Tensor, echoed: Sequence[Any]
    ) -> list[tuple[_Row, int]]:
        """Open the request's choices, pick their first tokens; the rows that go on, with theirs."""
        params, n = request.params, request.n
        outputs = ChoiceOutput.open(
            request.stream, request.indices, request.prompt, params, self.backend, echoed
        )
        rows = [
            _Row(
                request,
                output,
                new_generator(None if params.seed is None else params.seed + output.index),
                params.prefix.encode(),
            )
            for output in outputs
        ]
        if params.max_tokens == 0:
            for row in rows:
                row.output.finish(FinishReason.LENGTH)
            return []
        if params.first_token_rank:
            import torch

            last = logits[-1:].float()
            if rows[0].rest:
                last = only(last[0], self.prefixes.allowed(rows[0].rest))[None]
            logprobs: list[torch.Tensor | None] = list(torch.log_softmax(last, dim=-1).expand(n, -1))
            scores = last[0].clone()  # an alternative that ends at once is no alternative
            scores[list(self.backend.stop_token_ids)] = float("-inf")
            skip = params.first_token_rank - 1
            # (Where fewer tokens agree with a required start than rows, the banned ones the rest
            # get stop them in _accept.)
            tokens = torch.topk(scores, skip + n).indices.tolist()[skip:]
        else:
            tokens, logprobs = choose_tokens(
                logits[-1:].expand(n, -1),
                [params] * n,
                [r.generator for r in rows],
                [request.prompt] * n,
                [[]] * n,
                [self._allowed(row) for row in rows],
            )
        stats = request.stream.stats
        stats.first_token_at = stats.first_token_at or time.perf_counter()
        return [
            (row, token) for row, token, lp in zip(rows, tokens, logprobs) if self._accept(row, token, lp)
        ]

    def _advance(self, logits: torch.Tensor) -> None:
        """Each running row's next token from its logits; the rows that finished leave."""
        rows = self._rows
        tokens, logprobs = choose_tokens(
            logits,
            [r.params for r in rows],
            [r.generator for r in rows],
            [r.request.prompt for r in rows],
            [r.output.tokens for r in rows],
            [self._allowed(r) for r in rows],
        )
        done = {id(row) for row, token, lp in zip(rows, tokens, logprobs) if not self._accept(row, token, lp)}
        self._next = tokens
        self._drop(lambda row: id(row) in done)

    def _allowed(self, row: _Row) -> np.ndarray | None:
        return self.prefixes.allowed(row.rest) if row.rest else None

    def _accept(self, row: _Row, token: int, logprobs: torch.Tensor | None) -> bool:
        if row.rest:
            if not self.prefixes.agrees(row.rest, token):  # no token agreed (every one was banned)
                row.output.finish(FinishReason.STOP)
                return False
            row.rest = self.prefixes.consumed(row.rest, token)
        return row.output.accept(token, logprobs)

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
        self.backend.reset()  # begun prompts too: callers fail their requests


@dataclass
class _Call:
    """Work for the engine thread (`Engine.run_in_engine`)."""

    work: Callable[[Backend], Any]
    future: Future[Any]

    def run(self, backend: Backend) -> None:
        try:
            self.future.set_result(self.work(backend))
        except Exception as failed:  # the caller gets it; the engine goes on
            self.future.set_exception(failed)


def in_turns(items: Sequence[T], version_of: Callable[[T], Any]) -> list[T]:
    """`items` (oldest first) reordered so the versions take turns: every version's oldest,
    then every version's second, ...; within a turn, the older first."""
    rank: dict[Any, int] = {}
    turns = []
    for age, item in enumerate(items):
        version = version_of(item)
        rank[version] = rank.get(version, -1) + 1
        turns.append((rank[version], age, item))
    return [item for *_, item in sorted(turns, key=lambda t: (t[0], t[1]))]


def kv_cells_needed(rows: int, prompt_tokens: int, max_tokens: int) -> int:
    """KV cells a request may fill: its prompt and all its tokens, for each of its rows."""
    return rows * (prompt_tokens + max_tokens)
