"""How many corrected crops buy how much: `modelport finetune ocr` on 0, 50, 200, 1,000 crops of
one domain, exact plates on that domain's held-out crops after each.

    python tests/benchmarks/learning_curve.py [--sizes 0,50,200,1000] [--eval 150]

The domain is synthetic: US street crops (tests/data/synth_plates.py --us-street: state
names, slogans, stickers, dealer frames), the kind of plate issue 19's real US photos were
misread on and the base reads worst. This machine has no real corrected crops of one domain to
spare (the real sets hold 36 crops over seven countries). The training pool is seed 21, the
held-out crops seed 22; each size trains on the first N of the pool (a prefix: as reviews
accumulate), with the job's defaults except the epochs (fewer passes as N grows, so the
whole curve fits a shared 2-core machine): the job holds out 10% of the N by hash to pick its
best epoch, as it would for a user. Accuracy is raw OCR (whole crop, no plate-format rules),
one crop per call, as the job's own before -> after: `PlateOCR.read`. Each model is a new
version of the store name `plate-ocr-curve` (the served `plate-ocr` is untouched).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from finetune.ocr import OcrSettings, finetune_ocr, plate_accuracy
from finetune.ocr_data import OcrSample
from services.core.model_store import import_model, resolve
from services.core.sources import LocalFile
from services.plate_reader.ocr import PlateOCR
from tests.benchmarks.machine import describe_machine
from tests.data import synth_plates

BASE = "plate-ocr-curve"
POOL_SEED, EVAL_SEED = 21, 22


def epochs_for(size: int) -> float:
    """Passes over N crops: many for a few crops, fewer for many (50: 6, 200: 2, 1000: 1)."""
    return min(6.0, max(1.0, 400 / size))


def write_labels(folder: Path, rows: list[dict[str, str]]) -> None:
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["filename", "plate"])
        writer.writeheader()
        writer.writerows({"filename": r["filename"], "plate": r["plate"]} for r in rows)


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,50,200,1000", help="corrected crops per run")
    parser.add_argument("--eval", type=int, default=150, help="held-out crops of the domain")
    parser.add_argument("--work", type=Path, help="folder for the crops (default: a temporary one)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="learning-curve-"))

    pool, held_out = work / "pool" / "us-street", work / "eval" / "us-street"
    if not (pool / "labels.csv").is_file():
        synth_plates.generate(work / "pool", POOL_SEED, crops=0, photos=0, us_street=max(sizes))
    if not (held_out / "labels.csv").is_file():
        synth_plates.generate(work / "eval", EVAL_SEED, crops=0, photos=0, us_street=args.eval)
    pool_rows, eval_rows = read_rows(pool), read_rows(held_out)
    eval_samples = [
        OcrSample(r["filename"], held_out / r["filename"], r["plate"], r["filename"]) for r in eval_rows
    ]
    eval_crops = [s.image() for s in eval_samples]

    default = resolve("plate-ocr").path_of("model.onnx")
    base_tag = str(import_model(BASE, LocalFile(default), kind="plate-ocr").tag)
    results = []
    for size in sizes:
        if size == 0:
            model, seconds, speed, tag = Path(default), 0.0, 0.0, base_tag
        else:
            folder = work / f"train-{size}"
            folder.mkdir(exist_ok=True)
            for row in pool_rows[:size]:
                link = folder / row["filename"]
                if not link.exists():
                    link.symlink_to(pool / row["filename"])
            write_labels(folder, pool_rows[:size])
            # Whole crops, as the curve's figures in the README were made and as it measures
            # (PlateOCR.read): the job's default now trains on the reader's cut lines.
            settings = OcrSettings(
                base=base_tag, epochs=epochs_for(size), lines="whole", runs_dir=work / f"runs-{size}"
            )
            result = finetune_ocr(folder, settings)
            model = Path(resolve(result.tag).path_of("model.onnx"))
            seconds, speed, tag = result.seconds, result.images_per_second, result.tag
        started = time.perf_counter()
        accuracy = plate_accuracy(PlateOCR(model), eval_crops, eval_samples)
        results.append((size, accuracy, seconds, speed, time.perf_counter() - started, tag))
        print(f"{size} crops: {accuracy:.1%} on {len(eval_samples)} held-out crops", flush=True)

    load = os.getloadavg()[0]
    print(f"\nmachine: {describe_machine()}; load average {load:.1f} at the end (shared with other work)")
    print(f"domain: synthetic US street crops; pool seed {POOL_SEED}, held-out seed {EVAL_SEED}")
    print("\n| corrected crops | epochs | exact plates (held-out) | training | training crops/s | version |")
    print("|---|---|---|---|---|---|")
    for size, accuracy, seconds, speed, _, tag in results:
        epochs = f"{epochs_for(size):g}" if size else "-"
        minutes = f"{seconds / 60:.1f} min" if size else "-"
        rate = f"{speed:.1f}" if size else "-"
        right = f"{round(accuracy * len(eval_samples))}/{len(eval_samples)}"
        print(f"| {size} | {epochs} | {accuracy:.1%} ({right}) | {minutes} | {rate} | {tag} |")


if __name__ == "__main__":
    main()
