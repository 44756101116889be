"""gpt-2-simple / OpenAI TensorFlow GPT-2 checkpoints, as transformers GPT-2 models in the store.

    modelport finetune import-gpt2-simple checkpoint/run1 --name my-gpt2
    modelport finetune text notes.txt --backend gpt-2-simple --checkpoint checkpoint/run1 --name my-gpt2
    MODELPORT_AUTOCOMPLETE_MODEL=my-gpt2 bentoml serve services.autocomplete.service:Autocomplete

A checkpoint folder holds hparams.json, encoder.json, vocab.bpe and model-<step>.index /
.data-* (plus `checkpoint`, naming the newest step). transformers 5 no longer reads these,
so the variables are mapped here, one by one. The checkpoint is read without TensorFlow
(finetune/tf_checkpoint.py); only `--backend gpt-2-simple` needs it (`modelport[gpt2-simple]`).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from finetune.text_data import DataError

INSTALL_HINT = "pip install 'modelport[gpt2-simple]'"
REQUIRED_FILES = ("hparams.json", "encoder.json", "vocab.bpe")
# TensorFlow name (after "model/") -> transformers name; {i} is the block number. OpenAI's
# `conv1d` weights are [1, in, out]; transformers' GPT-2 Conv1D keeps [in, out], so only the
# leading 1 goes. Norm gains/biases are `g`/`b` there and `weight`/`bias` here.
_BLOCK = {
    "ln_1/g": "ln_1.weight",
    "ln_1/b": "ln_1.bias",
    "attn/c_attn/w": "attn.c_attn.weight",
    "attn/c_attn/b": "attn.c_attn.bias",
    "attn/c_proj/w": "attn.c_proj.weight",
    "attn/c_proj/b": "attn.c_proj.bias",
    "ln_2/g": "ln_2.weight",
    "ln_2/b": "ln_2.bias",
    "mlp/c_fc/w": "mlp.c_fc.weight",
    "mlp/c_fc/b": "mlp.c_fc.bias",
    "mlp/c_proj/w": "mlp.c_proj.weight",
    "mlp/c_proj/b": "mlp.c_proj.bias",
}
_TOP = {"wte": "wte.weight", "wpe": "wpe.weight", "ln_f/g": "ln_f.weight", "ln_f/b": "ln_f.bias"}


def hf_name(tf_name: str) -> str | None:
    """The transformers parameter for a TensorFlow variable; None for optimizer state etc."""
    name = tf_name.removeprefix("model/")
    if name in _TOP:
        return f"transformer.{_TOP[name]}"
    match = re.fullmatch(r"h(\d+)/(.+)", name)
    if match and match.group(2) in _BLOCK and tf_name.startswith("model/"):
        return f"transformer.h.{match.group(1)}.{_BLOCK[match.group(2)]}"
    return None


def to_state_dict(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """transformers GPT-2 weights from TensorFlow variables (Adam slots and counters ignored)."""
    import torch

    state = {}
    for tf_name, value in variables.items():
        name = hf_name(tf_name)
        if name is not None:
            array = value[0] if value.ndim == 3 else value  # conv1d [1, in, out] -> [in, out]
            state[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return state


def check_checkpoint(folder: Path) -> Path:
    """The checkpoint prefix in `folder` (the step its `checkpoint` file names, else the newest
    model*.index: `model-1000` from gpt-2-simple, `model.ckpt` from OpenAI), or a DataError."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (give the checkpoint folder, e.g. checkpoint/run1)")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    pointer = folder / "checkpoint"
    pointed = pointer.read_text() if pointer.is_file() else ""
    named = re.search(r'^model_checkpoint_path: "(.+)"', pointed, re.MULTILINE)
    # The pointer may hold an absolute path from the machine that trained: keep the name only.
    prefix = folder / Path(named.group(1)).name if named else None
    if prefix is None or not Path(f"{prefix}.index").is_file():
        indexes = sorted(folder.glob("model*.index"), key=lambda p: p.stat().st_mtime)
        prefix = indexes[-1].with_suffix("") if indexes else None
    if missing or prefix is None:
        raise DataError(
            f"{folder}: not a gpt-2-simple checkpoint, missing "
            f"{missing + ([] if prefix else ['model-<step>.index/.data-*'])}"
        )
    return prefix


