"""The engine's backend for GGUF models: llama.cpp (llama-cpp-python's bindings to its C API).

llama.cpp runs a GGUF's quantised weights with hand-written CPU kernels: on 2 cores (AVX2),
served, it decodes SmolLM2-135M 3.5x faster per stream than the torch backend with int8
weights, and 6x faster than plain transformers (tests/benchmarks/bench_autocomplete.py).
Its own servers either take one request at a time (llama-cpp-python's) or are a separate
C++ binary; here the engine's continuous batching drives llama.cpp's batch API instead:
every decode step is one `llama_decode` over all running sequences, each with its own
sequence id in one KV cache.

The KV cache is one pool of `kv_tokens` cells shared by all sequences (`kv_unified`), so a
prompt's cells are shared by its n choices; the engine admits a request only when the pool
has room for it (`kv_capacity`). Tokenising stays with the Hugging Face tokenizer stored
next to the GGUF (same vocabulary), so both backends cut text the same way.

Prefix caching (as llama.cpp's `cache_prompt` and vLLM's prefix caching): a new prompt starts
from the KV cells of the sequence, running or recently finished, that shares its longest
prefix, and only the rest is prefilled. A finished sequence's cells are kept (up to
`cached_sequences` of them, least recently used out first, and out at once when the engine
needs their room) under its own sequence id; it is taken over by the next prompt that
continues it, which is what a user typing on sends. A prompt's n choices share its cells
(so do requests with the same prompt: the engine prefills it once).

User versions (LoRA adapters, lora_export.py) share the one model and its context: a
sequence belongs to a version (None: the base), and each step runs one `llama_decode` per
version among its rows, with that version's adapter set on the context (llama.cpp applies an
adapter to a whole batch, never per sequence). Cached prefixes are only reused within their
version: the same text under another adapter has other KV values.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.autocomplete.backend import PromptChunk, WholePrompts
from services.autocomplete.codec import TokenizerCodec

logger = logging.getLogger("modelport.autocomplete")

# Finished sequences kept for their KV cells: one per editor typing (a new one supersedes the
# older it shares most of its text with), for a few dozen editors.
CACHED_SEQUENCES = 32
LLAMA_MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ: sequence ids in one context


def quiet_llama_cpp() -> Any:
    """llama_cpp, with llama.cpp's own log (hundreds of lines per load) cut to its errors."""
    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its log callback obeys this
    return llama_cpp


