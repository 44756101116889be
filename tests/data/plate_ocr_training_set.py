"""The synthetic training set of the plate-tuned recogniser: one folder `modelport finetune ocr` reads.

    python tests/data/plate_ocr_training_set.py .bench/ocr-train
    modelport finetune ocr .bench/ocr-train --epochs 2 --max-minutes 45

Draws (tests/data/synth_plates.py) from each of two seeds, 1 and 11 (every evaluation set is
another seed: 0 test, 2 dev), 1,500 crops of the ten base formats, 3,000 US street crops
(state names, slogans, stickers, dealer frames: most of issue 19's US misses) and 3,000 camera
crops (BR grey and Mercosur, HR, SK, two-row plates; night, infrared, motion blur, tiny, JPEG,
oblique): 15,000 crops, weighted toward the kinds the real photos were misread on. Then writes
one ``labels.csv`` over all of them (``filename,plate,split,format``; the files are symlinks
into the generator's folders). The generator's own dev/test split is for evaluation sets, so
it is replaced: every crop trains except ~3% (a hash of the file name) marked ``split=val``,
on which the job picks its best state. The seeds are drawn in parallel, one process a core.
No real crop is in it: the real dev crops and photos stay the dev measure, the real test split
the test.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.data import synth_plates

SEEDS = (1, 11)
BASE_CROPS, US_STREET, CAMERA = 1500, 3000, 3000  # per seed
VAL_BELOW = 8  # first byte of sha256(file name) below this: split=val (8/256, ~3%)


def draw(target: Path, seed: int, scale: float) -> list[tuple[str, str, str, str]]:
    """One seed's crops under ``target/drawn-SEED``, linked as ``sSEED-NAME``; its label rows."""
    drawn = target / f"drawn-{seed}"
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
                name = f"s{seed}-{row['filename']}"
                link = target / name
                if not link.is_symlink():
                    link.symlink_to(Path(drawn.name) / folder / row["filename"])
                val = hashlib.sha256(name.encode()).digest()[0] < VAL_BELOW
                rows.append((name, row["plate"], "val" if val else "train", row["format"]))
    return rows


def build(target: Path, seeds: tuple[int, ...] = SEEDS, scale: float = 1.0) -> int:
    """Generate and label the set under ``target``; returns how many crops it holds."""
    target.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=min(len(seeds), os.cpu_count() or 1)) as pool:
        drawn = list(pool.map(draw, [target] * len(seeds), seeds, [scale] * len(seeds)))
    rows = [row for seed_rows in drawn for row in seed_rows]
    with open(target / "labels.csv", "w", newline="") as out:
        csv.writer(out).writerows([("filename", "plate", "split", "format"), *rows])
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count (0.1: a quick set)")
    args = parser.parse_args()
    count = build(args.target, tuple(int(x) for x in args.seeds.split(",")), args.scale)
    print(f"{count} labelled crops in {args.target}")


if __name__ == "__main__":
    main()
