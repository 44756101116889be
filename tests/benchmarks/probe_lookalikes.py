"""Record, per dev image, the served answer and the recogniser's look-alike rivals behind it.

    python tests/benchmarks/probe_lookalikes.py --ocr plate-ocr:BASE [--synth DIR] [--out FILE.json]

For choosing plate_text.py's look-alike rule offline (issue 19): each image's truth, the main
plate as served (its confidence and review flag) and, for every reading of that plate the rules
scored (plate_text._contested: first, second and widened reads), each character's confidence and
the OCR's alternatives there, with the pattern the plate fits and which one-character look-alike
swaps (O/0, I/1, B/8, ...: the YAML's confusion table, both ways) would fit a format too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.cli import _plate_recognizer
from services.plate_reader import plate_text
from services.plate_reader.evaluate import load_labels
from services.plate_reader.plate_text import load_formats, normalise
from services.plate_reader.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ocr", required=True)
    parser.add_argument("--plates", type=Path, default=Path(".bench/plates"))
    parser.add_argument("--synth", type=Path, action="append", default=[])
    parser.add_argument("--only", help="comma-separated set names (default: all)")
    parser.add_argument("--out", type=Path, default=Path(".bench/lookalikes.json"))
    args = parser.parse_args()
    settings = Settings.from_env()
    recognizer = _plate_recognizer(settings.detector_model, args.ocr, tuned="none")
    formats = load_formats()
    pairs = {**formats.to_digit, **formats.to_letter}
    log: list[tuple[str, list[float], list[list[tuple[str, float]]], str]] = []
    contested = plate_text._contested

    def logged(
        plate: str,
        confidences: list[float],
        alternatives: list[list[tuple[str, float]]],
        fits: re.Pattern[str],
    ) -> list[float]:
        log.append((plate, list(confidences), [list(a) for a in alternatives], fits.pattern))
        return contested(plate, confidences, alternatives, fits)

    plate_text._contested = logged
    sets: list[tuple[str, Path, bool, str | None]] = [
        ("real crops", args.plates / "crops", True, "dev"),
        ("real photos", args.plates / "photos", False, "dev"),
    ]
    for synth in args.synth or [Path(".bench/synth2")]:
        sets += [
            (f"{synth.name} {kind}", synth / folder, crops, None)
            for kind, folder, crops in (
                ("synthetic crops", "crops", True),
                ("US street crops", "us-street", True),
                ("camera crops", "camera", True),
                ("synthetic photos", "photos", False),
            )
        ]
    records = []
    for name, folder, crops, split in sets:
        chosen = not args.only or any(name.endswith(o) for o in args.only.split(","))
        if not chosen or not (folder / "labels.csv").is_file():
            continue
        for row in load_labels(folder, split):
            image = np.asarray(Image.open(folder / row["filename"]).convert("RGB"))
            log.clear()
            if crops:
                readings = recognizer.read_crops([image])
            else:
                [readings] = recognizer.read([image], min_score=settings.min_score)
            readings = [r for r in readings if r.plate]
            main_reading = readings[0] if readings else None
            answer = normalise(main_reading.plate) if main_reading else ""
            reads = []
            for plate, confidences, alternatives, fits in log:
                if plate != answer:
                    continue
                regex = re.compile(fits)
                swaps = [
                    [
                        partner
                        for partner in {pairs.get(char, ""), *(k for k, v in pairs.items() if v == char)}
                        if partner and regex.fullmatch(plate[:i] + partner + plate[i + 1 :])
                    ]
                    for i, char in enumerate(plate)
                ]
                reads.append({"confidences": confidences, "alternatives": alternatives, "swaps": swaps})
            records.append(
                {
                    "set": name,
                    "file": row["filename"],
                    "truth": normalise(row["plate"]),
                    "answer": answer,
                    "found": [normalise(r.plate) for r in readings],
                    "confidence": main_reading.score if main_reading else 0.0,
                    "review": main_reading.review if main_reading else True,
                    "region": main_reading.candidates[0].region
                    if main_reading and main_reading.candidates
                    else None,
                    "reads": reads,
                    "others": [
                        {
                            "plate": normalise(r.plate),
                            "score": r.score,
                            "review": r.review,
                            "area": r.box.width * r.box.height,
                        }
                        for r in readings
                    ]
                    if not crops
                    else [],
                }
            )
        print(name, len(records), flush=True)
    args.out.write_text(json.dumps(records))


if __name__ == "__main__":
    main()
