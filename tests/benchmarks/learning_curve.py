"""How many corrected crops buy how much: `modelport finetune ocr` on 0, 50, 200, 1,000 crops of
one domain, and the served reader on that domain's held-out crops after each.

    python tests/benchmarks/learning_curve.py [--sizes 0,50,200,1000] [--eval 800] [--font FILE]

The domain is synthetic: Brazilian camera crops (tests/data/synth_plates.py --camera, the grey,
Mercosur and motorbike formats: night, infrared, motion blur, low resolution, JPEG, oblique), the
region the reader reads worst. This project has no real corrected crops of one domain to spare
(the real sets hold 42 crops over seven countries). The training pool is seed 31, the held-out
crops seed 32 (no seed the reader or its tail was tuned or trained on). `--font`: every plate of
both drawn in that typeface instead of the generator's five, which the shipped tail was trained
on: a plate style the reader has not seen, the case a fine-tune is for. Each size trains on the
first N of the pool's Brazilian crops (a prefix: as reviews accumulate) with the job's defaults,
as `modelport finetune ocr corrections/ocr` would for a user; each model is a new version of
the store name `plate-ocr-curve` (the served `plate-ocr` is untouched).

Measured after each, on the held-out crops, through the served pipeline (plate rules, voting,
review flag; `evaluate.plate_reads`): the version promoted as the README's runbook does
(`modelport models promote`: it becomes the recogniser, the shipped tail still read beside it),
and the version read instead as the tuned equal of the base (MODELPORT_PLATE_OCR_TUNED_MODEL=tag),
whose 0 is the base read alone (MODELPORT_PLATE_OCR_TUNED_MODEL=none): the curve a job from the
base climbs, beside what the shipped tail (15,000 drawn crops of every kind) already gives.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from finetune.ocr import OcrSettings, finetune_ocr
from services.core.cli import _plate_recognizer
from services.core.model_store import import_model, resolve
from services.core.sources import LocalFile
from services.plate_reader.evaluate import evaluate, plate_reads
from services.plate_reader.settings import Settings
from tests.benchmarks.machine import describe_machine
from tests.data import synth_plates

BASE = "plate-ocr-curve"
POOL_SEED, EVAL_SEED = 31, 32
FORMATS = {"br", "br-grey", "br-moto"}  # the camera generator's Brazilian plates


def domain_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["format"] in FORMATS]


def write_labels(folder: Path, source: Path, rows: list[dict[str, str]]) -> None:
    """labels.csv for `rows` (every one trained on or read: no split column), images linked."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        link = folder / row["filename"]
        if not link.exists():
            link.symlink_to(source / row["filename"])
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["filename", "plate"])
        writer.writeheader()
        writer.writerows({"filename": r["filename"], "plate": r["plate"]} for r in rows)


def served(settings: Settings, ocr: str, tuned: str, folder: Path) -> str:
    """'exact / right and unflagged / wrong accepted' of the served pipeline on `folder`."""
    recognizer = _plate_recognizer(settings.detector_model, ocr, tuned)
    result = evaluate(plate_reads(recognizer, crops=True, min_score=settings.min_score), folder)
    accepted = [o.right for o in result.outcomes if o.accepted]
    covered = sum(accepted) / len(result.outcomes)
    return f"{result.exact_accuracy:.1%} / {covered:.1%} / {accepted.count(False)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,50,200,1000", help="corrected crops per run")
    parser.add_argument("--eval", type=int, default=800, help="held-out camera crops drawn (~40%% Brazilian)")
    parser.add_argument(
        "--work",
        type=Path,
        help="folder for the crops, kept and reused (default: a temporary one; one per --font)",
    )
    parser.add_argument("--font", help="a TrueType file to draw the domain's plates with")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="learning-curve-"))
    settings = Settings.from_env()
    fonts = [args.font] if args.font else None

    pool, held_out = work / "pool" / "camera", work / "eval" / "camera"
    if not (pool / "labels.csv").is_file():  # ~40% of camera crops are Brazilian
        synth_plates.generate(
            work / "pool", POOL_SEED, crops=0, photos=0, camera=round(max(sizes) * 2.6), fonts=fonts
        )
    if not (held_out / "labels.csv").is_file():
        synth_plates.generate(work / "eval", EVAL_SEED, crops=0, photos=0, camera=args.eval, fonts=fonts)
    pool_rows = domain_rows(pool)
    if len(pool_rows) < max(sizes):
        raise SystemExit(f"{pool} holds {len(pool_rows)} Brazilian crops, fewer than {max(sizes)}")
    eval_folder, eval_rows = work / "eval-br", domain_rows(held_out)
    write_labels(eval_folder, held_out, eval_rows)

    # The store name the curve's versions go under, its first version the served recogniser
    default = resolve("plate-ocr").path_of("model.onnx")
    base_tag = str(import_model(BASE, LocalFile(default), kind="plate-ocr").tag)
    shipped_tail = settings.tuned_ocr_model(base_tag) or "none"
    rows = []
    for size in sizes:
        if size == 0:
            # the tuned-equal column's start: the base alone, as a job from the base starts
            job, promoted, as_tuned = (
                "-",
                served(settings, base_tag, shipped_tail, eval_folder),
                served(settings, base_tag, "none", eval_folder),
            )
        else:
            folder = work / f"train-{size}"
            write_labels(folder, pool, pool_rows[:size])
            result = finetune_ocr(folder, OcrSettings(base=base_tag, runs_dir=work / f"runs-{size}"))
            job = f"{result.before:.1%} -> {result.after:.1%} ({result.val_crops} crops)"
            job += f", {result.seconds / 60:.1f} min"
            promoted = served(settings, result.tag, shipped_tail, eval_folder)
            as_tuned = served(settings, base_tag, result.tag, eval_folder)
        rows.append((size, job, promoted, as_tuned))
        print(f"{size} crops: job {job}; promoted {promoted}; as the tuned equal {as_tuned}", flush=True)

    print(f"\nmachine: {describe_machine()}; load average {os.getloadavg()[0]:.1f} at the end")
    print(
        f"domain: synthetic Brazilian camera crops, {args.font or 'the generator fonts'}; pool seed "
        f"{POOL_SEED}, held-out seed {EVAL_SEED} ({len(eval_rows)} crops); served columns: "
        "exact / right and unflagged / wrong accepted"
    )
    print(
        "\n| corrected crops | the job's own validation (raw lines), time | promoted (beside the shipped "
        "tail) | as the tuned equal (instead of the shipped tail; 0: the base alone) |"
    )
    print("|---|---|---|---|")
    for size, job, promoted, as_tuned in rows:
        print(f"| {size} | {job} | {promoted} | {as_tuned} |")


if __name__ == "__main__":
    main()
