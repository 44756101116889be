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
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.autocomplete.codec import TokenizerCodec

logger = logging.getLogger("modelport.autocomplete")


def quiet_llama_cpp() -> Any:
    """llama_cpp, with llama.cpp's own log (hundreds of lines per load) cut to its errors."""
    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its log callback obeys this
    return llama_cpp


class LlamaCppBackend(TokenizerCodec):
    """Engine backend (see backend.py's `Backend`) over a GGUF file, run by llama.cpp."""

    def __init__(self, gguf: Path, tokenizer: Any, *, threads: int, kv_tokens: int,
                 max_sequences: int, batch_tokens: int = 2048) -> None:
        llama = self._llama = quiet_llama_cpp()
        super().__init__(tokenizer)
        llama.llama_backend_init()
        model_params = llama.llama_model_default_params()
        self._model = llama.llama_model_load_from_file(str(gguf).encode(), model_params)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {gguf}")
        params = llama.llama_context_default_params()
        params.n_ctx = kv_tokens
        params.n_batch = batch_tokens  # tokens per llama_decode call; it splits them itself
        params.n_seq_max = max_sequences
        params.kv_unified = True  # one pool: a prompt's cells are shared by its choices
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise ValueError(f"llama.cpp could not make a context for {gguf} "
                             f"({kv_tokens} KV cells, {max_sequences} sequences)")
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
        self.description = (f"llama.cpp: {millions:.0f}M-parameter {words[0]}, {words[-1]} "
                            f"weights, {threads} threads, {self.kv_capacity} KV cells")
        self._pending: list[tuple[int, int]] = []  # (sequence id, length) of prefilled prompts
        self.reset()

    def prefill(self, prompts: list[list[int]], every_position: bool) -> list[torch.Tensor]:
        """Each prompt into its own sequence; each one's logits (every position, or the last)."""
        self._pending = [(self._free.pop(), len(prompt)) for prompt in prompts]
        entries = [(token, position, seq, every_position or position == len(prompt) - 1)
                   for prompt, (seq, _) in zip(prompts, self._pending)
                   for position, token in enumerate(prompt)]
        logits = self._run(entries)
        out, start = [], 0
        for prompt in prompts:
            rows = len(prompt) if every_position else 1
            out.append(logits[start:start + rows])
            start += rows
        return out

    def join(self, sources: list[int]) -> None:
        """Append one row per entry, continuing prefilled prompt `sources[i]`."""
        used: set[int] = set()
        for source in sources:
            seq, length = self._pending[source]
            if source in used:  # another choice of the same prompt: share its cells
                copy = self._free.pop()
                self._llama.llama_memory_seq_cp(self._memory, seq, copy, -1, -1)
                seq = copy
            used.add(source)
            self._sequences.append(seq)
            self._positions.append(length)
        for source, (seq, _) in enumerate(self._pending):
            if source not in used:
                self._release(seq)
        self._pending = []

    def decode_step(self, tokens: list[int]) -> torch.Tensor:
        entries = [(token, position, seq, True)
                   for token, position, seq in zip(tokens, self._positions, self._sequences)]
        logits = self._run(entries)
        self._positions = [p + 1 for p in self._positions]
        return logits

    def keep(self, rows: list[int]) -> None:
        kept = set(rows)
        for i, seq in enumerate(self._sequences):
            if i not in kept:
                self._release(seq)
        self._sequences = [self._sequences[i] for i in rows]
        self._positions = [self._positions[i] for i in rows]

    def reset(self) -> None:
        self._llama.llama_memory_clear(self._memory, True)
        self._free = list(range(self.max_sequences))[::-1]
        self._sequences: list[int] = []  # llama.cpp sequence id of each running row
        self._positions: list[int] = []  # where each row's next token goes

    def _release(self, seq: int) -> None:
        self._llama.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self._free.append(seq)

    def _run(self, entries: list[tuple[int, int, int, bool]]) -> torch.Tensor:
        """llama_decode over (token, position, sequence, wants logits) entries, in chunks of
        the batch size; the logits of the entries that want them, in order, [n, vocab]."""
        batch, outputs = self._batch, []
        for start in range(0, len(entries), self._batch_tokens):
            chunk = entries[start:start + self._batch_tokens]
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
