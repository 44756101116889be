"""Parking-gate log: watch a folder of camera photos, print each car's plate as it arrives.

    bentoml serve services.plate_reader.service:PlateReader --port 3000 &
    python examples/parking_gate.py ./gate-camera            # watch; Ctrl-C to stop
    python examples/parking_gate.py ./gate-camera --once     # read what is there, then exit

Each line: time, file, plate, reading confidence, and REVIEW when the service says a
human should check it. Only needs `modelport-client` (pip install ./clients).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from modelport_client import Client, ModelportError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def log_photo(client: Client, photo: Path, writer: Any) -> None:  # writer: a csv.writer, or None
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    try:
        reading = client.read_plates(photo)
    except ModelportError as exc:  # one bad photo must not stop the gate
        print(f"{stamp}  {photo.name:<24} ERROR  {exc}", flush=True)
        return
    if not reading.results:
        print(f"{stamp}  {photo.name:<24} no plate found", flush=True)
    for plate in reading.results:
        flag = "REVIEW" if plate.review else "ok"
        print(f"{stamp}  {photo.name:<24} {plate.plate or '?':<10} {plate.score:.2f}  {flag}", flush=True)
        if writer is not None:
            writer.writerow([stamp, photo.name, plate.plate, f"{plate.score:.3f}", plate.review])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder the gate camera writes photos into")
    parser.add_argument("--url", default="http://localhost:3000", help="plate reader base URL")
    parser.add_argument("--once", action="store_true", help="read the photos there now, then exit")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between folder scans")
    parser.add_argument("--csv", type=Path, help="also append each reading to this CSV file")
    args = parser.parse_args()
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")

    seen: set[Path] = set()
    csv_file = args.csv.open("a", newline="") if args.csv else None
    writer = csv.writer(csv_file) if csv_file else None
    with Client(args.url) as client:
        try:
            while True:
                new = sorted(
                    p for p in args.folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p not in seen
                )
                for photo in new:
                    log_photo(client, photo, writer)
                    seen.add(photo)
                if args.once:
                    return 0
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
        finally:
            if csv_file:
                csv_file.close()


if __name__ == "__main__":
    sys.exit(main())
