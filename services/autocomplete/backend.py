"""What the engine needs of a model: `Backend`, a model and its KV cache over the batch's rows.

Two implement it: torch_backend.py (transformers) and llama_backend.py (GGUF in llama.cpp);
backends.py picks and loads one for a model-store entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported where used: see engine.py's docstring
    import torch


@dataclass(frozen=True)
class PromptChunk:
    """Positions `start` to `end - 1` of a prompt being prefilled, run in one step."""

    key: int  # the prompt's, from `begin` to `join` or `abandon`
    prompt: list[int]  # the whole prompt
    start: int
    end: int
    every_position: bool  # logits at every position run (echo's prompt logprobs)

    @property
    def last(self) -> bool:
        return self.end == len(self.prompt)


class Backend(Protocol):
    """A model and its KV cache over the batch's rows, kept in the engine's row order.

    A prompt is prefilled in chunks across steps (`begin`, then `step` with its `PromptChunk`s,
    in order), so one long prompt does not stall the running rows for a whole prefill; once its
    last chunk ran, its rows `join` the batch."""

    description: str  # for the start-up log
    context_length: int  # tokens a sequence may hold, prompt included
    vocab_size: int  # ids a prompt may hold
    stop_token_ids: frozenset[int]  # end-of-text and other special tokens

    @property
    def kv_capacity(self) -> int | None: ...  # KV cells all rows share (None: grows as needed)

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_bytes(self) -> list[bytes]: ...  # each id's bytes (token_prefix.py)

    def begin(self, key: int, prompt: list[int], every_position: bool, version: int | None = None) -> int:
        """A prompt to prefill under `key`, run with user `version`'s adapter (None: the base;
        only llama.cpp serves versions); how many of its first tokens need not run (their KV
        came from a cached prefix; never all of them). The first chunk starts there."""

    def step(self, chunks: list[PromptChunk], tokens: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the prompts' chunks and feed every running row its next token, in one forward
        pass where the backend can. Each chunk's logits: [end - start, vocab] for
        `every_position`, else [1, vocab] for a prompt's last chunk and [0, vocab] before it;
        and the rows' logits for their next token, [rows, vocab]."""

    def join(self, keys: list[int]) -> None:
        """Append a row per entry that continues fully prefilled prompt `keys[i]` (a key may
        repeat: its choices share the prompt's cells); the prompts are done with."""

    def abandon(self, key: int) -> None:
        """Forget a begun prompt whose rows will not join (cancelled, or ended at once)."""

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (indices into the current order, in order)."""

    def reset(self) -> None:
        """Forget every row, every begun prompt and every cached prefix (after a failure)."""

    @property
    def cached_cells(self) -> int:
        """KV cells held by cached prefixes of finished rows (0: no prefix cache)."""

    def evict(self, cells: int) -> int:
        """Free at least `cells` cached cells if it can; how many it freed."""


class WholePrompts:
    """`prefill` and `decode_step` over `begin`/`step`, for callers outside the engine (the
    GGUF check at import, tests, benchmarks): prompt i is key i, for `join`."""

    def prefill(self: Backend, prompts: list[list[int]], every_position: bool) -> list[torch.Tensor]:
        """Run whole prompts in one step; each one's logits ([len(prompt) - reused, vocab] or
        [1, vocab]). `reused_tokens`: how many of each came from the prefix cache."""
        reused = [self.begin(i, p, every_position) for i, p in enumerate(prompts)]
        self.reused_tokens = reused
        chunks = [
            PromptChunk(i, p, r, len(p), every_position) for i, (p, r) in enumerate(zip(prompts, reused))
        ]
        return self.step(chunks, [])[0]

    def decode_step(self: Backend, tokens: list[int]) -> torch.Tensor:
        return self.step([], tokens)[1]
