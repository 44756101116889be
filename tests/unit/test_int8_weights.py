"""Weight-only int8 layers: same outputs as float32 within int8 rounding, on both kernels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.autocomplete.causal_lm import load_causal_lm
from services.autocomplete.int8_weights import SMALL_BATCH, Int8WeightLinear, quantize_linear_weights
from tests.autocomplete_fixtures import tiny_gpt2_dir


@pytest.mark.parametrize("rows", [1, SMALL_BATCH, SMALL_BATCH + 1, 300])  # int8 kernel / dequantized
def test_int8_linear_matches_float32(rows: int) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 200)
    x = torch.randn(rows, 96)
    expected = linear(x)
    got = Int8WeightLinear(linear.weight, linear.bias)(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    # int8 rows (1/254 of each row's range) and bf16 activations: about 1% of the output range
    assert (got - expected).abs().max() <= 0.02 * expected.abs().max()


def test_keeps_leading_dimensions() -> None:
    linear = torch.nn.Linear(16, 8, bias=False)
    out = Int8WeightLinear(linear.weight, None)(torch.randn(2, 3, 16))
    assert out.shape == (2, 3, 8)


def test_gpt2_model_swaps_every_layer_and_predicts_alike(tmp_path: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_gpt2_dir(tmp_path / "m"), "float32")
    ids = torch.tensor([tokenizer("The quick brown fox jumps over the lazy dog").input_ids])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        # 2 blocks x (c_attn, c_proj, c_fc, mlp c_proj) Conv1D + the lm_head Linear
        assert quantize_linear_weights(model) == 9
        got = model(input_ids=ids).logits
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert (got - expected).abs().max() <= 0.05 * expected.abs().max()


def test_loader_int8_dtype(tmp_path: Path) -> None:
    model, _ = load_causal_lm(tiny_gpt2_dir(tmp_path / "m"), "int8")
    assert isinstance(model.lm_head, Int8WeightLinear)
    with pytest.raises(ValueError, match="int8, bfloat16, float32"):
        load_causal_lm(tmp_path / "m", "float16")