class LlamaCppBackend(WholePrompts, TokenizerCodec):
    """Engine backend (see backend.py's `Backend`) over a GGUF file, run by llama.cpp."""

    # Set by reset() (declared here: methods above it use them).
    _sequences: list[int]  # llama.cpp sequence id of each running row
    _positions: list[int]  # where each row's next token goes

    def __init__(
        self,
        gguf: Path,
        tokenizer: Any,
        *,
        threads: int,
        kv_tokens: int,
        max_sequences: int,
        batch_tokens: int = 2048,
        cached_sequences: int = CACHED_SEQUENCES,
        gpu: bool = False,
    ) -> None:
        llama = self._llama = quiet_llama_cpp()
        super().__init__(tokenizer)
        llama.llama_backend_init()
        model_params = llama.llama_model_default_params()
        model_params.n_gpu_layers = -1 if gpu else 0  # -1: every layer (and the KV cache) on the GPU
        self._model = llama.llama_model_load_from_file(str(gguf).encode(), model_params)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {gguf}")
        params = llama.llama_context_default_params()
        params.n_ctx = kv_tokens
        params.n_batch = batch_tokens  # tokens per llama_decode call; it splits them itself
        if max_sequences > LLAMA_MAX_SEQUENCES:
            raise ValueError(
                f"{max_sequences} sequences (max_batch_size + max_n): llama.cpp runs at "
                f"most {LLAMA_MAX_SEQUENCES}; lower MODELPORT_AUTOCOMPLETE_MAX_BATCH_SIZE"
            )
        cached_sequences = min(cached_sequences, LLAMA_MAX_SEQUENCES - max_sequences)
        params.n_seq_max = max_sequences + cached_sequences  # the cache has ids of its own
        params.kv_unified = True  # one pool: a prompt's cells are shared by its choices
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise ValueError(
                f"llama.cpp could not make a context for {gguf} "
                f"({kv_tokens} KV cells, {max_sequences} sequences)"
            )
        self._memory = llama.llama_get_memory(self._ctx)
        self.kv_capacity = int(llama.llama_n_ctx(self._ctx))
        self.max_sequences = int(llama.llama_n_seq_max(self._ctx))
        self._batch_tokens = batch_tokens
        self._batch = llama.llama_batch_init(batch_tokens, 0, 1)
        vocab = llama.llama_model_get_vocab(self._model)
        self.vocab_size = int(llama.llama_vocab_n_tokens(vocab))
        self.context_length = int(llama.llama_model_n_ctx_train(self._model))
        eog = {t for t in range(self.vocab_size) if llama.llama_vocab_is_eog(vocab, t)}
        self.stop_token_ids = frozenset(eog | set(tokenizer.all_special_ids))
        desc = ctypes.create_string_buffer(256)  # "<architecture> <size class> <weight type>"
        llama.llama_model_desc(self._model, desc, len(desc))
        words = desc.value.decode().split()
        millions = llama.llama_model_n_params(self._model) / 1e6
        where = "on the GPU" if gpu else f"{threads} threads"
        self.description = (
            f"llama.cpp: {millions:.0f}M-parameter {words[0]}, {words[-1]} "
            f"weights, {where}, {self.kv_capacity} KV cells"
        )
        self._cache_slots = cached_sequences
        self._adapters: dict[int, Any] = {}  # version id -> its llama_adapter_lora
        self._adapter_ids = itertools.count(1)
        self._active: int | None = None  # the version whose adapter the context has now
        self.reset()

    def load_adapter(self, path: Path) -> int:
        """Load a LoRA adapter GGUF for this model; its version id (for `begin`). ValueError
        when it does not fit the model (another architecture or shape): nothing stays loaded."""
        adapter = self._llama.llama_adapter_lora_init(self._model, str(path).encode())
        if not adapter:
            raise ValueError(
                f"llama.cpp could not apply the adapter {path.name} to this base model "
                "(another architecture, or tensors of other shapes: it was trained on another base)"
            )
        version = next(self._adapter_ids)
        self._adapters[version] = adapter
        return version

    def free_adapter(self, version: int) -> None:
        """Forget a version: its cached prefixes, then its adapter (no running row may use it)."""
        if any(self._version[s] == version for s in [*self._sequences, *self._pending.values()]):
            raise RuntimeError(f"version {version} is in use: a request still runs with it")
        for seq in [s for s in self._cached if self._version[s] == version]:
            self._drop_cached(seq)
        if self._active == version:
            self._use(None)
        self._llama.llama_adapter_lora_free(self._adapters.pop(version))

    def begin(self, key: int, prompt: list[int], every_position: bool, version: int | None = None) -> int:
        """A sequence for the prompt (run with `version`'s adapter), starting from the cells of
        the one of that version that shares its longest prefix (not when every position's logits
        are wanted: the cached ones have none)."""
        seq, start = self._start_from_cache(prompt, version) if not every_position else (None, 0)
        if seq is None:
            seq, start = self._take_free(), 0
        self._tokens[seq] = list(prompt[:start])  # grows as its chunks run
        self._version[seq] = version
        self._pending[key] = seq
        return start

    def step(self, chunks: list[PromptChunk], tokens: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One llama_decode over the prompts' chunks, each into its own sequence, and the
        running rows' next tokens."""
        entries: list[tuple[int, int, int, bool]] = []
        for chunk in chunks:
            seq, prompt = self._pending[chunk.key], chunk.prompt
            entries += [
                (prompt[p], p, seq, chunk.every_position or p == len(prompt) - 1)
                for p in range(chunk.start, chunk.end)
            ]
            self._tokens[seq] += prompt[chunk.start : chunk.end]
        entries += [
            (token, position, seq, True)
            for token, position, seq in zip(tokens, self._positions, self._sequences)
        ]
        logits = self._run(entries)
        for token, seq in zip(tokens, self._sequences):
            self._tokens[seq].append(token)
        self._positions = [p + 1 for p in self._positions]
        out: list[torch.Tensor] = []
        at = 0
        for chunk in chunks:
            rows = chunk.end - chunk.start if chunk.every_position else int(chunk.last)
            out.append(logits[at : at + rows])
            at += rows
        return out, logits[at:]

    def join(self, keys: list[int]) -> None:
        """Append one row per entry, continuing prefilled prompt `keys[i]`."""
        used: set[int] = set()
        for key in keys:
            seq = self._pending[key]
            if key in used:  # another choice of the same prompt: share its cells
                copy = self._take_free()
                self._llama.llama_memory_seq_cp(self._memory, seq, copy, -1, -1)
                self._tokens[copy] = list(self._tokens[seq])
                self._version[copy] = self._version[seq]
                seq = copy
            used.add(key)
            self._sequences.append(seq)
            self._positions.append(len(self._tokens[seq]))
        for key in used:
            del self._pending[key]

    def abandon(self, key: int) -> None:
        seq = self._pending.pop(key)
        if self._tokens[seq]:
            self._release(seq)  # the cells that ran stay as a cached prefix
        else:
            self._forget(seq)

    def keep(self, rows: list[int]) -> None:
        kept = set(rows)
        for i, seq in enumerate(self._sequences):
            if i not in kept:
                self._release(seq)
        self._sequences = [self._sequences[i] for i in rows]
        self._positions = [self._positions[i] for i in rows]

    def close(self) -> None:
        """Free the context and the model now (a server keeps its backend for good; an import's
        check does not)."""
        self._llama.llama_batch_free(self._batch)
        self._llama.llama_free(self._ctx)
        self._llama.llama_model_free(self._model)

    def reset(self) -> None:
        """Forget every sequence, the cached ones too."""
        self._llama.llama_memory_clear(self._memory, True)
        self._free = list(range(self.max_sequences))[::-1]
        self._pending: dict[int, int] = {}  # a begun prompt's key -> its sequence id
        self._sequences = []
        self._positions = []
        self._tokens: dict[int, list[int]] = {}  # the tokens in each sequence's cells, in order
        self._version: dict[int, int | None] = {}  # each sequence's version (None: the base)
        self._cached: OrderedDict[int, None] = OrderedDict()  # finished, kept; oldest first

    @property
    def cached_cells(self) -> int:
        """KV cells the cached sequences may hold (at most: some are shared with others)."""
        return sum(len(self._tokens[seq]) for seq in self._cached)

    def evict(self, cells: int) -> int:
        """Drop cached sequences, least recently used first, until `cells` are free; how many were."""
        freed = 0
        while self._cached and freed < cells:
            freed += self._drop_cached(next(iter(self._cached)))
        return freed

    def _start_from_cache(self, prompt: list[int], version: int | None) -> tuple[int | None, int]:
        """A sequence of `version` holding the longest prefix of `prompt` (leaving at least its
        last token to run), trimmed to that prefix, and the prefix's length; (None, 0) if none
        shares one.

        A cached sequence is taken over; a running one's prefix is copied into a new sequence.
        """
        best, length = None, 0
        for seq in [*self._cached, *self._sequences]:
            if self._version[seq] != version:
                continue
            shared = _common_prefix(self._tokens[seq], prompt)
            if shared > length:
                best, length = seq, shared
        length = min(length, len(prompt) - 1)
        if best is None or length == 0:
            return None, 0
        if best in self._cached:
            del self._cached[best]
            self._llama.llama_memory_seq_rm(self._memory, best, length, -1)
            return best, length
        seq = self._take_free()
        self._llama.llama_memory_seq_cp(self._memory, best, seq, 0, length)
        self._version[seq] = version
        return seq, length

    def _take_free(self) -> int:
        if not self._free and self._cached:
            self._drop_cached(next(iter(self._cached)))
        return self._free.pop()

    def _release(self, seq: int) -> None:
        """A sequence is done: keep it for its cells, superseding any cached sequence that shares
        half its tokens or more with it (an older keystroke of the same text, a sibling choice)."""
        if not self._cache_slots:
            self._forget(seq)
            return
        tokens = self._tokens[seq]
        for old in list(self._cached):
            if self._version[old] == self._version[seq] and 2 * _common_prefix(
                self._tokens[old], tokens
            ) >= len(self._tokens[old]):
                self._drop_cached(old)
        self._cached[seq] = None
        while len(self._cached) > self._cache_slots:
            self._drop_cached(next(iter(self._cached)))

    def _drop_cached(self, seq: int) -> int:
        del self._cached[seq]
        return self._forget(seq)

    def _forget(self, seq: int) -> int:
        self._llama.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self._free.append(seq)
        self._version.pop(seq, None)
        return len(self._tokens.pop(seq))

    def _run(self, entries: list[tuple[int, int, int, bool]]) -> torch.Tensor:
        """The logits of the (token, position, sequence, wants logits) entries that want them,
        in order, [n, vocab]: one `_decode` per version among the entries' sequences."""
        groups: dict[int | None, list[int]] = {}
        for i, (_, _, seq, _) in enumerate(entries):
            groups.setdefault(self._version[seq], []).append(i)
        if len(groups) <= 1:
            self._use(next(iter(groups), None))
            return self._decode(entries)
        row_of, rows = {}, 0  # entry index -> its row among the logits returned
        for i, (*_, wants) in enumerate(entries):
            if wants:
                row_of[i], rows = rows, rows + 1
        logits = torch.empty(rows, self.vocab_size)
        # The version whose adapter is set goes first: one switch fewer (each costs a graph reserve).
        order = sorted(groups, key=lambda v: v != self._active)
        for version in order:
            members = groups[version]
            self._use(version)
            got = self._decode([entries[i] for i in members])
            logits[[row_of[i] for i in members if i in row_of]] = got
        return logits

    def _use(self, version: int | None) -> None:
        """Set `version`'s adapter on the context (none for the base), if not set already."""
        if version == self._active:
            return
        llama = self._llama
        if version is None:
            llama.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            adapters = (llama.llama_adapter_lora_p_ctypes * 1)(self._adapters[version])
            llama.llama_set_adapters_lora(self._ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        self._active = version

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> torch.Tensor:
        """llama_decode over the entries, in chunks of the batch size; the logits of the
        entries that want them, in order, [n, vocab]."""
        batch, outputs = self._batch, []
        for start in range(0, len(entries), self._batch_tokens):
            chunk = entries[start : start + self._batch_tokens]
            batch.n_tokens = len(chunk)
            for i, (token, position, seq, wants) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.logits[i] = token, position, wants
                batch.n_seq_id[i], batch.seq_id[i][0] = 1, seq
            status = self._llama.llama_decode(self._ctx, batch)
            if status != 0:  # 1: no room in the KV cache (the engine's admission prevents it)
                raise RuntimeError(f"llama_decode returned {status}")
            wanted = sum(1 for *_, wants in chunk if wants)
            if wanted:
                pointer = self._llama.llama_get_logits(self._ctx)
                outputs.append(np.ctypeslib.as_array(pointer, shape=(wanted, self.vocab_size)).copy())
        if not outputs:
            return torch.zeros(0, self.vocab_size)
        return torch.from_numpy(np.concatenate(outputs) if len(outputs) > 1 else outputs[0])


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` share from their start."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low
