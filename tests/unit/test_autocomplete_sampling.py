"""logit_bias: checked where a request becomes SamplingParams, applied in `choose_tokens`;
and the OpenAI parameters the server refuses with a 400 that says what to do instead."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from services.autocomplete.completions import _logit_bias, _refuse_unsupported, sampling_params
from services.autocomplete.http_schema import CompletionRequest
from services.autocomplete.sampling import SamplingParams, choose_tokens, new_generator
from services.core.api_errors import ApiError

VOCAB = 50
# Token 7 is by far the likeliest, token 3 next; 11 is the least likely.
LOGITS = torch.linspace(-1, 1, VOCAB).roll(5)
LOGITS[7], LOGITS[3], LOGITS[11] = 12.0, 8.0, -30.0


def pick(params: SamplingParams, seed: int = 0, output: list[int] | None = None) -> int:
    tokens, _ = choose_tokens(LOGITS[None], [params], [new_generator(seed)], [[1, 2]], [output or []])
    return tokens[0]


def test_without_bias_the_likeliest_token_wins() -> None:
    assert pick(SamplingParams(temperature=0.0)) == 7


@pytest.mark.parametrize("temperature", [0.0, 1.0, 2.0])
def test_minus_100_bans_a_token(temperature: float) -> None:
    params = SamplingParams(temperature=temperature, logit_bias=((7, -100.0),))
    picks = {pick(params, seed) for seed in range(200)}
    assert 7 not in picks
    if temperature == 0.0:
        assert picks == {3}


@pytest.mark.parametrize("temperature", [0.0, 1.0, 2.0])
def test_plus_100_forces_a_token_even_the_least_likely(temperature: float) -> None:
    params = SamplingParams(
        temperature=temperature,
        top_k=5,
        top_p=0.5,
        repetition_penalty=2.0,
        frequency_penalty=2.0,
        logit_bias=((11, 100.0), (7, -100.0)),
    )
    assert {pick(params, seed, output=[11, 11]) for seed in range(100)} == {11}


def test_several_forced_tokens_are_the_only_candidates() -> None:
    params = SamplingParams(temperature=2.0, logit_bias=((12, 100.0), (13, 100.0)))
    assert {pick(params, seed) for seed in range(200)} == {12, 13}


def test_a_moderate_bias_is_added_to_the_logit() -> None:
    assert pick(SamplingParams(temperature=0.0, logit_bias=((3, 4.5),))) == 3
    assert pick(SamplingParams(temperature=0.0, logit_bias=((3, 3.5),))) == 7


def test_reported_logprobs_are_the_models_own() -> None:
    params = SamplingParams(temperature=0.0, logit_bias=((11, 100.0),), logprobs=0)
    _, logprobs = choose_tokens(LOGITS[None], [params], [new_generator(0)], [[1]], [[]])
    assert logprobs[0] is not None
    assert torch.allclose(logprobs[0], torch.log_softmax(LOGITS, dim=-1))


def test_no_logprobs_are_computed_when_no_row_asks() -> None:
    rows = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.0)]
    tokens, logprobs = choose_tokens(
        LOGITS[None].expand(2, -1), rows, [new_generator(0)] * 2, [[1], [1]], [[], []]
    )
    assert tokens == [int(LOGITS.argmax())] * 2
    assert logprobs == [None, None]


def test_bias_is_per_row() -> None:
    rows = [SamplingParams(temperature=0.0, logit_bias=((11, 100.0),)), SamplingParams(temperature=0.0)]
    tokens, _ = choose_tokens(LOGITS[None].expand(2, -1), rows, [new_generator(0)] * 2, [[1], [1]], [[], []])
    assert tokens == [11, 7]


# --- the request side ------------------------------------------------------------------


def request(**fields: object) -> CompletionRequest:
    return CompletionRequest(prompt="Hi", **fields)


def test_logit_bias_becomes_sorted_token_id_pairs() -> None:
    body = request(logit_bias={"12": 1, "3": -100, "0": 2.5})
    params = sampling_params(body, 16, [], _logit_bias(body, VOCAB))
    assert params.logit_bias == ((0, 2.5), (3, -100.0), (12, 1.0))
    assert sampling_params(request(), 16, []).logit_bias == ()


@pytest.mark.parametrize("key", ["abc", "-1", "50", "99999999", " 1", "1_0", "1.0", ""])
def test_logit_bias_keys_must_be_token_ids_in_the_vocabulary(key: str) -> None:
    with pytest.raises(ApiError) as raised:
        _logit_bias(request(logit_bias={key: 1}), VOCAB)
    assert raised.value.param == "logit_bias" and "0..49" in raised.value.message


def test_logit_bias_may_not_ban_every_token() -> None:
    with pytest.raises(ApiError) as raised:
        _logit_bias(request(logit_bias={str(t): -100 for t in range(VOCAB)}), VOCAB)
    assert raised.value.param == "logit_bias"


@pytest.mark.parametrize("value", [101, -100.5, "1", True, None])
def test_logit_bias_values_are_numbers_within_100(value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        request(logit_bias={"1": value})
    assert raised.value.errors()[0]["loc"][0] == "logit_bias"


def test_suffix_is_refused_with_what_to_do_instead() -> None:
    with pytest.raises(ApiError) as raised:
        _refuse_unsupported(request(suffix=" world"), 1)
    assert raised.value.param == "suffix" and "prompt" in raised.value.message
    _refuse_unsupported(request(suffix=""), 1)  # nothing to insert: nothing to refuse


@pytest.mark.parametrize(
    ("best_of", "n", "refused"),
    [(None, 1, False), (1, 1, False), (3, 3, False), (1, 3, False), (2, 1, True), (5, 3, True), (2, 3, True)],
)
def test_best_of_only_1_or_n(best_of: int | None, n: int, refused: bool) -> None:
    body = request(best_of=best_of, n=n)
    if not refused:
        _refuse_unsupported(body, n)
        return
    with pytest.raises(ApiError) as raised:
        _refuse_unsupported(body, n)
    assert raised.value.param == "best_of" and "logprobs" in raised.value.message


# --- values at the edges: a clear 400, or the nearest value that works; never garbage ------


@pytest.mark.parametrize("seed", [2**64, 10**30, -1, -(2**63) - 1])
def test_a_seed_outside_64_bits_is_refused(seed: int) -> None:
    with pytest.raises(ValidationError) as raised:
        request(seed=seed)
    assert raised.value.errors()[0]["loc"][0] == "seed"


def test_the_largest_seed_works_for_every_choice() -> None:
    # Choice i draws with seed + i, past 2**64 - 1 for i > 0: wrapped, not an overflow.
    seed = request(seed=2**64 - 1).seed
    assert seed is not None
    first, second = new_generator(seed + 1), new_generator(0)
    assert torch.rand((), generator=first) == torch.rand((), generator=second)


def test_a_temperature_near_0_is_greedy() -> None:
    assert {pick(SamplingParams(temperature=1e-40), seed) for seed in range(50)} == {7}


def test_a_tiny_top_p_keeps_the_likeliest_token() -> None:
    assert {pick(SamplingParams(top_p=1e-300), seed) for seed in range(50)} == {7}


def test_a_tiny_repetition_penalty_favours_seen_tokens_without_overflow() -> None:
    # Below 1 the penalty favours tokens already seen (prompt [1, 2]); 1e-300 overflowed to inf.
    picks = {pick(SamplingParams(repetition_penalty=1e-300), seed) for seed in range(50)}
    assert picks <= {1, 2}, picks


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_non_finite_logits_never_pick_a_nan_token(temperature: float) -> None:
    logits = LOGITS.clone()
    logits[20], logits[30] = float("nan"), float("inf")  # an overflowing model
    tokens, _ = choose_tokens(
        logits[None], [SamplingParams(temperature=temperature)], [new_generator(0)], [[1]], [[]]
    )
    assert tokens == [30]


@pytest.mark.parametrize(
    "fields", [{"prompt": "\ud800abc"}, {"prompt": ["Hi", "\udfffabc"]}, {"prompt": "Hi", "stop": ["\ud800"]}]
)
def test_a_lone_surrogate_is_refused_before_the_tokenizer(fields: dict) -> None:
    with pytest.raises(ValidationError) as raised:
        CompletionRequest(**fields)
    error = raised.value.errors()[0]
    assert error["loc"][0] in ("prompt", "stop") and "lone UTF-16 surrogate" in error["msg"]
    CompletionRequest(prompt="Hi \U0001f600")  # a pair (an emoji) is fine
