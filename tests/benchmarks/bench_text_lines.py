"""What reading only the plate number's text line costs, per plate and per stage.

    python tests/data/synth_plates.py /tmp/synth --seed 0
    python tests/benchmarks/bench_text_lines.py /tmp/synth/crops [--count 80]

Times, on the same crops in the same run (models from the model store, the service's own
code): the text-line detector (text_lines.TextLineFinder.find), choosing and cutting the
lines (plate_rows + cut_line), and the recogniser on the cut lines against the recogniser on
whole crops (the reader without the line cut). Then the whole read as the service does it
now (read_fusion.read_voted: the line stretched, a second read of the
unsure ones with their side lines, the rules), with the second read gated (the default) and
on every plate, and fused with the plate-tuned recogniser when MODELPORT_PLATE_OCR_TUNED_MODEL asks (settings
ocr_tuned_model: both read every line, read_fusion.fuse_equals). Batches of 1 and 8 crops, as
the service batches the crops of one or several photos. Prints a table of ms per plate.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from services.core.model_store import resolve
from services.plate_reader import read_fusion
from services.plate_reader.ocr import PlateOCR
from services.plate_reader.pipeline import PlateRecognizer
from services.plate_reader.plate_regions import rank_with_hint
from services.plate_reader.settings import Settings
from services.plate_reader.text_lines import TextLineFinder, cut_line, plate_rows


def per_plate_ms(run, batches: list[list], rounds: int = 3) -> float:
    """The best of ``rounds`` passes: on a shared machine the others' load only adds time."""
    run(batches[0])  # ONNX Runtime's first call allocates
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / sum(len(b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crops", type=Path, help="a folder of plate crops with labels.csv")
    parser.add_argument("--count", type=int, default=40)
    args = parser.parse_args()
    with open(args.crops / "labels.csv", newline="") as labels:
        names = [row["filename"] for row in csv.DictReader(labels)][: args.count]
    crops = [np.asarray(Image.open(args.crops / name).convert("RGB")) for name in names]
    settings = Settings.from_env()  # the served versions (plate-ocr:latest may be a tuned one)
    finder = TextLineFinder(resolve(settings.text_detector_model).path_of("model.onnx"))
    tuned_tag = settings.tuned_ocr_model()
    recognizer = PlateRecognizer.from_files(  # the served recogniser, its tuned tail grafted on
        resolve(settings.detector_model).path_of("model.onnx"),
        resolve(settings.ocr_model).path_of("model.onnx"),
        review_threshold=settings.review_threshold,
        tuned_ocr_dir=resolve(tuned_tag).path if tuned_tag else None,
        tuned_temperature=settings.ocr_tuned_temperature,
    )
    ocr = PlateOCR(resolve(settings.ocr_model).path_of("model.onnx"))  # the base alone
    fused_ocr, tuned = recognizer.ocr, recognizer.tuned_ocr  # a tail on fused_ocr, or a whole tuned
    found = list(zip(crops, finder.find(crops)))  # (crop, its lines), for timing the cut alone
    table = Table(
        "batch",
        "find lines",
        "choose + cut",
        "read lines",
        "line cut total",
        "read whole crop",
        "voted read",
        "voted, 2nd read on all",
        f"fused with {tuned_tag}",
        title=f"ms per plate, {len(crops)} crops from {args.crops}",
    )
    for size in (1, 8):
        batches = [crops[i : i + size] for i in range(0, len(crops), size)]
        found_batches = [found[i : i + size] for i in range(0, len(found), size)]
        line_batches = [finder.rows(batch) for batch in batches]
        find = per_plate_ms(finder.find, batches)
        cut = per_plate_ms(
            lambda batch: [[cut_line(crop, row) for row in plate_rows(lines)] for crop, lines in batch],
            found_batches,
        )
        read_lines = per_plate_ms(ocr.read_lines, line_batches)
        whole = per_plate_ms(ocr.read, batches)

        def voted(batch: list, reader: PlateOCR = ocr, other: PlateOCR | None = None) -> None:
            read_fusion.read_voted(
                reader, finder, batch, lambda text, i, hint: tuple(rank_with_hint(text, hint)), other
            )

        gated = per_plate_ms(voted, batches)
        read_fusion.SECOND_READ_BELOW, gate = 1.01, read_fusion.SECOND_READ_BELOW
        always = per_plate_ms(voted, batches)
        read_fusion.SECOND_READ_BELOW = gate
        fusing = recognizer.fused
        fused = (
            per_plate_ms(lambda batch: voted(batch, fused_ocr, tuned), batches) if fusing else float("nan")
        )
        table.add_row(
            str(size),
            f"{find:.1f}",
            f"{cut:.2f}",
            f"{read_lines:.1f}",
            f"{find + cut + read_lines:.1f}",
            f"{whole:.1f}",
            f"{gated:.1f}",
            f"{always:.1f}",
            f"{fused:.1f}",
        )
    Console().print(table)
    sure = [
        c[0].confidence >= read_fusion.SECOND_READ_BELOW if c else False
        for c in read_fusion.read_voted(
            ocr, finder, crops, lambda text, i, hint: tuple(rank_with_hint(text, hint))
        )
    ]
    print(f"read a second time (gated): {sure.count(False)} of {len(sure)} plates")
    print("Best of 3 passes each; on a shared machine compare the columns of one run, not runs.")


if __name__ == "__main__":
    main()
