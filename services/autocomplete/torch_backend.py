"""The engine's backend for a transformers model in torch (any Hugging Face causal LM).

How the batch is kept: one KV cache (transformers' DynamicCache) holds every running row,
left-padded to a common length, with an attention mask that hides the padding and per-row
position ids. Whole short prompts are prefilled together, left-padded; a prompt prefilled in
chunks runs on a cache of its own. The rows that go on are taken from those caches, padded
and appended. Rows that leave are dropped from the cache, and columns that became padding
for every row are trimmed.

On a GPU the model, its cache and the batch's tensors live there; the logits handed to the
engine come back to the CPU, where sampling runs (one [rows, vocab] copy per step).
"""

from __future__ import annotations

from typing import Any

import torch

from services.autocomplete.backend import PromptChunk, WholePrompts
from services.autocomplete.causal_lm import context_length
from services.autocomplete.codec import TokenizerCodec


class TorchBackend(WholePrompts, TokenizerCodec):
    """Engine backend (see backend.py's `Backend`) over a transformers model and tokenizer."""

    kv_capacity = None  # the cache grows as needed
    cached_cells = 0  # no prefix cache: every prompt is prefilled whole
    # The running batch, set by _clear_batch (declared here: methods above it use them).
    _cache: Any  # transformers' DynamicCache, None while no row runs
    _mask: torch.Tensor  # [rows, cache length]
    _positions: torch.Tensor  # [rows]

    def __init__(self, model: Any, tokenizer: Any, dtype: str = "float32", device: str = "cpu") -> None:
        super().__init__(tokenizer)
        self.model = model
        self.device = torch.device(device)
        where = f", on {torch.cuda.get_device_name(self.device)}" if self.device.type == "cuda" else ""
        self.description = f"{type(model).__name__} in torch, {_weights(dtype)}{where}"
        self.context_length = context_length(model.config.to_dict())
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.stop_token_ids = _stop_token_ids(model, tokenizer)
        self.reset()

    def begin(self, key: int, prompt: list[int], every_position: bool, version: int | None = None) -> int:
        if version is not None:
            raise ValueError("user versions (LoRA adapters) are served by the llama.cpp backend only")
        self._pending[key] = None  # its cache comes with its first chunk
        return 0  # no prefix cache

    def _prefill(self, chunks: list[PromptChunk]) -> list[torch.Tensor]:
        """Whole prompts (one chunk each, no logits at every position) in one left-padded pass,
        as before chunking; every other chunk in a pass of its own, continuing its prompt's cache."""
        out: dict[int, torch.Tensor] = {}
        whole = [c for c in chunks if c.start == 0 and c.last and not c.every_position]
        if whole:
            logits = self._run_together([c.prompt for c in whole])
            for i, chunk in enumerate(whole):
                out[chunk.key] = logits[i]
                self._pending[chunk.key] = (self._group, i)
        for chunk in chunks:
            if chunk.key not in out:
                out[chunk.key] = self._run_chunk(chunk)
        return [out[c.key] for c in chunks]

    def _run_together(self, prompts: list[list[int]]) -> torch.Tensor:
        """One forward pass over whole prompts, left-padded; each one's last logits, [n, 1, vocab]."""
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)  # 0: any id, masked anyway
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
            position_ids=(mask.cumsum(1) - 1).clamp(min=0),
            logits_to_keep=1,
        )
        self._group = (cache, mask)
        return out.logits.cpu()

    def _run_chunk(self, chunk: PromptChunk) -> torch.Tensor:
        """Positions start..end-1 of one prompt, on its own cache."""
        from transformers import DynamicCache

        started = self._pending[chunk.key]
        cache = DynamicCache(config=self.model.config) if started is None else started[0][0]
        ids = torch.tensor(chunk.prompt[chunk.start : chunk.end], device=self.device)[None]
        mask = torch.ones(1, chunk.end, dtype=torch.long, device=self.device)
        positions = torch.arange(chunk.start, chunk.end, device=self.device)[None]
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
            position_ids=positions,
            logits_to_keep=0 if chunk.every_position else 1,
        )
        self._pending[chunk.key] = ((cache, mask), 0)
        if chunk.every_position:
            return out.logits[0].cpu()
        return out.logits[0, -1:].cpu() if chunk.last else out.logits.new_zeros(0, self.vocab_size)

    def join(self, keys: list[int]) -> None:
        """Append one row per entry, continuing prefilled prompt `keys[i]`: its row of the cache
        its prompt ran in, all of them padded to one width and appended at once."""
        if not keys:
            return
        picked = [self._pending[key] for key in keys]
        for key in set(keys):
            del self._pending[key]
        width = max(mask.shape[1] for (_, mask), _ in picked)
        new_mask = torch.cat([_pad_left(mask[row : row + 1], width, dim=1) for (_, mask), row in picked])
        layers = []
        for layer in range(len(picked[0][0][0].layers)):
            keys_, values = [], []
            for (cache, _), row in picked:
                source = cache.layers[layer]
                keys_.append(_pad_left(source.keys[row : row + 1], width))
                values.append(_pad_left(source.values[row : row + 1], width))
            layers.append((torch.cat(keys_), torch.cat(values)))
        if self._cache is None:
            cache = picked[0][0][0]  # done with (all its prompts join now): it takes the rows
            for target, (k, v) in zip(cache.layers, layers):
                target.keys, target.values = k, v
            self._cache, self._mask = cache, new_mask
        else:
            width = max(self._mask.shape[1], width)
            for old, (k, v) in zip(self._cache.layers, layers):
                old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(k, width)])
                old.values = torch.cat([_pad_left(old.values, width), _pad_left(v, width)])
            self._mask = torch.cat([_pad_left(self._mask, width, dim=1), _pad_left(new_mask, width, dim=1)])
        self._positions = torch.cat([self._positions, new_mask.sum(1)])

    def abandon(self, key: int) -> None:
        self._pending.pop(key, None)

    def _decode(self, tokens: list[int]) -> torch.Tensor:
        """Feed each running row its next token; the logits of the token after, [rows, vocab]."""
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(tokens), 1)], 1)
        out = self.model(
            input_ids=torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None],
            attention_mask=self._mask,
            position_ids=self._positions[:, None],
            past_key_values=self._cache,
            use_cache=True,
        )
        self._positions += 1
        return out.logits[:, -1].cpu()

    def step(self, chunks: list[PromptChunk], tokens: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Two passes or more here: a prompt's cache is apart from the batch's until `join`."""
        logits = self._decode(tokens) if tokens else torch.zeros(0, self.vocab_size)
        return (self._prefill(chunks) if chunks else []), logits

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (indices, in order); trim columns that are padding for all."""
        if not rows:
            self._clear_batch()  # (begun prompts stay)
            return
        index = torch.tensor(rows, device=self.device)
        self._mask, self._positions = self._mask[index], self._positions[index]
        self._cache.batch_select_indices(index)
        padding = int((self._mask.sum(0) == 0).long().cumprod(0).sum())
        if padding:
            self._mask = self._mask[:, padding:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[..., padding:, :], layer.values[..., padding:, :]

    def evict(self, cells: int) -> int:
        return 0

    def reset(self) -> None:
        self._pending: dict[int, Any] = {}  # a begun prompt's key -> (its (cache, mask), its row)
        self._clear_batch()

    def _clear_batch(self) -> None:
        self._cache = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self._positions = torch.zeros(0, dtype=torch.long, device=self.device)


def _weights(dtype: str) -> str:
    return "int8 weights" if dtype == "int8" else f"{dtype} weights"


def _pad_left(tensor: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _stop_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """End-of-text and every other special token: plain-text completion ends at any of them."""
    ids = set(tokenizer.all_special_ids)
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return frozenset(int(i) for i in ids)
