"""Fit a recogniser's temperature on the plate reader's dev crops (never a test split).

    python tests/benchmarks/calibrate_plate_ocr.py --ocr plate-ocr:TUNED --ocr plate-ocr:BASE

Each dev crop's number line is cut and stretched as read_fusion's first read, read once, and
its plate-alphabet probabilities kept; then for each temperature T the reading's score (the
weakest character's probability, as the reader's) is scored against whether the raw text is the
plate: negative log-likelihood and Brier score over all crops, and per set how many would be
auto-accepted at the review threshold (right/all). The text read is the same at every T. The
temperature with the lowest NLL over all sets is printed last; set it as
MODELPORT_PLATE_OCR_TUNED_TEMPERATURE (README, "A plate-tuned recogniser").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.model_store import resolve
from services.plate_reader.evaluate import load_labels
from services.plate_reader.ocr import PlateOCR, decode, with_temperature
from services.plate_reader.plate_text import normalise
from services.plate_reader.read_fusion import stretch
from services.plate_reader.settings import Settings
from services.plate_reader.text_lines import TextLineFinder
from tests.benchmarks.machine import describe_machine

GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0)
BATCH = 16


def dev_sets(plates: Path, synth: Path) -> list[tuple[str, Path, str | None]]:
    return [
        ("real crops", plates / "crops", "dev"),
        ("synthetic crops", synth / "crops", None),
        ("US street crops", synth / "us-street", None),
        ("camera crops", synth / "camera", None),
    ]


def number_lines(finder: TextLineFinder, crops: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Each crop's number line(s), cut (TextLineFinder.rows) and stretched as read_fusion's first read."""
    return [[stretch(line) for line in lines] for lines in finder.rows(crops)]


def score(folded: list[np.ndarray], temperature: float) -> tuple[str, float]:
    """The plate text and its weakest plate character's probability at ``temperature``."""
    reads = [decode(with_temperature(f, temperature)) for f in folded]
    text = " ".join(r.text for r in reads)
    weakest = [c for r in reads for ch, c in zip(r.text, r.char_confidences) if normalise(ch)]
    return normalise(text), min(weakest, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ocr", action="append", required=True, help="a recogniser's store tag (repeat)")
    parser.add_argument("--plates", type=Path, default=Path(".bench/plates"))
    parser.add_argument("--synth-dev", type=Path, default=Path(".bench/synth2"))
    args = parser.parse_args()
    settings = Settings.from_env()
    finder = TextLineFinder(resolve(settings.text_detector_model).path_of("model.onnx"))
    print(f"{describe_machine()}; dev crops only; review threshold {settings.review_threshold}")
    data: list[tuple[str, str, list[np.ndarray]]] = []  # set, truth, each crop's lines
    for name, folder, split in dev_sets(args.plates, args.synth_dev):
        rows = load_labels(folder, split)
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            crops = [np.asarray(Image.open(folder / r["filename"]).convert("RGB")) for r in batch]
            data += [
                (name, normalise(r["plate"]), lines) for r, lines in zip(batch, number_lines(finder, crops))
            ]
    for tag in args.ocr:
        ocr = PlateOCR(resolve(tag).path_of("model.onnx"))
        folded: list[list[np.ndarray]] = []
        for start in range(0, len(data), BATCH):
            chunk = [lines for _, _, lines in data[start : start + BATCH]]
            flat = iter(ocr.folded([line for lines in chunk for line in lines]))
            folded += [[next(flat) for _ in lines] for lines in chunk]
        print(
            f"\n{tag}: {len(data)} crops\n| T | NLL | Brier | "
            + " | ".join(n for n, *_ in dev_sets(Path(), Path()))
            + " |"
        )
        best = (float("inf"), 1.0)
        for temperature in GRID:
            reads = [score(f, temperature) for f in folded]
            right = np.array([text == truth for (text, _), (_, truth, _) in zip(reads, data)], dtype=float)
            p = np.clip([s for _, s in reads], 1e-6, 1 - 1e-6)
            nll = float(-np.mean(right * np.log(p) + (1 - right) * np.log(1 - p)))
            brier = float(np.mean((p - right) ** 2))
            cells = []
            for name, *_ in dev_sets(Path(), Path()):
                mine = [i for i, (n, _, _) in enumerate(data) if n == name]
                accepted = [i for i in mine if p[i] >= settings.review_threshold]
                cells.append(f"{int(sum(right[i] for i in accepted))}/{len(accepted)}")
            print(f"| {temperature} | {nll:.4f} | {brier:.4f} | " + " | ".join(cells) + " |", flush=True)
            best = min(best, (nll, temperature))
        print(f"{tag}: lowest NLL at T = {best[1]} ({best[0]:.4f})")


if __name__ == "__main__":
    main()
