"""The synthetic training set of the plate-tuned recogniser: one folder `modelport finetune ocr` reads.

    python tests/data/plate_ocr_training_set.py .bench/ocr-train
    modelport finetune ocr .bench/ocr-train --epochs 2.5

Draws (tests/data/synth_plates.py, seed 1; every evaluation set is another seed) 600 crops of
the ten base formats, 800 US street crops and 2,000 camera crops (BR grey and Mercosur, HR,
SK, two-row plates; night, infrared, motion blur, tiny, JPEG, oblique), then writes one
``labels.csv`` over all of them (``filename,plate,split,format``; the files are symlinks into
the generator's folders). The generator's own dev/test split is for evaluation sets, so it is
replaced: every crop trains except ~6% (a hash of the file name) marked ``split=val``, on
which the job picks its best epoch. About 5 minutes on one core.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.data import synth_plates

SEED = 1
BASE_CROPS, US_STREET, CAMERA = 600, 800, 2000
VAL_BELOW = 16  # first byte of sha256(file name) below this: split=val (16/256, ~6%)


def build(target: Path, seed: int = SEED, scale: float = 1.0) -> int:
    """Generate and label the set under ``target``; returns how many crops it holds."""
    drawn = target / "drawn"
    synth_plates.generate(
        drawn,
        seed,
        crops=round(BASE_CROPS * scale),
        photos=0,
        us_street=round(US_STREET * scale),
        camera=round(CAMERA * scale),
    )
    rows = []
    for folder in ("crops", "us-street", "camera"):
        with open(drawn / folder / "labels.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                link = target / row["filename"]
                if not link.is_symlink():
                    link.symlink_to(Path("drawn") / folder / row["filename"])
                val = hashlib.sha256(row["filename"].encode()).digest()[0] < VAL_BELOW
                rows.append((row["filename"], row["plate"], "val" if val else "train", row["format"]))
    with open(target / "labels.csv", "w", newline="") as out:
        csv.writer(out).writerows([("filename", "plate", "split", "format"), *rows])
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count (0.1: a quick set)")
    args = parser.parse_args()
    print(f"{build(args.target, args.seed, args.scale)} labelled crops in {args.target}")


if __name__ == "__main__":
    main()
