"""Would a pass over tiles read the photos where the detector found nothing?

    nice -n 10 python tests/benchmarks/probe_detector_tiles.py /tmp/synth2/photos --split dev

The reader already runs the detector a second time, at detector_retry_imgsz (960), on a photo
where nothing was found at 640. This probe takes the labelled photos where the served pipeline
still reads nothing, cuts each into 4 overlapping tiles (60% of each side), reads the tiles in
one batch with the same pipeline, and counts: tiles found a plate, the surest tile reading right
(and auto-accepted), and a wrong reading auto-accepted. Each such photo costs 4 more detector
passes (about the first pass's cost each, on a 1280x720 photo).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import numpy as np
from PIL import Image

from services.core.cli import _plate_recognizer
from services.plate_reader.plate_text import normalise
from services.plate_reader.settings import Settings
from tests.benchmarks.machine import describe_machine

TILE = 0.6  # of each side; 4 tiles at the corners overlap by 20%


def tiles(image: np.ndarray) -> list[np.ndarray]:
    height, width = image.shape[:2]
    th, tw = int(height * TILE), int(width * TILE)
    return [image[y : y + th, x : x + tw] for y in (0, height - th) for x in (0, width - tw)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="photos with labels.csv (filename,plate[,split])")
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    args = parser.parse_args()
    settings = Settings.from_env()
    recognizer = _plate_recognizer(settings.detector_model, settings.ocr_model)  # the served models
    with open(args.folder / "labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split", "dev") == args.split and r["plate"]]
    print(describe_machine())
    empty = found = right = accepted = wrong_accepted = 0
    for row in rows:
        image = np.asarray(Image.open(args.folder / row["filename"]).convert("RGB"))
        if any(r.plate for r in recognizer.read([image])[0]):
            continue
        empty += 1
        reads = sorted(
            (r for rs in recognizer.read(tiles(image)) for r in rs if r.plate), key=lambda r: -r.score
        )
        found += bool(reads)
        if reads and reads[0].plate == normalise(row["plate"]):
            right += 1
            accepted += not reads[0].review
        elif reads and not reads[0].review:
            wrong_accepted += 1
    print(f"{args.folder} ({args.split}): {len(rows)} photos with a plate, nothing read on {empty}")
    print(f"tiles: found a plate on {found}, read right {right} ({accepted} auto-accepted),", end=" ")
    print(f"wrong auto-accepted {wrong_accepted}")


if __name__ == "__main__":
    main()
