"""GPT-2 and Llama written as GGUF: llama.cpp must compute what transformers computes, and read
the vocabulary the same way (a tiny GPT-2 with the real GPT-2 tokenizer; a tiny Llama with
SmolLM2's shape rules and tokenizer; the real SmolLM2-135M)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.autocomplete.gguf_export import check_gguf, write_gguf
from tests.autocomplete_fixtures import tiny_gpt2_dir, tiny_llama_dir

pytest.importorskip("llama_cpp", reason="llama-cpp-python is part of modelport[autocomplete]")
TEXT = "The quick brown fox jumps over the lazy dog, said Dr. O'Neil in 1999 \u2014 twice."


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    model_dir = tiny_gpt2_dir(tmp_path_factory.mktemp("tiny") / "m", seed=1)
    write_gguf(model_dir, model_dir / "model.gguf")
    return model_dir, model_dir / "model.gguf"


def test_llama_cpp_gives_the_logits_transformers_gives(exported: tuple[Path, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.autocomplete.llama_backend import LlamaCppBackend

    model_dir, gguf_file = exported
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(TEXT).input_ids
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = model(torch.tensor([ids])).logits[0]
    backend = LlamaCppBackend(gguf_file, tokenizer, threads=2, kv_tokens=256, max_sequences=2)
    got = backend.prefill([ids], every_position=True)[0]
    assert got.shape == expected.shape
    # Q8_0 weights: within a tenth of the logits' own spread (measured: 0.009 against 0.16;
    # a tensor laid out wrong gives errors the size of the spread).
    error, spread = (got - expected).abs().max().item(), expected.std().item()
    assert error < 0.1 * spread, (error, spread)
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


def test_llama_cpp_reads_the_gpt2_vocabulary(exported: tuple[Path, Path]) -> None:
    import ctypes

    from transformers import AutoTokenizer

    from services.autocomplete.llama_backend import quiet_llama_cpp

    model_dir, gguf_file = exported
    llama = quiet_llama_cpp()
    model = llama.llama_model_load_from_file(str(gguf_file).encode(), llama.llama_model_default_params())
    try:
        vocab = llama.llama_model_get_vocab(model)
        text = TEXT.encode()
        out = (llama.llama_token * 256)()
        n = llama.llama_tokenize(vocab, text, len(text), out, 256, False, False)
        assert list(out[:n]) == AutoTokenizer.from_pretrained(model_dir)(TEXT).input_ids
        assert llama.llama_vocab_n_tokens(vocab) == 50257
        assert llama.llama_vocab_is_eog(vocab, 50256)  # <|endoftext|> ends a completion
        piece = ctypes.create_string_buffer(32)
        assert llama.llama_token_to_piece(vocab, 50256, piece, 32, 0, True) > 0
    finally:
        llama.llama_model_free(model)


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    import services.autocomplete.model_kinds  # noqa: F401 - registers causal-lm
    from services.core.model_store import import_model

    return Path(import_model("smollm2-135m").path)


def test_a_llama_written_as_gguf_gives_torch_logits(tmp_path: Path, smollm2_dir: Path) -> None:
    model_dir = tiny_llama_dir(tmp_path / "llama", smollm2_dir)
    write_gguf(model_dir, model_dir / "model.gguf")
    check = check_gguf(model_dir, model_dir / "model.gguf")
    assert check.passed and check.kl_divergence < 0.01, check


def test_the_real_smollm2_written_from_its_weights_passes_the_check(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    # The store entry's transformers weights (as fine-tuning would leave them), written anew:
    # as close to torch as llama.cpp's own conversion of the same model (the package's GGUF).
    write_gguf(smollm2_dir, tmp_path / "model.gguf")
    ours = check_gguf(smollm2_dir, tmp_path / "model.gguf")
    theirs = check_gguf(smollm2_dir, smollm2_dir / "model.gguf")
    assert ours.passed, ours
    assert ours.kl_divergence <= 1.1 * theirs.kl_divergence + 1e-4, (ours, theirs)


def test_a_wrong_rotary_layout_fails_the_check(
    tmp_path: Path, smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.autocomplete import gguf_export

    monkeypatch.setattr(gguf_export, "_rotary_rows", lambda weights, heads: weights)
    write_gguf(smollm2_dir, tmp_path / "model.gguf")
    check = check_gguf(smollm2_dir, tmp_path / "model.gguf")
    assert not check.passed, check  # the check catches what a layout bug does
