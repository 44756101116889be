"""Plate-crop datasets for `modelport finetune ocr`: read labels.csv, split, augment.

    data = load_ocr_dataset(Path("reviews/ocr"), val_fraction=0.1)
    data.train, data.val                        # OcrSample(filename, path, plate, group)
    crop = augment(data.train[0].image(), rng)  # a lightly changed RGB uint8 copy

DATA_DIR holds the crops and ``labels.csv`` with ``filename,plate`` and optionally
``split`` and ``photo`` (what ``modelport reviews export`` writes; the synthetic set also
has ``format`` and ``conditions``, which are ignored here).

The split convention, so that nothing measured elsewhere is trained on:

- ``split`` = ``val`` (or ``validation``): the validation rows. Before -> after accuracy is
  measured on them and the best epoch is chosen on them; never trained on.
- ``split`` = ``test``: left out entirely. ``modelport evaluate plates --split test`` reports
  on them later, as the project's dev/test discipline asks (tune on dev, report test).
- ``split`` = ``train``, ``dev``, empty, or no ``split`` column: trained on.
- When no row is ``val``, a ``val_fraction`` share is held out of the training rows, chosen
  by a hash of the ``photo`` column (else the file name): all crops of one photo fall on the
  same side, and the same data gives the same split on every run.

``plate`` is compared and trained as the evaluator scores it: normalised to A-Z0-9 (two-row
plates top row first, no separator). Rows with an empty plate (a "not a plate" decision) are
not trained on: a CTC target must hold text to teach reading.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from finetune.text_data import DataError
from services.plate_reader.plate_text import normalise

VAL_SPLITS, TEST_SPLITS, TRAIN_SPLITS = {"val", "validation"}, {"test"}, {"train", "dev", ""}


@dataclass(frozen=True)
class OcrSample:
    filename: str
    path: Path
    plate: str  # normalised: A-Z0-9 only
    group: str  # the photo it was cut from (or its own file name): never on both sides

    def image(self) -> np.ndarray:
        """The crop, RGB uint8."""
        with Image.open(self.path) as image:
            return np.asarray(image.convert("RGB"))


@dataclass(frozen=True)
class OcrDataset:
    folder: Path
    train: list[OcrSample]
    val: list[OcrSample]
    test_rows: int  # split=test: left out
    empty_rows: int  # no plate text: left out
    held_out_by_hash: bool  # val came from val_fraction (no split=val rows)

    def describe(self) -> str:
        how = "held out by photo hash" if self.held_out_by_hash else "split=val"
        left = [
            f"{n} {what}"
            for n, what in ((self.test_rows, "test rows"), (self.empty_rows, "without text"))
            if n
        ]
        return f"{len(self.train)} training crops, {len(self.val)} validation crops ({how})" + (
            f"; left out: {', '.join(left)}" if left else ""
        )


def load_ocr_dataset(folder: str | Path, *, val_fraction: float = 0.1) -> OcrDataset:
    """Read ``folder/labels.csv`` and split it (see the module doc); DataError says what to fix."""
    folder = Path(folder)
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise DataError(f"{labels} not found: the crops' folder needs labels.csv with filename,plate")
    with open(labels, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"filename", "plate"} <= set(rows[0]):
        raise DataError(f"{labels} needs a header with at least filename,plate and one row")
    train: list[OcrSample] = []
    val: list[OcrSample] = []
    test_rows, empty_rows = 0, 0
    for line, row in enumerate(rows, start=2):
        split = (row.get("split") or "").strip().lower()
        if split not in VAL_SPLITS | TEST_SPLITS | TRAIN_SPLITS:
            raise DataError(f"{labels} line {line}: split {row['split']!r} is none of train, dev, val, test")
        if split in TEST_SPLITS:
            test_rows += 1
            continue
        plate = normalise(row["plate"] or "")
        if not plate:
            empty_rows += 1
            continue
        path = folder / row["filename"]
        if not path.is_file():
            raise DataError(f"{labels} line {line}: {path} not found")
        sample = OcrSample(row["filename"], path, plate, (row.get("photo") or "").strip() or row["filename"])
        (val if split in VAL_SPLITS else train).append(sample)
    held_out = not val
    if held_out:
        train, val = _hold_out(train, val_fraction)
    if not train or not val:
        raise DataError(
            f"{labels}: {len(train)} training and {len(val)} validation crops with text; "
            "both need at least one (mark some rows split=val, or give more rows)"
        )
    return OcrDataset(folder, train, val, test_rows, empty_rows, held_out)


def _hold_out(samples: list[OcrSample], fraction: float) -> tuple[list[OcrSample], list[OcrSample]]:
    """(train, val): whole groups to val by a stable hash; at least one group when there are two."""

    def bucket(group: str) -> float:
        return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 16**8

    val_groups = {s.group for s in samples if bucket(s.group) < fraction}
    groups = sorted({s.group for s in samples}, key=bucket)
    if not val_groups and len(groups) > 1 and fraction > 0:
        val_groups = {groups[0]}
    if len(val_groups) == len(groups) and len(groups) > 1:
        val_groups.discard(groups[-1])
    return ([s for s in samples if s.group not in val_groups], [s for s in samples if s.group in val_groups])


# Light augmentations: what a detector crop of the same plate could look like on another day.
# Each is drawn independently with this probability.
P_AFFINE, P_COLOUR, P_BLUR, P_JPEG = 0.7, 0.6, 0.3, 0.3
MAX_ROTATION_DEG, MAX_SHEAR, SCALE_RANGE, MAX_SHIFT = 3.0, 0.12, (0.92, 1.06), 0.04


def augment(crop: np.ndarray, rng: np.random.Generator, *, geometry: bool = True) -> np.ndarray:
    """A randomly, lightly changed copy of an RGB uint8 crop: small affine warp (rotation,
    shear, scale, shift; edges filled with the crop's border colour; only with `geometry`),
    brightness/contrast, Gaussian blur, JPEG compression."""
    image = Image.fromarray(np.ascontiguousarray(crop))
    width, height = image.size
    if rng.random() < P_AFFINE and geometry:
        angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
        shear, scale = rng.uniform(-MAX_SHEAR, MAX_SHEAR), rng.uniform(*SCALE_RANGE)
        shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * (width, height)
        # PIL maps output pixels back to input ones: the inverse of rotate . shear . scale
        # about the centre, then the shift.
        forward = (
            np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            @ np.array([[1.0, shear], [0.0, 1.0]])
            * scale
        )
        inverse = np.linalg.inv(forward)
        centre = np.array([width / 2, height / 2])
        offset = centre - inverse @ (centre + shift)
        border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]]).mean(axis=0)
        image = image.transform(
            image.size,
            Image.Transform.AFFINE,
            (*inverse[0], offset[0], *inverse[1], offset[1]),
            resample=Image.Resampling.BILINEAR,
            fillcolor=tuple(int(c) for c in border),
        )
    if rng.random() < P_COLOUR:
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.65, 1.35))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.6, 1.3))
    if rng.random() < P_BLUR:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.1) * max(1.0, height / 48)))
    if rng.random() < P_JPEG:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(30, 86)))
        image = Image.open(buffer).convert("RGB")
    return np.asarray(image)


__all__ = ["DataError", "OcrDataset", "OcrSample", "augment", "load_ocr_dataset"]
