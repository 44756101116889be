"""What the engine needs of a model: `Backend`, a model and its KV cache over the batch's rows.

Two implement it: torch_backend.py (transformers) and llama_backend.py (GGUF in llama.cpp);
backends.py picks and loads one for a model-store entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported where used: see engine.py's docstring
    import torch


class Backend(Protocol):
    """A model and its KV cache over the batch's rows, kept in the engine's row order."""

    description: str  # for the start-up log
    context_length: int  # tokens a sequence may hold, prompt included
    vocab_size: int  # ids a prompt may hold
    stop_token_ids: frozenset[int]  # end-of-text and other special tokens
    kv_capacity: int | None  # KV cells all rows share (None: grows as needed)
    # Of each prompt of the last prefill: tokens whose KV came from a cached prefix, not run.
    reused_tokens: list[int]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def prefill(self, prompts: list[list[int]], every_position: bool) -> list[torch.Tensor]:
        """Run new prompts; each one's logits, [len(prompt) or 1, vocab]. Held until `join`."""

    def join(self, sources: list[int]) -> None:
        """Append a row per entry that continues prefilled prompt `sources[i]`; drop the rest."""

    def decode_step(self, tokens: list[int]) -> torch.Tensor:
        """Feed every row its next token; the logits for the one after, [rows, vocab]."""

    def step(self, prompts: list[list[int]], every_position: bool,
             tokens: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """`prefill(prompts)` and `decode_step(tokens)` in one forward pass where the backend can;
        both results. Either may be empty."""

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (indices into the current order, in order)."""

    def reset(self) -> None:
        """Forget every row and every cached prefix (after a failure)."""

    @property
    def cached_cells(self) -> int:
        """KV cells held by cached prefixes of finished rows (0: no prefix cache)."""

    def evict(self, cells: int) -> int:
        """Free at least `cells` cached cells if it can; how many it freed."""
