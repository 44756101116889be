"""Turn an Ultralytics YOLO detector checkpoint (.pt) into the ONNX model the service runs.

Runs when a detector is imported into the model store (and after fine-tuning), never while
serving: it needs Ultralytics and torch, the plate reader's serving path needs neither.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

EXPORT_IMGSZ = 640  # the size the detector was trained at; serving letterboxes to it
INSTALL_HINT = "pip install 'modelport[detector-training]'"


def export_detector(checkpoint: Path, model_dir: Path) -> dict[str, Any]:
    """Write `model.onnx` (dynamic batch and size) and keep `best.pt` for fine-tuning.

    Returns the metadata the store records: class names and the export size.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks or asset downloads
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise RuntimeError(f"exporting a YOLO detector needs Ultralytics: {INSTALL_HINT}") from exc

    with tempfile.TemporaryDirectory(prefix="modelport-export-") as tmp:
        # Export next to a copy: Ultralytics writes the .onnx beside the .pt it was given.
        work = Path(tmp) / "best.pt"
        shutil.copyfile(checkpoint, work)
        yolo = YOLO(str(work))
        if yolo.task != "detect":
            raise ValueError(f"{checkpoint.name} is a YOLO {yolo.task} model; a detector is needed")
        onnx_path = yolo.export(format="onnx", dynamic=True, simplify=True, imgsz=EXPORT_IMGSZ)
        shutil.copyfile(onnx_path, model_dir / "model.onnx")
        shutil.copyfile(checkpoint, model_dir / "best.pt")
        return {"classes": [yolo.names[i] for i in sorted(yolo.names)], "imgsz": EXPORT_IMGSZ}
