"""What the `causal-lm` preparer accepts into the model store, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.autocomplete.causal_lm import prepare_causal_lm
from tests.autocomplete_fixtures import tiny_gpt2_dir


def test_a_transformers_directory_is_stored_with_its_shape(tmp_path: Path) -> None:
    source = tiny_gpt2_dir(tmp_path / "tiny")
    (target := tmp_path / "entry").mkdir()
    metadata = prepare_causal_lm(source, target)
    check = metadata.pop("gguf_check")  # GPT-2 is written as a GGUF for llama.cpp, and checked:
    assert check.startswith("KL divergence 0.00") and check.endswith("on 4/4 prompts"), check
    assert metadata == {
        "format": "transformers",
        "architecture": "GPT2LMHeadModel",
        "context_length": 1024,
        "gguf_type": "Q8_0 (written from the transformers weights)",
    }
    assert (target / "model.safetensors").exists() and (target / "tokenizer.json").exists()
    assert (target / "model.gguf").exists()


def test_a_model_without_tokenizer_or_config_is_refused(tmp_path: Path) -> None:
    (bare := tmp_path / "bare").mkdir()
    (bare / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    (tmp_path / "entry").mkdir()
    with pytest.raises(ValueError, match="no tokenizer"):
        prepare_causal_lm(bare, tmp_path / "entry")
    (weights := tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ValueError, match="transformers directory"):
        prepare_causal_lm(weights, tmp_path / "entry")
