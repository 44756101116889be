"""Recognisers compared on the plate reader's dev (or test) sets, through the service's own pipeline.

    python tests/benchmarks/compare_plate_ocr.py --ocr plate-ocr:BASE --ocr plate-ocr:TUNED \
        [--pair plate-ocr:TUNED,plate-ocr:BASE] [--fuse plate-ocr:BASE,plate-ocr:TUNED@1.4] \
        [--split test] [--out .bench/compare] [--no-check-ends] [--no-layout-odds]

The figures are `modelport evaluate plates`'s (the same `evaluate` on the same `PlateRecognizer`,
the service's settings), with the counts behind them: exact plates, auto-accepted (right of
accepted: precision first), coverage (right and not flagged). Sets (folders made by
tests/data/fetch_plates.py and tests/data/synth_plates.py):

- dev: real crops and photos (`--plates`, split dev), seed-2 synthetic crops, US street crops,
  camera crops and photos (`--synth-dev`: `synth_plates.py DIR --seed 2 --us-street 200 --camera 280`);
- test: the same kinds' test split (`--synth-test`: `--seed 0 --us-street 200 --camera 280`).

`--pair FIRST,SECOND` reads with FIRST and gives read_fusion's second read (the unsure plates,
at their own width) to SECOND: two recognisers voting. Each set's outcomes are written to
OUT/READER/SET.json, so two readers' misreads can be compared image by image.
`--fuse BASE,TUNED` is the served fusion (read_fusion.fuse_equals: both read every plate);
`TAG@T` reads with that recogniser at temperature T (calibrate_plate_ocr.py fits it).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.cli import _plate_recognizer
from services.core.model_store import resolve
from services.plate_reader import pipeline, plate_text, read_fusion, text_lines
from services.plate_reader.evaluate import Evaluation, evaluate, load_labels, plate_reads
from services.plate_reader.ocr import PlateOCR
from services.plate_reader.settings import Settings
from tests.benchmarks.machine import describe_machine


def sets(args: argparse.Namespace) -> list[tuple[str, Path, bool, str | None]]:
    """(name, folder, crops, split) of each set of the chosen split."""
    if args.split == "dev":
        synth, split = args.synth_dev, None  # seed 2 is dev whole
    else:
        synth, split = args.synth_test, "test"
    return [
        ("real crops", args.plates / "crops", True, args.split),
        ("real photos", args.plates / "photos", False, args.split),
        ("synthetic crops", synth / "crops", True, split),
        ("US street crops", synth / "us-street", True, split),
        ("camera crops", synth / "camera", True, split),
        ("synthetic photos", synth / "photos", False, split),
    ]


def paired(first_tag: str, second_tag: str) -> Callable[..., list]:
    """read_fusion.read_voted with its first read by one recogniser and its second by another."""
    first, second = (PlateOCR(resolve(t).path_of("model.onnx")) for t in (first_tag, second_tag))

    def read_voted(_ocr, finder, crops, rank):  # type: ignore[no-untyped-def]
        readers = iter((first, second))  # read_voted reads at most twice: first, then the unsure

        class InTurn:
            def read_lines(self, lines):  # type: ignore[no-untyped-def]
                return next(readers).read_lines(lines)

            def read_both(self, lines):  # type: ignore[no-untyped-def]
                return self.read_lines(lines), None  # --pair reads without a tuned tail

        return read_fusion.read_voted(InTurn(), finder, crops, rank)  # type: ignore[arg-type]

    return read_voted


def at_temperature(tagged: str) -> tuple[str, float]:
    """ "plate-ocr:V@1.4" -> ("plate-ocr:V", 1.4); no "@": temperature 1."""
    tag, _, temperature = tagged.partition("@")
    return tag, float(temperature or 1.0)


def first(folder: Path, split: str | None, limit: int | None) -> Path:
    """`folder`, or a temporary one whose labels.csv lists its first `limit` images of `split`
    (by absolute path: the images stay where they are)."""
    if not limit:
        return folder
    rows = load_labels(folder, split)[:limit]
    target = Path(tempfile.mkdtemp(prefix="compare-"))
    with open(target / "labels.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "filename": str((folder / r["filename"]).resolve())} for r in rows)
    return target


def counts(result: Evaluation) -> dict[str, float]:
    outcomes = result.outcomes
    accepted = [o for o in outcomes if o.accepted]
    return {
        "n": len(outcomes),
        "exact": sum(o.right for o in outcomes),
        "accepted": len(accepted),
        "accepted_right": sum(o.right for o in accepted),
        "ms": round(1000 * sum(o.seconds for o in outcomes) / max(1, len(outcomes))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ocr", action="append", default=[], help="a recogniser's store tag (repeat)")
    parser.add_argument("--pair", action="append", default=[], help="FIRST,SECOND: two tags voting")
    parser.add_argument("--fuse", action="append", default=[], help="BASE,TUNED[@T]: both read every plate")
    parser.add_argument(
        "--agree",
        choices=["max", "noisy-or"],
        default="noisy-or",
        help="--fuse's score for a plate both read alike: 1-(1-a)(1-b) (served), or the surer one's",
    )
    parser.add_argument(
        "--no-check-ends",
        action="store_true",
        help="without truncation.py's check and text_lines' short lower row (the reader before them)",
    )
    parser.add_argument(
        "--no-layout-odds",
        action="store_true",
        help="without plate_text's look-alike odds (LOOKALIKE_ODDS: the reader before issue 19)",
    )
    parser.add_argument("--split", choices=["dev", "test"], default="dev")
    parser.add_argument("--plates", type=Path, default=Path(".bench/plates"))
    parser.add_argument("--synth-dev", type=Path, default=Path(".bench/synth2"))
    parser.add_argument("--synth-test", type=Path, default=Path(".bench/synth0"))
    parser.add_argument("--only", help="comma-separated set names to run (default: all)")
    parser.add_argument("--limit", type=int, help="only the first N labelled images of each set")
    parser.add_argument("--out", type=Path, default=Path(".bench/compare"))
    args = parser.parse_args()
    settings = Settings.from_env()
    readers = [(tag, tag, None, None) for tag in args.ocr]
    readers += [
        (f"{p.split(',')[0]}+{p.split(',')[1]}", p.split(",")[0], paired(*p.split(",")), None)
        for p in args.pair
    ]
    agree = "" if args.agree == "noisy-or" else f"+{args.agree}"
    readers += [
        (f"{f.split(',')[0]}={f.split(',')[1]}{agree}", f.split(",")[0], None, f.split(",")[1])
        for f in args.fuse
    ]
    chosen = [s for s in sets(args) if not args.only or s[0] in args.only.split(",")]
    print(f"{describe_machine()}; {args.split} split; shared machine: compare within a set")
    if args.no_check_ends:
        read_fusion.CHECK_ENDS = False
        text_lines.SHORT_ROW_ASPECT = text_lines.MIN_ASPECT  # no line is that wide and narrower
    if args.no_layout_odds:
        plate_text.LOOKALIKE_ODDS = float("inf")
    original = pipeline.read_voted
    if args.agree == "max":
        read_fusion.agreed = max
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, tagged, voted, tuned in readers:
        tag, temperature = at_temperature(tagged)
        # --ocr and --pair read alone; --fuse with its tuned version (a tail or a whole model)
        tuned_tag, tuned_temperature = at_temperature(tuned) if tuned else ("none", 1.0)
        recognizer = _plate_recognizer(settings.detector_model, tag, tuned_tag, tuned_temperature)
        recognizer.ocr.temperature = temperature
        pipeline.read_voted = voted or original  # type: ignore[assignment]
        for set_name, folder, crops, split in chosen:
            if not folder.is_dir():
                print(f"  {set_name}: {folder} missing, skipped")
                continue
            tick = time.monotonic()
            read = plate_reads(recognizer, crops=crops, min_score=settings.min_score)
            result = evaluate(read, first(folder, split, args.limit), split=split)
            row = table.setdefault(set_name, {})[name] = counts(result)
            target = (
                args.out
                / name.replace(":", "_").replace("+", "__").replace("=", "==")
                / f"{set_name.replace(' ', '-')}.json"
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(
                json.dumps(
                    [
                        {
                            "file": o.filename,
                            "truth": o.truth,
                            "found": o.found,
                            "score": o.score,
                            "review": o.review,
                        }
                        for o in result.outcomes
                    ],
                    indent=0,
                )
            )
            print(
                f"  {name} {set_name}: n {row['n']}, exact {row['exact']} ({row['exact'] / row['n']:.1%}), "
                f"accepted {row['accepted_right']}/{row['accepted']}, coverage "
                f"{row['accepted_right'] / row['n']:.1%} ({time.monotonic() - tick:.0f} s)",
                flush=True,
            )
    pipeline.read_voted = original
    print(
        "\n| set | reader | n | exact | auto-accepted right/all | coverage | ms/image |"
        "\n|---|---|---|---|---|---|---|"
    )
    for set_name, rows in table.items():
        for name, row in rows.items():
            print(
                f"| {set_name} | {name} | {row['n']} | {row['exact'] / row['n']:.1%} | "
                f"{row['accepted_right']}/{row['accepted']} | {row['accepted_right'] / row['n']:.1%} | "
                f"{row['ms']} |"
            )


if __name__ == "__main__":
    main()
