"""The engine's backend for a transformers model in torch (any Hugging Face causal LM).

How the batch is kept: one KV cache (transformers' DynamicCache) holds every running row,
left-padded to a common length, with an attention mask that hides the padding and per-row
position ids. Prefilled prompts are left-padded together; the rows that go on are selected
from their cache, padded and appended. Rows that leave are dropped from the cache, and
columns that became padding for every row are trimmed.

On a GPU the model, its cache and the batch's tensors live there; the logits handed to the
engine come back to the CPU, where sampling runs (one [rows, vocab] copy per step).
"""

from __future__ import annotations

from typing import Any

import torch

from services.autocomplete.codec import TokenizerCodec
from services.autocomplete.causal_lm import context_length


class TorchBackend(TokenizerCodec):
    """Engine backend (see backend.py's `Backend`) over a transformers model and tokenizer."""

    kv_capacity = None  # the cache grows as needed
    cached_cells = 0  # no prefix cache: every prompt is prefilled whole

    def __init__(self, model: Any, tokenizer: Any, dtype: str = "float32", device: str = "cpu") -> None:
        super().__init__(tokenizer)
        self.model = model
        self.device = torch.device(device)
        where = f", on {torch.cuda.get_device_name(self.device)}" if self.device.type == "cuda" else ""
        self.description = f"{type(model).__name__} in torch, {_weights(dtype)}{where}"
        self.context_length = context_length(model.config.to_dict())
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.stop_token_ids = _stop_token_ids(model, tokenizer)
        self._pending: tuple[Any, torch.Tensor] | None = None  # prefilled, not yet joined
        self.reset()

    def prefill(self, prompts: list[list[int]], every_position: bool) -> list[torch.Tensor]:
        """One forward pass over the prompts, left-padded; each one's logits."""
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)  # 0: any id, masked anyway
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt):] = torch.tensor(prompt)
            mask[i, width - len(prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True,
                         position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                         logits_to_keep=0 if every_position else 1)
        self._pending = (cache, mask)
        self.reused_tokens = [0] * len(prompts)
        logits = out.logits.cpu()
        return [logits[i, width - len(p):] if every_position else logits[i]
                for i, p in enumerate(prompts)]

    def join(self, sources: list[int]) -> None:
        """Append one row per entry, continuing prefilled prompt `sources[i]`."""
        if self._pending is None or not sources:  # nothing prefilled (it failed), or none go on
            self._pending = None
            return
        cache, mask = self._pending
        self._pending = None
        index = torch.tensor(sources, device=self.device)
        cache.batch_select_indices(index)
        new_mask = mask[index]
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
        self._positions = torch.cat([self._positions, new_mask.sum(1)])

    def decode_step(self, tokens: list[int]) -> torch.Tensor:
        """Feed each running row its next token; the logits of the token after, [rows, vocab]."""
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(tokens), 1)], 1)
        out = self.model(input_ids=torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None],
                         attention_mask=self._mask, position_ids=self._positions[:, None],
                         past_key_values=self._cache, use_cache=True)
        self._positions += 1
        return out.logits[:, -1].cpu()

    def step(self, prompts: list[list[int]], every_position: bool,
             tokens: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Two passes here: the new prompts' cache is padded apart from the batch's until `join`."""
        logits = self.decode_step(tokens) if tokens else torch.zeros(0, self.vocab_size)
        return (self.prefill(prompts, every_position) if prompts else []), logits

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (indices, in order); trim columns that are padding for all."""
        if not rows:
            self.reset()
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
        self.reused_tokens: list[int] = []
        self._cache: Any = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # [rows, cache length]
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
