"""The plate reader's model kinds and default models, registered with the model store.

    import services.plate_reader.model_kinds  # then `import_model("plate-detector")` works

plate-detector: an Ultralytics YOLO checkpoint (.pt), exported to the ONNX model the service
runs (detector_export.py; needs Ultralytics at import time, never while serving).
plate-ocr: a CTC text recogniser as ONNX, stored as it is.
plate-ocr-tail: a plate-tuned recogniser's neck and head (tuned_tail.py), grafted on the
plate-ocr it was trained on when served; the default's file ships in models/ with its card.
plate-text-detector: a DB text-line detector as ONNX, stored as it is (text_lines.py: it finds
the plate number's line in each crop, so the state name and frame text are not read into it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.core.model_store import ModelKind, ModelSpec, prepare_copy, register
from services.core.sources import LocalFile, PackageFile

# The plate-tuned tail trained here on PP-OCRv6 small (models/MODEL_CARD.md).
TUNED_TAIL = Path(__file__).with_name("models") / "plate-tuned-tail.onnx"


def _prepare_detector(fetched: Path, model_dir: Path) -> dict[str, Any]:
    from services.plate_reader.detector_export import export_detector  # Ultralytics: heavy

    return export_detector(fetched, model_dir)


register(
    ModelKind("plate-detector", _prepare_detector),
    ModelSpec(
        "plate-detector",
        "plate-detector",
        PackageFile(
            "safelicensing==1.0.3",
            "safelicensing/best.pt",
            "13fe46504f4609387768cfa4270624a6d386c42efa496f1805df6305c14e597f",
        ),
        "Apache-2.0",
        "YOLOv8n licence-plate detector (one class), served as ONNX",
    ),
    defaults=("plate-detector",),
)
register(
    ModelKind("plate-ocr", prepare_copy("model.onnx")),
    ModelSpec(
        "plate-ocr",
        "plate-ocr",
        PackageFile(
            "rapidocr==3.10.0",
            "rapidocr/models/PP-OCRv6_rec_small.onnx",
            "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
        ),
        "Apache-2.0",
        "PP-OCRv6 small text recogniser (ONNX, 18,710 classes), reads plate crops",
    ),
    defaults=("plate-ocr",),
)
register(
    ModelKind("plate-ocr-tail", prepare_copy("tail.onnx")),
    ModelSpec(
        "plate-ocr-tail",
        "plate-ocr-tail",
        LocalFile(str(TUNED_TAIL), "0f567d61801f36c0e092cfa5dd11ade6b1fc84b85816ee989b7ca460cee869f4"),
        "Apache-2.0",
        "plate-tuned neck and head for PP-OCRv6 small, read in the same call (1.4 MB)",
    ),
    defaults=("plate-ocr-tail",),
)
register(
    ModelKind("plate-text-detector", prepare_copy("model.onnx")),
    ModelSpec(
        "plate-text-detector",
        "plate-text-detector",
        PackageFile(
            "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        ),
        "Apache-2.0",
        "PP-OCRv4 text detector (ONNX), finds the text lines in plate crops",
    ),
    defaults=("plate-text-detector",),
)
