"""`modelport finetune ...`: make the models yours, as new versions the services serve.

    modelport finetune text notes.txt
    modelport finetune detector plates/data.yaml --epochs 20
    modelport finetune ocr reviews/ocr --epochs 10
    modelport finetune yolo-dataset photos/ boxes.csv plates-dataset/
    modelport finetune import-gpt2-simple checkpoint/run1 --name my-gpt2

Also runs as `python -m finetune.cli ...`, which is what `accelerate launch -m` and
`torchrun -m` need for several GPUs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from finetune.text_data import HOLDOUTS
from services.core.console import console, fail as _fail


@click.group()
def finetune() -> None:
    """Fine-tune a model on your data; the result is a new version in the model store."""
    # Before torch loads (each command imports it): OpenMP threads spinning while they wait
    # starve each other on shared cores (with one of 2 cores busy, libgomp's default spinning
    # made GPT-2 forward passes 2x slower than passive waiting; services/autocomplete/
    # settings.py:tune_openmp). Training runs beside other work (the tests, a server) more
    # often than alone, so it waits passively. Set here, not at import: `modelport serve`
    # imports this module, and its servers would inherit the setting.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")


@finetune.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--base", help="Store name (or name:version) to start from [default: smollm2-135m].")
@click.option("--column", help="CSV: the column holding the text.")
@click.option("--field", help="JSONL: the field holding the text [default: text].")
@click.option("--pattern", default="*.txt", show_default=True, help="Folder: which files to read.")
@click.option("--separator", default="", help="A line that separates records [default: a blank line].")
@click.option("--max-steps", type=int, help="Optimizer steps at most.")
@click.option("--epochs", type=float, help="Passes over the training split at most.")
@click.option("--learning-rate", type=float)
@click.option("--batch-size", type=int, help="Blocks per step and device.")
@click.option("--block-size", type=int, help="Tokens per training block.")
@click.option("--val-fraction", type=float, help="Share of the text held out (validation, savings).")
@click.option(
    "--holdout",
    type=click.Choice(HOLDOUTS),
    help="Held out for validation and keystroke savings: every 10th ~1.5 KB block of the text, "
    "or its last tenth [default: blocks].",
)
@click.option(
    "--lora/--full", default=None, help="LoRA adapters (merged when saving) or every weight [default: full]."
)
@click.option("--seed", type=int)
@click.option(
    "--eval-chars", type=int, help="Keystroke savings before/after on this many held-out chars (0: skip)."
)
@click.option(
    "--eval-text",
    type=click.Path(exists=True, path_type=Path),
    help="The user's held-out text for keystroke savings [default: the held-out part].",
)
@click.option(
    "--eval-asks",
    type=click.Choice(["key", "word"]),
    help="The typist asks before every key, or only where a word ends [default: key].",
)
@click.option(
    "--backend",
    type=click.Choice(["transformers", "gpt-2-simple"]),
    default="transformers",
    show_default=True,
    help="gpt-2-simple: train with TensorFlow, then import the checkpoint.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="gpt-2-simple: the model folder to train (models/124M or checkpoint/run1).",
)
@click.option("--name", help="gpt-2-simple: the store name of the result.")
def text(
    data: Path,
    column: str | None,
    field: str | None,
    pattern: str,
    separator: str,
    backend: str,
    checkpoint: Path | None,
    name: str | None,
    **overrides: Any,
) -> None:
    """Fine-tune a causal LM on DATA: a .txt file or folder, a .csv column or a .jsonl field."""
    from finetune.text import DataError, TextSettings, finetune_text
    from services.core.model_store import ModelNotFound

    options = {"column": column, "field": field, "pattern": pattern, "separator": separator}
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("lora") and "learning_rate" in given:  # LoRA's step has its own setting
        given["lora_learning_rate"] = given.pop("learning_rate")
    try:
        if backend == "gpt-2-simple":
            from finetune.gpt2_simple import Gpt2SimpleSettings, finetune_with_gpt2_simple

            if checkpoint is None or name is None:
                raise click.UsageError("--backend gpt-2-simple needs --checkpoint and --name")
            renamed = {
                "max_steps": "steps",
                "batch_size": "batch_size",
                "learning_rate": "learning_rate",
                "val_fraction": "val_fraction",
                "seed": "seed",
            }
            unsupported = sorted(set(given) - set(renamed))
            if unsupported:
                raise click.UsageError(f"--backend gpt-2-simple does not take {unsupported}")
            settings = dataclasses.replace(Gpt2SimpleSettings(), **{renamed[k]: v for k, v in given.items()})
            result = finetune_with_gpt2_simple(data, checkpoint, name, settings, **options)
        else:
            result = finetune_text(
                data,
                dataclasses.replace(TextSettings(), **given),
                column=column,
                field=field,
                pattern=pattern,
                separator=separator,
            )
    except (DataError, ModelNotFound, RuntimeError) as exc:
        _fail(exc)
    if result.tag:  # only the main process of a multi-GPU run stores the model
        console.print(result.summary(), soft_wrap=True)


@finetune.command()
@click.argument("data_yaml", type=click.Path(path_type=Path))
@click.option("--base", help="Store name (or name:version) to start from [default: plate-detector].")
@click.option("--epochs", type=int)
@click.option("--imgsz", type=int, help="Training image size (keep 640 unless testing).")
@click.option("--batch", type=int)
@click.option("--device", help='"" = GPU if any, "cpu", "0", "0,1" (several GPUs).')
@click.option("--workers", type=int, help="Data-loading processes.")
def detector(data_yaml: Path, **overrides: object) -> None:
    """Fine-tune the plate detector on a YOLO dataset (DATA_YAML) and store it as a new version."""
    from finetune.detector import DetectorSettings, finetune_detector

    _run_job(finetune_detector, data_yaml, DetectorSettings(), overrides)


@finetune.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--base", help="Store name (or name:version) to start from [default: plate-ocr].")
@click.option("--epochs", type=float, help="Passes over the training crops at most [default: 10].")
@click.option("--max-steps", type=int, help="Optimizer steps at most.")
@click.option("--batch-size", type=int, help="Crops per step [default: 32].")
@click.option("--learning-rate", type=float, help="AdamW's peak learning rate [default: 5e-4].")
@click.option(
    "--val-fraction",
    type=float,
    help="Share held out for validation (by photo) when labels.csv marks no split=val rows.",
)
@click.option(
    "--train-backbone/--freeze-backbone",
    default=None,
    help="Train every weight (~9x slower per step on CPU), or only the neck and head [default: freeze].",
)
@click.option("--augment/--no-augment", default=None, help="Light augmentations [default: on].")
@click.option(
    "--lines",
    type=click.Choice(["cut", "whole"]),
    help="Train on the number's lines as the reader cuts them, or on whole crops [default: cut].",
)
@click.option("--max-minutes", type=float, help="Training time budget: the steps are sized to end within it.")
@click.option("--validate-every", type=int, help="Steps between validations [default: once an epoch].")
@click.option("--seed", type=int)
def ocr(data_dir: Path, **overrides: object) -> None:
    """Fine-tune the plate OCR on DATA_DIR (plate crops + labels.csv: filename,plate[,split,photo];
    split=val validates, split=test is left out) and store it as a new plate-ocr version."""
    try:
        from finetune.ocr import OcrSettings, finetune_ocr
    except ImportError as exc:
        _fail(f"fine-tuning the OCR needs torch and onnx2torch ({exc}): pip install 'modelport[finetune]'")
    _run_job(finetune_ocr, data_dir, OcrSettings(), overrides)


def _run_job(
    job: Callable[[Path, Any], Any], data: Path, defaults: Any, overrides: dict[str, object]
) -> None:
    """Run a fine-tuning job on `data` with `defaults` updated by the options given; print its summary."""
    from finetune.text_data import DataError
    from services.core.model_store import ModelNotFound

    settings = dataclasses.replace(defaults, **{k: v for k, v in overrides.items() if v is not None})
    try:
        result = job(data, settings)
    except (DataError, ModelNotFound, RuntimeError) as exc:
        _fail(exc)
    console.print(result.summary(), soft_wrap=True)


@finetune.command("yolo-dataset")
@click.argument("photos", type=click.Path(path_type=Path))
@click.argument("boxes", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--val-fraction", default=0.2, show_default=True, help="Share of photos for validation.")
@click.option("--seed", default=0, show_default=True)
def yolo_dataset(photos: Path, boxes: Path, out: Path, val_fraction: float, seed: int) -> None:
    """Turn PHOTOS labelled by BOXES (a CSV filename,xmin,ymin,xmax,ymax or a JSONL of reviewed
    plate-reader readings) into a YOLO dataset in OUT."""
    from finetune.text_data import DataError
    from finetune.yolo_data import build_yolo_dataset, check_yolo_dataset

    try:
        summary = check_yolo_dataset(
            build_yolo_dataset(photos, boxes, out, val_fraction=val_fraction, seed=seed)
        )
    except DataError as exc:
        _fail(exc)
    console.print(
        f"wrote {summary.data_yaml}: {summary.train_images} train + {summary.val_images} "
        f"val images, {summary.boxes} boxes. Next: modelport finetune detector {summary.data_yaml}",
        soft_wrap=True,
    )


@finetune.command("import-gpt2-simple")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Store name for the model (e.g. my-gpt2).")
def import_gpt2_simple_(checkpoint: Path, name: str) -> None:
    """Import a gpt-2-simple / OpenAI TensorFlow GPT-2 CHECKPOINT folder (checkpoint/run1) as a
    transformers GPT-2 model."""
    from finetune.gpt2_simple import import_gpt2_simple
    from finetune.text_data import DataError

    try:
        result = import_gpt2_simple(checkpoint, name)
    except (DataError, RuntimeError) as exc:
        _fail(exc)
    verb = "imported" if result.created else "already in the store:"
    console.print(
        f"{verb} {result.tag}. Serve it: MODELPORT_AUTOCOMPLETE_MODEL={result.tag} "
        "bentoml serve services.autocomplete.service:Autocomplete",
        soft_wrap=True,
    )


if __name__ == "__main__":
    finetune()
