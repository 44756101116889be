"""Fine-tune a causal LM from the model store on your text; store the result as a new version.

    modelport finetune text notes.txt                        # the autocompleter's default model
    modelport finetune text tickets.csv --column body --base gpt2
    modelport finetune text chats.jsonl --field text --lora  # LoRA for larger bases
    accelerate launch -m finetune.cli text notes.txt         # several GPUs (or torchrun -m)

It reports validation perplexity before and after, draws the loss curve (loss.png, kept in
the run folder and in the new store entry), and saves the model under the base's store name,
so `modelport models serve TAG` / `rollback NAME` switch the autocompleter between versions.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from finetune.store import add_version, base_model, hyperparameters
from finetune.text_data import DataError, check_sizes, load_text, pack, split_records


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
    lora_learning_rate: float = 5e-4  # LoRA's few new weights start at zero and need a larger step
    # 20 steps * 1,024 tokens: ~5 minutes for SmolLM2-135M on 2 shared CPU cores, enough for a
    # clear perplexity drop on a new register. On a GPU, raise it (or use --epochs).
    max_steps: int = 20
    epochs: float = 1.0  # stop after this many passes even if max_steps is not reached
    warmup_ratio: float = 0.1  # a short warm-up keeps the first updates from wrecking the base
    val_fraction: float = 0.1  # share of records held out for validation
    max_val_blocks: int = 32  # 32 * 128 = 4,096 tokens: a steady perplexity, ~40 s on 2 shared cores
    lora: bool = False  # train low-rank adapters (then merged) instead of every weight
    lora_rank: int = 16  # adapter rank, within peft's usual 8-64: small adapters, quick steps
    seed: int = 0  # the same data and seed give the same split and the same run
    runs_dir: Path = Path("runs/finetune-text")  # run folders: checkpoints, loss.png, the model


@dataclass(frozen=True)
class TextResult:
    tag: str  # the new store version
    ppl_before: float
    ppl_after: float
    seconds: float
    run_dir: Path

    def summary(self) -> str:
        change = (self.ppl_after / self.ppl_before - 1) * 100
        name = self.tag.split(":", 1)[0]
        return (
            f"validation perplexity {self.ppl_before:.2f} -> {self.ppl_after:.2f} ({change:+.1f}%) "
            f"in {self.seconds / 60:.1f} min; new version {self.tag}. Serve it: "
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
    train_records, val_records = split_records(
        data.records, val_fraction=settings.val_fraction, seed=settings.seed
    )
    started = time.monotonic()
    base = base_model(settings.base)
    from services.autocomplete.causal_lm import load_causal_lm

    # float32 on CPU: with the torch build here, bf16 matmuls ran at ~1 GFLOPS against ~130 for
    # float32, and a bf16-autocast training step ~10x slower. On a GPU the Trainer uses bf16.
    model, tokenizer = load_causal_lm(Path(base.path), dtype="float32")
    train = pack(tokenizer, train_records, block_size=settings.block_size)
    val = pack(tokenizer, val_records, block_size=settings.block_size)[: settings.max_val_blocks]
    check_sizes(train, val, block_size=settings.block_size)

    run_dir = settings.runs_dir / f"{base.tag.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if settings.lora:
        model = _with_lora(model, settings.lora_rank)
    trainer = _trainer(model, train, val, settings, run_dir)
    loss_before = trainer.evaluate(metric_key_prefix="before")["before_loss"]
    print(
        f"validation perplexity before: {math.exp(loss_before):.2f} ({len(val)} blocks of "
        f"{settings.block_size} tokens); training {trainer.args.max_steps} steps "
        f"({len(train)} blocks available)",
        flush=True,
    )
    trainer.train()
    loss_after = trainer.evaluate(metric_key_prefix="after")["after_loss"]
    if settings.lora:
        model = trainer.model.merge_and_unload()  # a plain model: the service needs no peft
    seconds = time.monotonic() - started
    if not trainer.is_world_process_zero():
        return TextResult("", math.exp(loss_before), math.exp(loss_after), seconds, run_dir)

    model_dir = run_dir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    plot_losses(trainer.state.log_history, loss_before, loss_after, model_dir / "loss.png")
    metrics = {
        "val_ppl_before": round(math.exp(loss_before), 3),
        "val_ppl_after": round(math.exp(loss_after), 3),
        "train_minutes": round(seconds / 60, 2),
    }
    tag = add_version(
        base.tag.name,
        model_dir,
        kind="causal-lm",
        metadata={
            "base_model": str(base.tag),
            "dataset": {
                "path": str(Path(data_path).resolve()),
                "sha256": data.sha256,
                "records": len(data.records),
                "train_tokens": len(train) * settings.block_size,
                "val_tokens": len(val) * settings.block_size,
            },
            "hyperparameters": hyperparameters(settings),
            "metrics": metrics,
        },
    )
    return TextResult(tag, metrics["val_ppl_before"], metrics["val_ppl_after"], seconds, run_dir)


def _with_lora(model: Any, rank: int) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise RuntimeError("--lora needs peft: pip install 'modelport[finetune]'") from exc
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
