"""Per-sequence sampling: each row of a batch keeps its own settings and random generator.

    params = SamplingParams(max_tokens=20, temperature=0.7, top_p=0.9, seed=42)
    tokens, logprobs = choose_tokens(logits, [params], [generator], [history])

Reported log-probabilities are the model's own (log-softmax of the raw logits), before
temperature, penalties and logit bias, so they mean the same whatever the sampling settings.

`logit_bias` (OpenAI's) is added to the logits after the penalties, before temperature;
as OpenAI documents, -100 bans a token (its score becomes -inf) and +100 makes the
token(s) at +100 the only ones left to choose from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: see engine.py's docstring
    import numpy as np
    import torch


# Values so small they overflow float32 arithmetic (scores / 1e-40 is inf; a top_p of 1e-300 is
# 0 in float32, which cuts every token) are taken as the nearest value that does not: the same
# choice, no NaN. vLLM treats a temperature under 1e-5 as greedy too.
GREEDY_BELOW = 1e-5  # temperature
MIN_TOP_P = 1e-6  # keeps the likeliest token only
MIN_REPETITION_PENALTY = 1e-2  # a seen token's logit times 100 at most
LARGEST_SCORE = 1e30  # what +inf becomes: / GREEDY_BELOW still fits float32 (3.4e38)


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    repetition_penalty: float = 1.0  # >1 discourages tokens already in prompt or output (CTRL-style)
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token already generated
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence in the output
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # top-N alternatives per token; 0: only the chosen token's
    echo: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, -100..100) pairs, OpenAI's
    # From 1: the n choices start with the likeliest first tokens (by the raw logits) from this
    # rank on, one each (1: the likeliest), then go on as the rest says: n distinct
    # continuations without drawing extra samples (suggest.py). 0: off.
    first_token_rank: int = 0
    # The continuation must start with this text (token healing, suggest.py): until it has, only
    # tokens that agree with it may be chosen (token_prefix.py), and their logprobs are over
    # those tokens alone, the model's probabilities given what was typed. "": no constraint.
    prefix: str = ""

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


def new_generator(seed: int | None) -> torch.Generator:
    """A generator seeded with `seed` modulo 2**64 (a choice's seed + index may pass 2**64 - 1,
    the most torch takes), or from fresh OS entropy."""
    import torch

    generator = torch.Generator()
    if seed is None:
        generator.seed()  # fresh OS entropy: unseeded requests differ
    else:
        generator.manual_seed(seed % 2**64)
    return generator


def choose_tokens(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator],
    prompts: Sequence[Sequence[int]],
    outputs: Sequence[Sequence[int]],
    allowed: Sequence[np.ndarray | None] | None = None,
) -> tuple[list[int], list[torch.Tensor | None]]:
    """The next token of each row of `logits` [rows, vocab], and the rows' log-probabilities
    (None for each row when no row asks for logprobs: a vocabulary-wide pass saved per step).
    `allowed`: per row, the only token ids it may choose (None: any)."""
    import torch

    logits = logits.float()
    if allowed is not None and any(ids is not None for ids in allowed):
        logits = logits.clone()
        for row, ids in enumerate(allowed):
            if ids is not None:
                logits[row] = only(logits[row], ids)
    wanted = any(p.logprobs is not None for p in params)
    logprobs: list[torch.Tensor | None] = (
        list(torch.log_softmax(logits, dim=-1)) if wanted else [None] * len(params)
    )
    chosen: list[int] = []
    for row, p in enumerate(params):
        scores = _finite(_biased(_penalised(logits[row], p, prompts[row], outputs[row]), p))
        if p.greedy:
            chosen.append(_argmax(scores))
        else:
            chosen.append(_draw(scores / p.temperature, p, generators[row]))
    return chosen, logprobs


def only(scores: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    """`scores` with every token but `ids` (int64) banned."""
    import torch

    kept = scores.new_full(scores.shape, float("-inf"))
    index = torch.from_numpy(ids).to(scores.device)
    kept[index] = scores[index]
    return kept


def _argmax(scores: torch.Tensor) -> int:
    """The likeliest token: numpy's argmax on the CPU (2x faster than torch's over a 49k-token
    vocabulary, one per row per step); both take the first of equal scores."""
    return int(scores.numpy().argmax()) if scores.device.type == "cpu" else int(scores.argmax())


def _finite(scores: torch.Tensor) -> torch.Tensor:
    """NaN scores (a model's overflow) become banned and +inf a large finite score, so a draw
    never works on NaN, which picked the vocabulary's last id whatever the model said."""
    import torch

    # One reduction, no [vocab] mask: a sum is finite only when every score is (an inf or a NaN
    # makes it inf or NaN); the rare overflow of a finite sum only takes the full check.
    if math.isfinite(float(scores.sum())) or bool(torch.isfinite(scores).all()):
        return scores
    return torch.nan_to_num(scores, nan=float("-inf"), posinf=LARGEST_SCORE)


def _penalised(
    scores: torch.Tensor, p: SamplingParams, prompt: Sequence[int], output: Sequence[int]
) -> torch.Tensor:
    if p.repetition_penalty == 1.0 and p.presence_penalty == 0.0 and p.frequency_penalty == 0.0:
        return scores
    import torch

    scores = scores.clone()
    if p.repetition_penalty != 1.0:
        penalty = max(p.repetition_penalty, MIN_REPETITION_PENALTY)
        seen = torch.tensor(sorted(set(prompt) | set(output)), dtype=torch.long)
        picked = scores[seen]
        scores[seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
    if output and (p.presence_penalty or p.frequency_penalty):
        counts = torch.bincount(torch.tensor(output, dtype=torch.long), minlength=scores.numel())
        scores -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
    return scores


BAN, FORCE = -100.0, 100.0  # OpenAI: "-100 or 100 should result in a ban or exclusive selection"


def _biased(scores: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    if not p.logit_bias:
        return scores
    import torch

    ids = torch.tensor([t for t, _ in p.logit_bias], dtype=torch.long)
    bias = torch.tensor([b for _, b in p.logit_bias], dtype=scores.dtype)
    forced = ids[bias >= FORCE]
    bias = bias.masked_fill(bias <= BAN, float("-inf"))
    scores = scores.clone()  # _penalised may hand back the logits themselves
    scores[ids] += bias
    if forced.numel():  # only the forced tokens stay (one that is also penalised stays too)
        keep = scores.new_full(scores.shape, float("-inf"))
        keep[forced] = scores[forced]
        scores = keep
    return scores


def _draw(scores: torch.Tensor, p: SamplingParams, generator: torch.Generator) -> int:
    import torch

    ids: torch.Tensor | None = None
    if 0 < p.top_k < scores.numel():
        scores, ids = torch.topk(scores, p.top_k)  # sorted, descending
    if p.top_p < 1.0:
        if ids is None:
            scores, ids = torch.sort(scores, descending=True)
        probs = torch.softmax(scores, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        outside = (torch.cumsum(probs, dim=-1) - probs) >= max(p.top_p, MIN_TOP_P)
        scores = scores.masked_fill(outside, float("-inf"))
    # Inverse-CDF draw: one uniform number per token; torch.multinomial is ~100x slower on a
    # 50k-token vocabulary on CPU.
    cumulative = torch.cumsum(torch.softmax(scores, dim=-1), dim=-1)
    if not bool(torch.isfinite(cumulative[-1])):  # every score -inf (all NaN): the likeliest
        pick = int(scores.argmax())
        return int(ids[pick]) if ids is not None else pick
    threshold = torch.rand((), generator=generator) * cumulative[-1]
    pick = min(int(torch.searchsorted(cumulative, threshold, right=True)), scores.numel() - 1)
    return int(ids[pick]) if ids is not None else pick