def read_variables(prefix: Path) -> dict[str, np.ndarray]:
    """The checkpoint's variables: read directly, or by TensorFlow for forms we do not decode."""
    from finetune.tf_checkpoint import UnsupportedCheckpoint, read_checkpoint

    try:
        return read_checkpoint(prefix)
    except UnsupportedCheckpoint as unsupported:
        try:
            import tensorflow as tf
        except ImportError:
            raise RuntimeError(f"{unsupported}: reading it needs TensorFlow: {INSTALL_HINT}") from None
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def convert_checkpoint(folder: str | Path, out_dir: str | Path) -> Path:
    """Write a transformers GPT-2 directory (config, safetensors, tokenizer) for `folder`."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    folder, out_dir = Path(folder), Path(out_dir)
    prefix = check_checkpoint(folder)
    hparams = json.loads((folder / "hparams.json").read_text())
    config = GPT2Config(
        vocab_size=hparams["n_vocab"],
        n_positions=hparams["n_ctx"],
        n_embd=hparams["n_embd"],
        n_layer=hparams["n_layer"],
        n_head=hparams["n_head"],
        activation_function="gelu_new",  # OpenAI's tanh approximation of GELU
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,  # the logits reuse wte
    )
    model = GPT2LMHeadModel(config)
    state = to_state_dict(read_variables(prefix))
    expected = {k for k in model.state_dict() if k != "lm_head.weight"}  # tied to wte
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise DataError(
            f"{prefix}: variables do not match hparams.json "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    model.save_pretrained(out_dir)
    # transformers 5 takes the files as `vocab`/`merges` (it ignores `vocab_file`, silently).
    tokenizer = GPT2Tokenizer(vocab=str(folder / "encoder.json"), merges=str(folder / "vocab.bpe"))
    tokenizer.save_pretrained(out_dir)
    return out_dir


def import_gpt2_simple(folder: str | Path, name: str) -> Any:
    """Convert the checkpoint in `folder` and store it as a new causal-lm version of `name`."""
    from finetune.store import import_model
    from services.core.sources import LocalFile, sha256_of

    folder = Path(folder)
    prefix = check_checkpoint(folder)
    with tempfile.TemporaryDirectory(prefix="modelport-gpt2-simple-") as tmp:
        model_dir = convert_checkpoint(folder, Path(tmp) / "model")
        return import_model(
            name,
            LocalFile(str(model_dir)),
            kind="causal-lm",
            extra_metadata={
                "converted_from": "gpt-2-simple checkpoint",
                "checkpoint": str(prefix.resolve()),
                "checkpoint_sha256": sha256_of(folder),
            },
        )


@dataclass(frozen=True)
class Gpt2SimpleSettings:
    steps: int = 100  # gpt-2-simple's README example runs 1,000; 100 keeps a CPU trial short
    learning_rate: float = 1e-4  # gpt-2-simple's default
    batch_size: int = 1  # gpt-2-simple's default; each sample is n_ctx (1,024) tokens
    val_fraction: float = 0.1  # share of records held out for the perplexity
    eval_block_size: int = 256  # tokens per validation block: short, so CPU evaluation is quick
    max_val_blocks: int = 16  # 16 * 256 = 4,096 validation tokens
    seed: int = 0
    runs_dir: Path = Path("runs/finetune-gpt2-simple")  # the checkpoint gpt-2-simple writes
    # The interpreter that has TensorFlow and gpt-2-simple (a separate venv is fine).
    tf_python: str = os.environ.get("MODELPORT_TF_PYTHON", sys.executable)


# Runs under `tf_python`, in a subprocess: TensorFlow and torch's Triton each bundle LLVM, and
# in one process whichever loads second aborts it.
_FINETUNE = r"""
import sys
import gpt_2_simple as gpt2
model_dir, model_name, dataset, checkpoint_dir, steps, learning_rate, batch_size = sys.argv[1:]
gpt2.finetune(gpt2.start_tf_sess(), dataset, model_name=model_name, model_dir=model_dir,
              checkpoint_dir=checkpoint_dir, run_name="run1", steps=int(steps),
              learning_rate=float(learning_rate), batch_size=int(batch_size),
              sample_every=int(steps) + 1, save_every=int(steps) + 1, print_every=1)
