"""Does a client of small photos wait behind clients of large plateless photos? Over HTTP.

    python tests/benchmarks/bench_plate_fairness.py [--lanes 1,2] [--tile 960]

A client sends a 1280x720 photo with one plate, one request at a time, alone and then beside
`--hogs` clients each sending 4032x3024 photos without a plate, back to back: each such photo
pays for the tile search (small_plates.py, ~1.2 s), which the server runs after its batch on a
thread of its own (photo_reading.py). One server per `--lanes`; `--tile 0` turns the tile
search off (the cost of a large plateless photo without it). Prints p50/p95 per row.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import httpx
from PIL import Image

from tests.benchmarks.bench_plate_reader import percentile
from tests.benchmarks.machine import describe_machine
from tests.data.synth_plates import load_photos
from tests.scenes import plate_on_street
from tests.servers import serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", default="1,2")
    parser.add_argument("--tile", default="960")
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    small = plate_on_street(canvas=(1280, 720), at=(500, 450), scale=1.5).jpeg
    out = io.BytesIO()
    Image.fromarray(load_photos()[0]).resize((4032, 3024), Image.Resampling.BICUBIC).save(
        out, "JPEG", quality=90
    )
    large = out.getvalue()
    print(describe_machine(), flush=True)
    for lanes in args.lanes.split(","):
        env = {
            "MODELPORT_PLATE_BATCH_LANES": lanes,
            "MODELPORT_PLATE_DETECTOR_TILE": args.tile,
            "MODELPORT_PLATE_MAX_IMAGE_BYTES": str(4 * len(large)),
        }
        with (
            serve("services.plate_reader.service:PlateReader", env=env) as url,
            httpx.Client(timeout=120) as client,
        ):

            def post(jpeg: bytes, http: httpx.Client = client) -> float:
                start = time.perf_counter()
                response = http.post(f"{url}/v1/plate-reader", files={"upload": jpeg})
                assert response.status_code == 200, response.text
                return time.perf_counter() - start

            for _ in range(3):  # warm
                post(small), post(large)
            large_alone = statistics.median([post(large) for _ in range(3)])
            alone = [post(small) for _ in range(args.requests)]
            stop, large_times = threading.Event(), []

            def hog(stop: threading.Event = stop, times: list[float] = large_times) -> None:
                with httpx.Client(timeout=120) as own:
                    while not stop.is_set():
                        times.append(post(large, own))

            hogs = [threading.Thread(target=hog) for _ in range(args.hogs)]
            for thread in hogs:
                thread.start()
            time.sleep(1)
            beside = [post(small) for _ in range(args.requests)]
            stop.set()
            for thread in hogs:
                thread.join()
        print(
            f"lanes {lanes}, tile {args.tile}: 4032x3024 plateless photo alone {1000 * large_alone:.0f} ms; "
            f"1280x720 photo alone p50 {1000 * statistics.median(alone):.0f} ms, beside {args.hogs} clients "
            f"of plateless 4032x3024 photos p50 {1000 * statistics.median(beside):.0f} ms "
            f"p95 {1000 * percentile(beside, 0.95):.0f} ms; "
            f"theirs p50 {1000 * statistics.median(large_times):.0f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
