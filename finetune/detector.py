"""Fine-tune the YOLO plate detector on your labelled photos; store it as a new version.

    modelport finetune yolo-dataset photos/ boxes.csv plates/    # photos + boxes -> YOLO format
    modelport finetune detector plates/data.yaml --epochs 30     # train, measure, export, store
    modelport models serve plate-detector:<new version>          # the plate reader loads it next start

It measures mAP50 and recall on the validation split with the served detector and with the
fine-tuned one, exports the result to ONNX (the store's plate-detector import does that) and
adds it to the store: the plate reader serves it without Ultralytics or torch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from finetune.store import add_version, base_model, hyperparameters
from finetune.yolo_data import check_yolo_dataset

INSTALL_HINT = "pip install 'modelport[detector-training]'"


@dataclass(frozen=True)
class DetectorSettings:
    base: str = "plate-detector"  # store name (its serving version) or name:version to start from
    epochs: int = 30  # an upper bound: `patience` stops earlier once validation mAP stalls
    # 640 is what the default detector was trained and is exported at; plates are small, and
    # a smaller size loses them. Lower it only to make CPU runs quicker.
    imgsz: int = 640
    batch: int = 16  # Ultralytics' default; -1 sizes it to the GPU's memory
    patience: int = 10  # stop when validation mAP has not improved for this many epochs
    device: str = ""  # "" = the GPU if there is one, else CPU; "0,1" = two GPUs (Ultralytics DDP)
    workers: int = 2  # data-loading processes; more only help with more cores
    seed: int = 0
    runs_dir: Path = Path("runs/finetune-detector")  # Ultralytics' run folders (weights, results.csv)


@dataclass(frozen=True)
class DetectorResult:
    tag: str
    before: dict[str, float]  # {"map50": ..., "recall": ...} of the base on the val split
    after: dict[str, float]
    seconds: float
    run_dir: Path

    def summary(self) -> str:
        name = self.tag.split(":", 1)[0]
        return (
            f"mAP50 {self.before['map50']:.3f} -> {self.after['map50']:.3f}, recall "
            f"{self.before['recall']:.3f} -> {self.after['recall']:.3f} in "
            f"{self.seconds / 60:.1f} min; new version {self.tag}. Serve it: "
            f"`modelport models serve {self.tag}`, back: `modelport models rollback {name}`"
        )


def finetune_detector(
    data_yaml: str | Path, settings: DetectorSettings = DetectorSettings()
) -> DetectorResult:
    """The whole job: check the dataset, measure the base, train, measure, export and store."""
    dataset = check_yolo_dataset(data_yaml)  # data errors surface before anything loads
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise RuntimeError(f"fine-tuning the detector needs Ultralytics: {INSTALL_HINT}") from exc
    started = time.monotonic()
    base = base_model(settings.base)
    run_dir = (settings.runs_dir / f"{base.tag.name}-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    before = _validate(YOLO(str(Path(base.path) / "best.pt")), dataset.data_yaml, settings, run_dir, "before")
    model = YOLO(str(Path(base.path) / "best.pt"))
    model.train(
        data=str(dataset.data_yaml),
        epochs=settings.epochs,
        imgsz=settings.imgsz,
        batch=settings.batch,
        patience=settings.patience,
        device=settings.device or None,
        workers=settings.workers,
        seed=settings.seed,
        project=str(run_dir),
        name="train",
        exist_ok=True,
        # Ultralytics' optimizer=auto picks AdamW at lr 0.002 for one class and a small
        # dataset: a gentle step that keeps what the base learned. Plots fetch a font
        # from the internet; results.csv has the same numbers.
        plots=False,
    )
    best = Path(model.trainer.best)  # type: ignore[attr-defined]  # Ultralytics types Model.trainer as None (set by train())
    after = _validate(YOLO(str(best)), dataset.data_yaml, settings, run_dir, "after")
    seconds = time.monotonic() - started
    tag = add_version(
        base.tag.name,
        best,
        kind="plate-detector",
        metadata={
            "base_model": str(base.tag),
            "dataset": {
                "path": str(dataset.data_yaml.resolve()),
                "sha256": _dataset_sha256(dataset.data_yaml),
                "train_images": dataset.train_images,
                "val_images": dataset.val_images,
                "boxes": dataset.boxes,
            },
            "hyperparameters": hyperparameters(settings),
            "metrics": {
                "map50_before": before["map50"],
                "map50_after": after["map50"],
                "recall_before": before["recall"],
                "recall_after": after["recall"],
            },
        },
    )
    return DetectorResult(tag, before, after, seconds, run_dir)


def _validate(
    model: Any, data_yaml: Path, settings: DetectorSettings, run_dir: Path, name: str
) -> dict[str, float]:
    metrics = model.val(
        data=str(data_yaml),
        split="val",
        imgsz=settings.imgsz,
        batch=settings.batch,
        device=settings.device or None,
        workers=settings.workers,
        plots=False,
        project=str(run_dir),
        name=name,
        exist_ok=True,
    )
    return {"map50": round(float(metrics.box.map50), 4), "recall": round(float(metrics.box.mr), 4)}


def _dataset_sha256(data_yaml: Path) -> str:
    from services.core.sources import sha256_of

    # The dataset folder (images, labels, data.yaml) when data.yaml sits at its top.
    return sha256_of(data_yaml.parent)


__all__ = ["DetectorResult", "DetectorSettings", "finetune_detector"]
