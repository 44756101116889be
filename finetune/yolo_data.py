"""Plate photos as a YOLO dataset: build one from labelled photos, and check one before training.

    # boxes.csv: filename,xmin,ymin,xmax,ymax (pixels; one row per plate; a row with empty
    # coordinates marks a photo without plates)
    data_yaml = build_yolo_dataset("photos/", "boxes.csv", "plates-dataset/")
    # or readings the plate reader returned, reviewed by a person: one JSON object a line,
    # {"filename": "car1.jpg", "results": [{"box": {"xmin": ..., ...}}, ...]}
    data_yaml = build_yolo_dataset("photos/", "reviewed.jsonl", "plates-dataset/")
    summary = check_yolo_dataset(data_yaml)    # DataError naming the file and line to fix

The layout is Ultralytics': images/{train,val}/*.jpg, labels/{train,val}/*.txt with one
`class cx cy w h` line (fractions of the image size) per box, and data.yaml naming both.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image, UnidentifiedImageError

from finetune.text_data import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PLATE_CLASS = "License_Plate"  # the default detector's one class name
Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels


@dataclass(frozen=True)
class DatasetSummary:
    data_yaml: Path
    names: tuple[str, ...]
    train_images: int
    val_images: int
    boxes: int


def build_yolo_dataset(
    photos: str | Path, boxes: str | Path, out: str | Path, *, val_fraction: float = 0.2, seed: int = 0
) -> Path:
    """Write the YOLO dataset for `photos` labelled by `boxes` (.csv or reviewed .jsonl)."""
    photos, boxes, out = Path(photos), Path(boxes), Path(out)
    if not photos.is_dir():
        raise DataError(f"{photos}: not a folder of photos")
    labelled = _csv_boxes(boxes) if boxes.suffix.lower() == ".csv" else _reading_boxes(boxes)
    if not labelled:
        raise DataError(f"{boxes}: no labelled photos in it")
    sizes = {}
    for name, image_boxes in labelled.items():
        sizes[name] = _image_size(photos / name)
        for box in image_boxes:
            _check_box(box, sizes[name], f"{boxes}: {name}")
    names = sorted(labelled)
    random.Random(seed).shuffle(names)
    n_val = max(1, round(len(names) * val_fraction))
    if len(names) - n_val < 1:
        raise DataError(f"{boxes}: {len(names)} labelled photo(s); need at least 2 (train and val)")
    for split, members in (("val", names[:n_val]), ("train", names[n_val:])):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for name in members:
            shutil.copyfile(photos / name, out / "images" / split / name)
            (out / "labels" / split / f"{Path(name).stem}.txt").write_text(
                "".join(_yolo_line(box, sizes[name]) for box in labelled[name])
            )
    data_yaml = out / "data.yaml"
    data_yaml.write_text(
        yaml.safe_dump(
            {
                "path": str(out.resolve()),
                "train": "images/train",
                "val": "images/val",
                "names": {0: PLATE_CLASS},
            }
        )
    )
    return data_yaml


def _csv_boxes(path: Path) -> dict[str, list[Box]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    wanted = ["filename", "xmin", "ymin", "xmax", "ymax"]
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        missing = [c for c in wanted if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; the header must be {','.join(wanted)}")
        labelled: dict[str, list[Box]] = {}
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            image_boxes = labelled.setdefault(row["filename"].strip(), [])
            coords = [row[c].strip() for c in wanted[1:]]
            if not any(coords):
                continue  # a photo without plates: a negative example
            try:
                image_boxes.append(tuple(float(c) for c in coords))  # type: ignore[arg-type]  # 4 values: wanted[1:] names 4 columns
            except ValueError:
                raise DataError(f"{path} line {number}: coordinates {coords} are not numbers") from None
    return labelled


def _reading_boxes(path: Path) -> dict[str, list[Box]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file (give a .csv of boxes or a .jsonl of readings)")
    labelled: dict[str, list[Box]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            reading = json.loads(line)
            labelled[reading["filename"]] = [
                tuple(float(r["box"][k]) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[misc]  # 4 keys, 4 values
                for r in reading["results"]
            ]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{path} line {number}: not a plate reading ({exc!r}); expected "
                '{"filename": ..., "results": [{"box": {"xmin": ...}}]}'
            ) from None
    return labelled


def _image_size(path: Path) -> tuple[int, int]:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
    try:
        with Image.open(path) as image:
            image.load()  # verify() misses truncated files; decoding them does not
            return image.size
    except FileNotFoundError:
        raise DataError(f"{path}: listed in the labels but not in the photo folder") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: image unreadable ({exc})") from None


def _check_box(box: Box, size: tuple[int, int], where: str) -> None:
    xmin, ymin, xmax, ymax = box
    if not (0 <= xmin < xmax <= size[0] and 0 <= ymin < ymax <= size[1]):
        raise DataError(
            f"{where}: box {box} is not inside the {size[0]}x{size[1]} image "
            "(need 0 <= xmin < xmax <= width, 0 <= ymin < ymax <= height)"
        )


def _yolo_line(box: Box, size: tuple[int, int]) -> str:
    xmin, ymin, xmax, ymax = box
    width, height = size
    return (
        f"0 {(xmin + xmax) / 2 / width:.6f} {(ymin + ymax) / 2 / height:.6f} "
        f"{(xmax - xmin) / width:.6f} {(ymax - ymin) / height:.6f}\n"
    )


def check_yolo_dataset(data_yaml: str | Path) -> DatasetSummary:
    """Everything Ultralytics would trip on later, found now: unreadable images, malformed
    label lines, class ids out of range, coordinates outside the image, an empty split."""
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise DataError(f"{data_yaml}: no such file (a YOLO dataset is described by a data.yaml)")
    try:
        spec = yaml.safe_load(data_yaml.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{data_yaml}: not valid YAML ({exc})") from None
    missing = [k for k in ("train", "val", "names") if k not in spec]
    if missing:
        raise DataError(f"{data_yaml}: missing key(s) {missing}")
    names = spec["names"]
    names = tuple(names[i] for i in sorted(names)) if isinstance(names, dict) else tuple(names)
    if len(names) != 1:
        raise DataError(
            f"{data_yaml}: {len(names)} classes {list(names)}; the plate reader serves "
            "one class (plates): put every plate box in class 0"
        )
    root = Path(spec.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else data_yaml.parent / root
    counts, boxes = {}, 0
    for split in ("train", "val"):
        images = _split_images(root / spec[split])
        if not images:
            raise DataError(f"{data_yaml}: the {split} split ({root / spec[split]}) has no images")
        for image in images:
            _image_size(image)
            boxes += _check_label_file(_label_path(image), len(names))
        counts[split] = len(images)
    return DatasetSummary(data_yaml, names, counts["train"], counts["val"], boxes)


def _split_images(location: Path) -> list[Path]:
    if location.is_dir():
        return sorted(p for p in location.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if location.is_file():  # a .txt list of image paths, relative to the list's folder
        lines: Iterable[str] = location.read_text().split()
        return [p if p.is_absolute() else location.parent / p for p in map(Path, lines)]
    return []


def _label_path(image: Path) -> Path:
    # Ultralytics' rule: the last "images" folder in the path becomes "labels".
    parts = list(image.with_suffix(".txt").parts)
    index = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if index is None:
        raise DataError(f"{image}: YOLO images live under an 'images' folder, labels under 'labels'")
    parts[index] = "labels"
    return Path(*parts)


def _check_label_file(path: Path, n_classes: int) -> int:
    if not path.exists():
        return 0  # no label file: an image without plates, as in Ultralytics
    count = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise DataError(f"{path} line {number}: {line!r} is not numbers") from None
        if len(values) != 5:
            raise DataError(f"{path} line {number}: {len(values)} values; a box is 'class cx cy w h'")
        if not values[0].is_integer() or not 0 <= values[0] < n_classes:
            raise DataError(
                f"{path} line {number}: class {fields[0]} out of range: data.yaml has "
                f"{n_classes} class(es), ids 0..{n_classes - 1}"
            )
        if not all(0 <= v <= 1 for v in values[1:]) or values[3] == 0 or values[4] == 0:
            raise DataError(
                f"{path} line {number}: box {fields[1:]} out of range: cx cy w h are "
                "fractions of the image size, in 0..1 (pixels given?)"
            )
        count += 1
    return count
