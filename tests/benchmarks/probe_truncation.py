"""Record, per dev crop, the served read beside a read of its rows widened to the crop's ends.

    python tests/benchmarks/probe_truncation.py --ocr plate-ocr:BASE [--synth DIR] [--out FILE.json]
    python tests/benchmarks/probe_truncation.py --ocr plate-ocr:BASE --time 32   # ms/plate, check off/on

For choosing services/plate_reader/truncation.py's rule offline: each crop's truth, the voted
read as served with the check off (plate, confidence, region), its rows' geometry, and the
widened rows' read (raw text, character confidences, ranked candidates), stretched as the first
read is. Crop sets only (no detector): real crops, synthetic crops, US street and camera crops.
``--time N``: instead, the voted read (read_fusion.read_voted, as served) of the first N crops of
each synthetic set with the check off and on, in batches of 1 and 8, alternating, best of 3
passes each: ms per plate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.cli import _plate_recognizer
from services.plate_reader import pipeline, read_fusion, truncation
from services.plate_reader.crops import band_edges
from services.plate_reader.evaluate import load_labels
from services.plate_reader.plate_regions import region_hint
from services.plate_reader.plate_text import normalise
from services.plate_reader.settings import Settings
from services.plate_reader.text_lines import cut_line, plate_rows

BATCH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ocr", required=True)
    parser.add_argument("--split", choices=["dev", "test"], default="dev")
    parser.add_argument("--plates", type=Path, default=Path(".bench/plates"))
    parser.add_argument("--synth", type=Path, default=Path(".bench/synth2"))
    parser.add_argument("--out", type=Path, default=Path(".bench/truncation.json"))
    parser.add_argument("--time", type=int, default=0, help="time the first N crops of each synthetic set")
    args = parser.parse_args()
    settings = Settings.from_env()
    recognizer = _plate_recognizer(settings.detector_model, args.ocr, tuned="none")
    ocr, finder = recognizer.ocr, recognizer.text_lines
    assert finder is not None
    read_fusion.CHECK_ENDS = False  # the served read as it was before the check
    split = None if args.split == "dev" else "test"
    if args.time:
        timed(recognizer, [args.synth / name for name in ("crops", "us-street", "camera")], args.time)
        return
    sets = [
        ("real crops", args.plates / "crops", args.split),
        ("synthetic crops", args.synth / "crops", split),
        ("US street crops", args.synth / "us-street", split),
        ("camera crops", args.synth / "camera", split),
    ]
    records = []
    for name, folder, set_split in sets:
        rows = load_labels(folder, set_split)
        for at in range(0, len(rows), BATCH):
            chunk = rows[at : at + BATCH]
            crops = [np.asarray(Image.open(folder / r["filename"]).convert("RGB")) for r in chunk]
            served = recognizer.read_crops(crops)
            found = finder.find(crops)
            plate_lines = [plate_rows(lines) for lines in found]
            wide = [truncation.widened_rows(rs, band_edges(c)) for c, rs in zip(crops, plate_lines)]
            reads = ocr.read_lines(
                [[read_fusion.stretch(cut_line(c, w)) for w in ws] or [c] for c, ws in zip(crops, wide)]
            )
            for r, crop, reading, lines, rs, ws, wide_read in zip(
                chunk, crops, served, found, plate_lines, wide, reads
            ):
                ranked = pipeline._candidates(wide_read, (), True, region_hint((), mercosur_band=False))
                records.append(
                    {
                        "set": name,
                        "file": r["filename"],
                        "format": r.get("format", ""),
                        "truth": normalise(r["plate"]),
                        "plate": reading.plate,
                        "score": reading.score,
                        "region": reading.candidates[0].region if reading.candidates else None,
                        "candidates": [c.plate for c in reading.candidates],
                        "size": list(crop.shape[:2]),
                        "bands": list(band_edges(crop)),
                        "rows": [[x.left, x.right, x.top, x.bottom, x.angle] for x in rs],
                        "lines": [[x.left, x.right, x.top, x.bottom] for x in lines],
                        "wide_text": wide_read.text if ws else "",
                        "wide_conf": list(wide_read.char_confidences) if ws else [],
                        "wide": [[c.plate, c.confidence, c.region] for c in ranked] if ws else [],
                    }
                )
        print(name, len(rows), flush=True)
    args.out.write_text(json.dumps(records))


def timed(recognizer, folders: list[Path], count: int) -> None:  # type: ignore[no-untyped-def]
    """ms per plate of the voted read with the check off and on (read_crops: rules included)."""
    crops = [
        np.asarray(Image.open(folder / r["filename"]).convert("RGB"))
        for folder in folders
        for r in load_labels(folder)[:count]
    ]
    for size in (1, 8):
        batches = [crops[at : at + size] for at in range(0, len(crops), size)]
        best = {False: float("inf"), True: float("inf")}
        recognizer.read_crops(batches[0])  # ONNX Runtime's first call allocates
        for _ in range(3):
            for on in (False, True):
                read_fusion.CHECK_ENDS = on
                start = time.perf_counter()
                for batch in batches:
                    recognizer.read_crops(batch)
                best[on] = min(best[on], 1000 * (time.perf_counter() - start) / len(crops))
        print(
            f"batch {size}: off {best[False]:.1f} ms/plate, on {best[True]:.1f} ms/plate "
            f"({best[True] / best[False]:.2f}x), {len(crops)} crops",
            flush=True,
        )
    read_fusion.CHECK_ENDS = True


if __name__ == "__main__":
    main()
