"""Fine-tune a causal LM from the model store on your text; store the result as a new version.

    modelport finetune text notes.txt                        # the autocompleter's default model
    modelport finetune text tickets.csv --column body --base gpt2
    modelport finetune text chats.jsonl --field text --lora  # LoRA for larger bases
    accelerate launch -m finetune.cli text notes.txt         # several GPUs (or torchrun -m)

It reports validation perplexity and keystroke savings (services/autocomplete/
keystroke_savings.py: a simulated typist taking `/v1/suggest`'s suggestions, in process, on
the validation records or `--eval-text`, never trained on) before and after, draws the loss
curve (loss.png, kept in the run folder and in the new store entry), and saves the model
under the base's store name, so `modelport models serve TAG` / `rollback NAME` switch the
autocompleter between versions. The after-figure types the version as stored and served (a
--lora one as its base with its adapter): `modelport evaluate suggest --model VERSION`'s
figure. Nothing is stored unless every step succeeded.

A version made with --lora holds the merged model (what a one-model server loads, with its
GGUF for llama.cpp) and, in `adapter/`, the LoRA adapter itself (peft's
adapter_config.json + adapter_model.safetensors); its metadata's `adapter` names that folder,
the rank and the base version it fits, so a server holding the base once can apply the
adapter per user instead.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from finetune.store import base_model, hyperparameters, new_version
from finetune.text_data import (
    DataError,
    check_amount,
    check_coverage,
    check_sizes,
    excerpts,
    hold_out,
    load_text,
    pack,
)
from services.autocomplete.lora_export import ADAPTER_DIR
from services.autocomplete.phrase_memory import PHRASES_NAME


@dataclass(frozen=True)
class TextSettings:
    base: str = "smollm2-135m"  # store name (its serving version) or name:version to start from
    # Short blocks: fortunes, notes and tickets are a few dozen tokens each, and attention
    # cost grows with length. 8 blocks * 128 tokens = 1,024 tokens per step.
    block_size: int = 128
    batch_size: int = 8  # per device; raise on a GPU
    grad_accum: int = 1  # steps accumulated per optimizer update (a larger batch without the memory)
    # Measured on SmolLM2-135M + fortunes: at 2e-4 the training loss fell from 4.6 to ~3.8 in
    # 10 steps; the warm-up and cosine decay keep that from overshooting.
    learning_rate: float = 2e-4
    # LoRA's few new weights start at zero and need a larger step: LoRA's usual 1e-4..3e-3, near
    # the top as a per-user job gets only dozens of steps. On Alice (issue 23's narrative user)
    # 15 steps at 5e-4 lowered validation perplexity 47%, 40 at 2e-3 66% (not tuned further:
    # services/autocomplete/README.md, "How much typing it saves").
    lora_learning_rate: float = 2e-3
    # 40 steps * 1,024 tokens (~160 KB of English): ~5 minutes for SmolLM2-135M on 2 quiet CPU
    # cores (7.4 s a LoRA step), about 1.5 passes over 120 KB of a user's text and one over
    # 200 KB. On a GPU, raise it (or use --epochs).
    max_steps: int = 40
    epochs: float = 2.0  # stop after this many passes even if max_steps is not reached
    warmup_ratio: float = 0.1  # a short warm-up keeps the first updates from wrecking the base
    val_fraction: float = 0.1  # share of the text held out: validation and keystroke savings
    # Which part is held out (finetune/text_data.py's HOLDOUTS). "blocks": every 10th ~1.5 KB
    # stretch from all through the text, as what a user types next resembles all they wrote;
    # "tail": the last tenth, a new chapter (services/autocomplete/README.md, "How much typing
    # it saves", reports both).
    holdout: str = "blocks"
    max_val_blocks: int = 32  # 32 * 128 = 4,096 tokens: a steady perplexity, ~40 s on 2 shared cores
    lora: bool = False  # train low-rank adapters (then merged) instead of every weight
    lora_rank: int = 16  # adapter rank, within peft's usual 8-64: small adapters, quick steps
    seed: int = 0  # the same data and seed give the same run (the held-out split is the data's own)
    # Keystroke savings before and after, on this many characters of the user's held-out text
    # (one suggestion request per character: ~2 minutes each way for 1,500 on 2 busy cores).
    # 0 skips the measurement.
    eval_chars: int = 1500
    eval_text: Path | None = None  # held-out text to measure on; default: the held-out blocks
    eval_asks: str = "key"  # the typist asks before every key, or "word": where words end (5x fewer)
    runs_dir: Path = Path("runs/finetune-text")  # run folders: checkpoints, loss.png, the model


@dataclass(frozen=True)
class TextResult:
    tag: str  # the new store version
    ppl_before: float
    ppl_after: float
    seconds: float
    run_dir: Path
    savings_before: float | None = None  # keystroke savings on the held-out text (0-1)
    savings_after: float | None = None

    def summary(self) -> str:
        change = (self.ppl_after / self.ppl_before - 1) * 100
        name = self.tag.split(":", 1)[0]
        savings = (
            ""
            if self.savings_before is None or self.savings_after is None
            else f"keystroke savings {self.savings_before:.1%} -> {self.savings_after:.1%}; "
        )
        return (
            f"validation perplexity {self.ppl_before:.2f} -> {self.ppl_after:.2f} ({change:+.1f}%), "
            f"{savings}in {self.seconds / 60:.1f} min; new version {self.tag}. Serve it: "
            f"`modelport models serve {self.tag}`, back: `modelport models rollback {name}`"
        )


def finetune_text(
    data_path: str | Path,
    settings: TextSettings = TextSettings(),
    *,
    column: str | None = None,
    field: str | None = None,
    pattern: str = "*.txt",
    separator: str = "",
) -> TextResult:
    """The whole job: check data, load base, measure, train, measure, store."""
    data = load_text(data_path, column=column, field=field, pattern=pattern, separator=separator)
    check_amount(data)
    train_records, held_blocks = hold_out(data.records, how=settings.holdout, share=settings.val_fraction)
    val_records = [record for block in held_blocks for record in block]
    started = time.monotonic()
    base = base_model(settings.base)
    from services.autocomplete.causal_lm import load_causal_lm

    # float32 on CPU: with the torch build here, bf16 matmuls ran at ~1 GFLOPS against ~130 for
    # float32, and a bf16-autocast training step ~10x slower. On a GPU the Trainer uses bf16.
    model, tokenizer = load_causal_lm(Path(base.path), dtype="float32")
    check_coverage(tokenizer, train_records)
    train = pack(tokenizer, train_records, block_size=settings.block_size)
    val = pack(tokenizer, val_records, block_size=settings.block_size)[: settings.max_val_blocks]
    check_sizes(train, val, block_size=settings.block_size)

    run_dir = settings.runs_dir / f"{base.tag.name}-{datetime.now():%Y%m%d-%H%M%S}"
    heldout = _heldout_text(held_blocks, settings)
    main_process = int(os.environ.get("RANK", "0")) == 0
    before = _keystroke_savings(base, heldout, "before", settings) if heldout and main_process else None
    if settings.lora:
        model = _with_lora(model, settings.lora_rank, settings.seed)
    trainer = _trainer(model, train, val, settings, run_dir)
    loss_before = trainer.evaluate(metric_key_prefix="before")["before_loss"]
    print(
        f"validation perplexity before: {math.exp(loss_before):.2f} ({len(val)} blocks of "
        f"{settings.block_size} tokens); training {trainer.args.max_steps} steps "
        f"({len(train)} blocks available)",
        flush=True,
    )
    trained = trainer.train()
    loss_after = trainer.evaluate(metric_key_prefix="after")["after_loss"]
    if not trainer.is_world_process_zero():
        seconds = time.monotonic() - started
        return TextResult("", math.exp(loss_before), math.exp(loss_after), seconds, run_dir)

    model_dir = run_dir / "model"
    if settings.lora:
        trainer.model.save_pretrained(model_dir / ADAPTER_DIR)  # the adapter alone, before merging
        # Its phrase memory: the text trained on, never the held-out part it is measured on.
        (model_dir / ADAPTER_DIR / PHRASES_NAME).write_text("\n\n".join(train_records), encoding="utf-8")
        model = trainer.model.merge_and_unload()  # a plain model: the one-model server needs no peft
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    plot_losses(trainer.state.log_history, loss_before, loss_after, model_dir / "loss.png")
    seconds = time.monotonic() - started
    metrics: dict[str, Any] = {
        "val_ppl_before": round(math.exp(loss_before), 3),
        "val_ppl_after": round(math.exp(loss_after), 3),
        "train_minutes": round(seconds / 60, 2),
        "train_steps": trainer.state.global_step,
        "train_seconds": round(trained.metrics["train_runtime"], 1),  # the steps alone
    }
    adapter = (
        {"path": ADAPTER_DIR, "format": "peft-lora", "rank": settings.lora_rank, "base_model": str(base.tag)}
        if settings.lora
        else None
    )
    with new_version(
        base.tag.name,
        model_dir,
        kind="causal-lm",
        metadata={
            "base_model": str(base.tag),
            "dataset": {
                "path": str(Path(data_path).resolve()),
                "sha256": data.sha256,
                "records": len(data.records),
                "holdout": settings.holdout,
                "train_bytes": sum(len(r.encode()) for r in train_records),
                "train_tokens": len(train) * settings.block_size,
                "val_tokens": len(val) * settings.block_size,
            },
            "hyperparameters": hyperparameters(settings),
            "metrics": metrics,
            **({"adapter": adapter} if adapter else {}),
        },
    ) as entry:
        # After: the version as stored and served (a --lora one as its base with its adapter,
        # not the merged model beside it: their greedy suggestions differ in places).
        after = _keystroke_savings(entry, heldout, "after", settings) if before is not None else None
        if before is not None and after is not None:  # (after is None exactly when before is)
            metrics.update(
                keystroke_savings_before=round(before.savings, 4),
                keystroke_savings_after=round(after.savings, 4),
                keystroke_accepted_share_before=before.summary()["accepted_share"],
                keystroke_accepted_share_after=after.summary()["accepted_share"],
                keystroke_eval_chars=after.characters,
                keystroke_eval_text="--eval-text" if settings.eval_text else settings.holdout,
                keystroke_eval_asks=settings.eval_asks,
                # whether the after-figure's version recalled its phrases (phrase_memory.py)
                keystroke_phrase_memory=bool(settings.lora and _phrase_memory_on()),
            )
            entry.info.metadata["metrics"] = metrics
    return TextResult(
        str(entry.tag),
        metrics["val_ppl_before"],
        metrics["val_ppl_after"],
        time.monotonic() - started,
        run_dir,
        None if before is None else round(before.savings, 4),
        None if after is None else round(after.savings, 4),
    )


def _phrase_memory_on() -> bool:
    from services.autocomplete.settings import Settings

    return Settings.from_env().phrase_memory


def _heldout_text(held_blocks: list[list[str]], settings: TextSettings) -> list[str]:
    """The user's held-out text to type, `eval_chars` characters of it: `eval_text`, else the
    held-out blocks (never trained on), spread through the text; none when `eval_chars` is 0."""
    from services.autocomplete.keystroke_savings import read_texts

    if not settings.eval_chars:
        return []
    if settings.eval_text is not None:
        return read_texts(Path(settings.eval_text), settings.eval_chars)
    return excerpts(held_blocks, max_chars=settings.eval_chars)


def _keystroke_savings(entry: Any, texts: list[str], when: str, settings: TextSettings) -> Any:
    """The simulated typist's savings on `texts` with store entry `entry` as the service serves
    it (a Typing); RuntimeError for one it would refuse to run."""
    from services.autocomplete.keystroke_savings import measure

    try:
        typing = measure(entry, texts, asks=settings.eval_asks)
    except ValueError as refused:
        raise RuntimeError(f"keystroke savings {when}: {refused}") from None
    print(
        f"keystroke savings {when}: {typing.savings:.1%} of {typing.characters} held-out characters "
        f"({typing.requests} suggestions asked, p50 {typing.latency_ms(0.5):.0f} ms)",
        flush=True,
    )
    return typing


def _with_lora(model: Any, rank: int, seed: int) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise RuntimeError("--lora needs peft: pip install 'modelport[finetune]'") from exc
    from transformers import set_seed

    set_seed(seed)  # peft draws the adapters' first weights: the same seed, the same run
    # GPT-2's layers are Conv1D (weights stored transposed): peft must be told.
    transposed = any(type(m).__name__ == "Conv1D" for m in model.modules())
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules="all-linear",
        fan_in_fan_out=transposed,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


class _Blocks:
    """Packed blocks as the Trainer wants them: labels = inputs (the model shifts them)."""

    def __init__(self, blocks: list[list[int]]) -> None:
        import torch

        self.ids = torch.tensor(blocks, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _trainer(
    model: Any, train: list[list[int]], val: list[list[int]], settings: TextSettings, run_dir: Path
) -> Any:
    import torch
    from transformers import Trainer, TrainingArguments, default_data_collator

    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = max(1, len(train) // (settings.batch_size * settings.grad_accum * world))
    steps = max(1, min(settings.max_steps, math.ceil(settings.epochs * steps_per_epoch)))
    args = TrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.lora_learning_rate if settings.lora else settings.learning_rate,
        max_steps=steps,
        warmup_steps=max(1, round(steps * settings.warmup_ratio)),
        lr_scheduler_type="cosine",
        logging_steps=max(1, steps // 40),  # ~40 points on the loss curve
        save_strategy="no",  # the result goes to the model store, not to trainer checkpoints
        report_to="none",
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        seed=settings.seed,
        dataloader_num_workers=0,  # blocks are already tensors in memory
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning means nothing without a GPU
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=_Blocks(train),
        eval_dataset=_Blocks(val),
        data_collator=default_data_collator,
    )


def plot_losses(history: list[dict[str, Any]], before: float, after: float, path: Path) -> None:
    """Training loss per logged step, and validation loss before/after, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    points = [(h["step"], h["loss"]) for h in history if "loss" in h]
    last = max([s for s, _ in points], default=1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([s for s, _ in points], [v for _, v in points], label="training loss")
    ax.plot([0, last], [before, after], "o--", label="validation loss (before, after)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["DataError", "TextResult", "TextSettings", "finetune_text", "plot_losses"]
