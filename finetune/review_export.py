"""Reviewed plate readings as training data: `modelport reviews export OUT` writes

    OUT/ocr/           the crops people read, labels.csv: filename,plate,split,photo
                       (split train/val by photo: no photo's plates in both)
    OUT/detector/      a YOLO dataset (finetune.yolo_data) of the photos, boxes as corrected;
                       a box marked "not a plate" is left out
    OUT/label-studio.json   every recorded item as a Label Studio task with the reader's
                       prediction (box + text), for teams that label there

Only decided items go into ocr/ and detector/ (skipped and pending ones do not).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image

from finetune.yolo_data import build_yolo_dataset
from services.plate_reader.review_store import ReviewItem, ReviewStore

VAL_SHARE = 0.2  # of photos, chosen by a hash of the photo: stable across exports


@dataclass(frozen=True)
class ExportSummary:
    ocr_crops: int
    detector_photos: int
    label_studio_tasks: int


def export_reviews(
    store: ReviewStore, out: Path, *, camera_id: str | None = None, since: datetime | None = None
) -> ExportSummary:
    """Everything, or the items of one camera recorded at or after `since` (the runbook of a
    drifting camera: services/plate_reader/README.md)."""
    out.mkdir(parents=True, exist_ok=True)
    # Items recorded as text only (MODELPORT_PLATE_STORE_IMAGES=off) have no image to learn from.
    decided = [item for item in store.decided(camera_id=camera_id, since=since) if item.photo_path]
    return ExportSummary(
        _ocr(store, decided, out / "ocr"),
        _detector(store, decided, out / "detector"),
        _label_studio(store, out / "label-studio.json", camera_id=camera_id, since=since),
    )


def _split(photo_path: str) -> str:
    return (
        "val" if int(hashlib.sha256(photo_path.encode()).hexdigest(), 16) % 100 < VAL_SHARE * 100 else "train"
    )


def _ocr(store: ReviewStore, decided: list[ReviewItem], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in decided:
        if item.corrected_plate is None:  # not a plate: no text to learn
            continue
        name = f"{item.id}.jpg"
        shutil.copyfile(store.image(item, "crop"), out / name)
        rows.append(
            {
                "filename": name,
                "plate": item.corrected_plate,
                "split": _split(item.photo_path),
                "photo": Path(item.photo_path).name,
            }
        )
    with open(out / "labels.csv", "w", newline="") as labels:
        writer = csv.DictWriter(labels, ["filename", "plate", "split", "photo"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _detector(store: ReviewStore, decided: list[ReviewItem], out: Path) -> int:
    by_photo: dict[str, list[ReviewItem]] = defaultdict(list)
    for item in decided:
        by_photo[item.photo_path].append(item)
    if len(by_photo) < 2:  # a YOLO dataset needs a train and a val photo
        return 0
    photos = out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    with open(out / "boxes.csv", "w", newline="") as boxes:
        writer = csv.writer(boxes)
        writer.writerow(["filename", "xmin", "ymin", "xmax", "ymax"])
        for photo_path, items in by_photo.items():
            name = Path(photo_path).name
            shutil.copyfile(store.images_dir / photo_path, photos / name)
            kept = [i.corrected_box or i.box for i in items if i.decision != "not_a_plate"]
            for box in kept:
                writer.writerow([name, box["xmin"], box["ymin"], box["xmax"], box["ymax"]])
            if not kept:
                writer.writerow([name, "", "", "", ""])  # a photo without plates
    build_yolo_dataset(photos, out / "boxes.csv", out / "dataset")
    return len(by_photo)


def _label_studio(store: ReviewStore, path: Path, *, camera_id: str | None, since: datetime | None) -> int:
    tasks, cursor = [], None
    while True:
        items, cursor = store.list(camera_id=camera_id, limit=200, cursor=cursor)
        for item in items:
            if since is not None and item.created_at < since:
                continue
            width, height = Image.open(store.image(item, "photo")).size
            box = item.box
            region = {
                "x": 100 * box["xmin"] / width,
                "y": 100 * box["ymin"] / height,
                "width": 100 * (box["xmax"] - box["xmin"]) / width,
                "height": 100 * (box["ymax"] - box["ymin"]) / height,
            }
            common = {"to_name": "image", "original_width": width, "original_height": height}
            tasks.append(
                {
                    "data": {
                        "image": str(store.image(item, "photo")),
                        "review_id": item.id,
                        "camera_id": item.camera_id,
                    },
                    "predictions": [
                        {
                            "model_version": item.ocr_model,
                            "score": item.score,
                            "result": [
                                {
                                    "id": item.id,
                                    "type": "rectanglelabels",
                                    "from_name": "label",
                                    "value": {**region, "rectanglelabels": ["plate"]},
                                    **common,
                                },
                                {
                                    "id": item.id,
                                    "type": "textarea",
                                    "from_name": "plate_text",
                                    "value": {**region, "text": [item.plate]},
                                    **common,
                                },
                            ],
                        }
                    ],
                }
            )
        if cursor is None:
            break
    path.write_text(json.dumps(tasks, indent=1))
    return len(tasks)