"""


def finetune_with_gpt2_simple(
    data_path: str | Path,
    base: str | Path,
    name: str,
    settings: Gpt2SimpleSettings = Gpt2SimpleSettings(),
    **text_options: Any,
) -> Any:
    """Train `base` (an OpenAI model folder like models/124M, or a checkpoint/run1) with
    gpt-2-simple on your text, then store the result like any gpt-2-simple import."""
    from finetune.store import add_version, hyperparameters
    from finetune.text import TextResult
    from finetune.text_data import load_text, split_records

    data = load_text(data_path, **text_options)
    train, val = split_records(data.records, val_fraction=settings.val_fraction, seed=settings.seed)
    base = Path(base)
    check_checkpoint(base)
    started = time.monotonic()
    run_dir = settings.runs_dir / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True)
    # gpt-2-simple's own text format: documents joined by its end-of-text marker.
    (run_dir / "train.txt").write_text("<|endoftext|>\n".join(train))
    ppl_before = perplexity(convert_checkpoint(base, run_dir / "base"), val, settings)
    trained = subprocess.run(
        [
            settings.tf_python,
            "-c",
            _FINETUNE,
            str(base.parent.resolve()),
            base.name,
            str((run_dir / "train.txt").resolve()),
            str((run_dir / "checkpoint").resolve()),
            str(settings.steps),
            str(settings.learning_rate),
            str(settings.batch_size),
        ],
        cwd=run_dir,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=False,
    )
    if trained.returncode != 0:
        raise RuntimeError(
            f"gpt-2-simple exited with {trained.returncode} (its output is above); "
            f"it needs TensorFlow in {settings.tf_python}: {INSTALL_HINT}"
        )
    model_dir = convert_checkpoint(run_dir / "checkpoint" / "run1", run_dir / "model")
    ppl_after = perplexity(model_dir, val, settings)
    seconds = time.monotonic() - started
    tag = add_version(
        name,
        model_dir,
        kind="causal-lm",
        metadata={
            "base_model": str(base.resolve()),
            "backend": "gpt-2-simple",
            "dataset": {
                "path": str(Path(data_path).resolve()),
                "sha256": data.sha256,
                "records": len(data.records),
            },
            "hyperparameters": hyperparameters(settings),
            "metrics": {
                "val_ppl_before": round(ppl_before, 3),
                "val_ppl_after": round(ppl_after, 3),
                "train_minutes": round(seconds / 60, 2),
            },
        },
    )
    return TextResult(tag, round(ppl_before, 3), round(ppl_after, 3), seconds, run_dir)


def perplexity(model_dir: Path, records: list[str], settings: Gpt2SimpleSettings) -> float:
    """exp(mean cross-entropy) of the model over the packed validation records."""
    import torch

    from finetune.text_data import check_sizes, pack
    from services.autocomplete.causal_lm import load_causal_lm

    model, tokenizer = load_causal_lm(model_dir, dtype="float32")
    blocks = pack(tokenizer, records, block_size=settings.eval_block_size)[: settings.max_val_blocks]
    check_sizes(blocks, blocks, block_size=settings.eval_block_size)
    with torch.no_grad():
        losses = [model(input_ids=torch.tensor([b]), labels=torch.tensor([b])).loss.item() for b in blocks]
    return math.exp(sum(losses) / len(losses))


__all__ = [
    "Gpt2SimpleSettings",
    "check_checkpoint",
    "convert_checkpoint",
    "finetune_with_gpt2_simple",
    "hf_name",
    "import_gpt2_simple",
    "perplexity",
    "to_state_dict",
]
