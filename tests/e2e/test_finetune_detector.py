"""Fine-tune the plate detector on a tiny real-image dataset, then serve the new version.

Photos: two real plate crops (fast-plate-ocr's) pasted onto Ultralytics' two real photos at
known boxes. One epoch at 320 px on CPU: the test proves the pipeline (dataset helper ->
metrics before/after -> ONNX export -> new store version -> the plate reader serves it ->
rollback), not accuracy; the version served must still find and read a plate.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from finetune.cli import finetune
from tests.assets import asset
from tests.scenes import iou
from tests.servers import serve

pytestmark = pytest.mark.slow
# (background, plate, top-left corner, scale): positions and scales vary so train != val.
SCENES = [
    ("bus", "plate_ad799kb", (300, 700), 2.0),
    ("bus", "plate_krw301", (80, 820), 1.5),
    ("bus", "plate_ad799kb", (450, 500), 1.2),
    ("zidane", "plate_krw301", (900, 480), 2.0),
    ("zidane", "plate_ad799kb", (120, 560), 1.6),
    ("zidane", "plate_krw301", (560, 90), 1.0),
    ("bus", "plate_krw301", (520, 880), 1.8),
    ("zidane", "plate_ad799kb", (300, 300), 2.2),
]


def _photos(folder: Path) -> Path:
    """Write the scenes as JPEGs plus boxes.csv (filename,xmin,ymin,xmax,ymax); return the CSV."""
    folder.mkdir()
    rows = []
    for i, (background, plate_name, at, scale) in enumerate(SCENES):
        photo = Image.open(asset(background)).convert("RGB")
        plate = Image.open(asset(plate_name)).convert("RGB")
        plate = plate.resize((round(plate.width * scale), round(plate.height * scale)))
        photo.paste(plate, at)
        photo.save(folder / f"scene{i}.jpg", quality=92)
        rows.append([f"scene{i}.jpg", at[0], at[1], at[0] + plate.width, at[1] + plate.height])
    rows.append(["scene_empty.jpg", "", "", "", ""])  # a photo without plates is a negative
    Image.open(asset("zidane")).convert("RGB").save(folder / "scene_empty.jpg")
    boxes = folder.parent / "boxes.csv"
    with boxes.open("w", newline="") as stream:
        csv.writer(stream).writerows([["filename", "xmin", "ymin", "xmax", "ymax"], *rows])
    return boxes


def test_finetune_detector_then_serve_and_roll_back(
    plate_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.core.model_store import resolve, rollback, serving_tag, set_serving

    monkeypatch.chdir(tmp_path)  # Ultralytics' run folders land here, not in the checkout
    base_tag = str(resolve(serving_tag("plate-detector")).tag)
    boxes = _photos(tmp_path / "photos")
    made = CliRunner().invoke(finetune, ["yolo-dataset", "photos", str(boxes), "dataset"])
    assert made.exit_code == 0, made.output
    assert "7 train + 2 val images, 8 boxes" in made.output

    trained = CliRunner().invoke(
        finetune,
        [
            "detector",
            "dataset/data.yaml",
            "--epochs",
            "1",
            "--imgsz",
            "320",
            "--batch",
            "4",
            "--workers",
            "0",
        ],
    )
    assert trained.exit_code == 0, trained.output
    summary = trained.stdout.strip().splitlines()[-1]
    assert summary.startswith("mAP50 ") and " -> " in summary and "modelport models serve" in summary
    new_tag = summary.split("new version ")[1].split(".")[0]
    entry = resolve(new_tag)
    meta = entry.info.metadata
    assert new_tag != base_tag and meta["base_model"] == base_tag
    assert set(meta["metrics"]) == {"map50_before", "map50_after", "recall_before", "recall_after"}
    assert all(0.0 <= v <= 1.0 for v in meta["metrics"].values())
    assert meta["hyperparameters"]["epochs"] == 1 and meta["dataset"]["val_images"] == 2
    assert {"model.onnx", "best.pt"} <= {p.name for p in Path(entry.path).iterdir()}

    assert set_serving(new_tag) == new_tag  # what `modelport models serve TAG` does
    log = tmp_path / "plate_reader.log"
    with serve("services.plate_reader.service:PlateReader", log_path=log) as url:
        photo = (tmp_path / "photos" / "scene0.jpg").read_bytes()
        response = httpx.post(
            f"{url}/v1/plate-reader", timeout=60, files={"upload": ("scene0.jpg", photo, "image/jpeg")}
        )
        assert response.status_code == 200, response.text
        body = response.json()
    # The fine-tuned detector finds the plate where it was pasted, and the OCR reads it.
    assert body["filename"] == "scene0.jpg"
    _, _, (x, y), scale = SCENES[0]
    width, height = Image.open(asset("plate_ad799kb")).size
    truth = (x, y, x + round(width * scale), y + round(height * scale))
    # One epoch on 7 photos may add false boxes elsewhere; the pasted plate must be among them.
    at_plate = [
        p
        for p in body["results"]
        if iou((p["box"]["xmin"], p["box"]["ymin"], p["box"]["xmax"], p["box"]["ymax"]), truth) > 0.5
    ]
    assert [p["plate"] for p in at_plate] == ["AD799KB"], (truth, body["results"])
    assert f"detector {new_tag}" in log.read_text()  # the service loaded the fine-tuned version
    assert rollback("plate-detector") == base_tag


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("3 0.5 0.5 0.1 0.1\n", r"class 3 out of range: data.yaml has 1 class\(es\), ids 0..0"),
        ("0 0.5 0.5 120 40\n", "out of range: cx cy w h are fractions of the image size"),
        ("0 0.5 0.5\n", r"3 values; a box is 'class cx cy w h'"),
    ],
)
def test_bad_labels_fail_before_training(tmp_path: Path, label: str, message: str) -> None:
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (64, 48)).save(tmp_path / "images" / split / "a.jpg")
        (tmp_path / "labels" / split / "a.txt").write_text(label)
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: plate}\n")
    result = CliRunner().invoke(finetune, ["detector", str(tmp_path / "data.yaml")])
    assert result.exit_code == 1
    assert "labels/train/a.txt line 1" in result.output and re.search(message, result.output)


def test_unreadable_photo_and_box_outside_the_image(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("RGB", (100, 50)).save(photos / "small.jpg")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("filename,xmin,ymin,xmax,ymax\nbroken.jpg,1,1,10,10\n")
    result = CliRunner().invoke(finetune, ["yolo-dataset", str(photos), str(boxes), str(tmp_path / "out")])
    assert result.exit_code == 1 and "broken.jpg: image unreadable" in result.output
    boxes.write_text("filename,xmin,ymin,xmax,ymax\nsmall.jpg,10,10,120,40\n")
    result = CliRunner().invoke(finetune, ["yolo-dataset", str(photos), str(boxes), str(tmp_path / "out")])
    assert result.exit_code == 1 and "is not inside the 100x50 image" in result.output
    boxes.write_text("file,x1,y1\nsmall.jpg,1,1\n")
    result = CliRunner().invoke(finetune, ["yolo-dataset", str(photos), str(boxes), str(tmp_path / "out")])
    assert result.exit_code == 1 and "missing column(s) ['filename', 'xmin'" in result.output
