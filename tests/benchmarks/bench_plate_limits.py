"""The plate reader under issue 20's probes, against real servers: serving memory with 3
concurrent requests of 8 photos of 36 Mpx, /livez while a 39 Mpx PNG is decoded, and what
recording reviews costs a client reading a 1280x720 photo with 4 plates (2 flagged).

    python tests/benchmarks/bench_plate_limits.py              # this checkout
    python tests/benchmarks/bench_plate_limits.py --code /tmp/old --only memory,livez   # another one

Servers run from `--code` (a checkout; its own services/ are served), with their own
BENTOML_HOME (the models imported once) and data folder. The review rows run a store-on and a
store-off server side by side, in alternating rounds, so both see the same machine load;
`record-cost` measures in one process the CPU a read and a recording take (their ratio holds
on a busy machine, where img/s does not).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import httpx
import numpy as np
from PIL import Image

from tests.benchmarks.machine import describe_machine
from tests.probes import livez_latencies, peak_rss, rss_now_mb
from tests.scenes import street_with_plates
from tests.servers import serve_process

TARGET = "services.plate_reader.service:PlateReader"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 160)).save(out, format="PNG")
    return out.getvalue()


def memory(code: Path, env: dict[str, str]) -> None:
    photo = png(6000, 6000)
    files = [("upload", (f"{i}.png", photo)) for i in range(8)]
    log = Path(env["MODELPORT_DATA_DIR"]) / "memory.log"
    with serve_process(TARGET, env=env, cwd=code, log_path=log) as server:
        before = rss_now_mb(server.process.pid)
        started = time.perf_counter()
        with peak_rss(server.process.pid) as peak, ThreadPoolExecutor(3) as pool:
            statuses = list(
                pool.map(
                    lambda _: (
                        httpx.post(f"{server.url}/v1/plate-reader", files=files, timeout=600).status_code
                    ),
                    range(3),
                )
            )
        elapsed = time.perf_counter() - started
        time.sleep(3)  # past the batcher's idle trim
        after = rss_now_mb(server.process.pid)
    print(
        f"| 3 x 8 x 6000x6000 PNG ({len(photo) // 1000} KB each) | {statuses} | {before:.0f} | "
        f"{peak.total_mb:.0f} | {after:.0f} | {elapsed:.1f} |"
    )


def livez(code: Path, env: dict[str, str]) -> None:
    huge = png(6245, 6245)
    log = Path(env["MODELPORT_DATA_DIR"]) / "livez.log"
    with serve_process(TARGET, env=env, cwd=code, log_path=log) as server:
        with livez_latencies(server.url) as idle:
            time.sleep(1)
        with livez_latencies(server.url) as busy:
            response = httpx.post(f"{server.url}/v1/plate-reader", files={"upload": huge}, timeout=600)
    status = response.status_code
    print(
        f"| 6245x6245 PNG ({len(huge) // 1000} KB) | {status} | {max(idle) * 1000:.0f} | "
        f"{max(busy) * 1000:.0f} | {len(busy)} |"
    )


def four_plate_photos(count: int) -> list[bytes]:
    """The 4-plate street photo, `count` times, each with one pixel changed: other bytes."""
    scene = street_with_plates(
        [
            ("plate_ad799kb", (500, 450), 1.5),
            ("plate_krw301", (120, 520), 1.2),
            ("plate_ad799kb", (900, 380), 0.9),
            ("plate_krw301", (1000, 550), 1.2),
        ]
    )
    pixels = np.asarray(Image.open(io.BytesIO(scene.jpeg)).convert("RGB")).copy()
    photos = []
    for i in range(count):
        pixels[0, i % pixels.shape[1]] = (i * 7) % 256, 0, 0
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=92)
        photos.append(out.getvalue())
    return photos


def reviews(code: Path, env: dict[str, str], rounds: int, per_round: int) -> None:
    photos = four_plate_photos(rounds * per_round + 1)
    data = Path(env["MODELPORT_DATA_DIR"])
    on_env = {**env, "MODELPORT_DATA_DIR": str(data / "on")}
    off_env = {**env, "MODELPORT_DATA_DIR": str(data / "off"), "MODELPORT_REVIEW_STORE": "off"}
    with (
        serve_process(TARGET, env=on_env, cwd=code, log_path=data / "on.log") as on,
        serve_process(TARGET, env=off_env, cwd=code, log_path=data / "off.log") as off,
    ):
        first = httpx.post(f"{on.url}/v1/plate-reader", files={"upload": photos[0]}, timeout=60).json()
        flagged = sum(p["review"] for p in first["results"])
        for url in (on.url, off.url):  # warm-up
            for _ in range(3):
                httpx.post(f"{url}/v1/plate-reader", files={"upload": photos[0]}, timeout=60)
        timings: dict[tuple[str, str], float] = {}
        cpus: dict[tuple[str, str], float] = {}
        with httpx.Client(timeout=60) as client:
            for r in range(rounds):
                for kind in ("same photo", "new photos"):
                    order = (("on", on.url), ("off", off.url))
                    for name, url in order if r % 2 == 0 else order[::-1]:
                        pid = (on if name == "on" else off).process.pid
                        started, cpu = time.perf_counter(), cpu_s(pid)
                        for i in range(per_round):
                            photo = photos[0] if kind == "same photo" else photos[1 + r * per_round + i]
                            response = client.post(f"{url}/v1/plate-reader", files={"upload": photo})
                            assert response.status_code == 200
                        if name == "on":  # what is queued is written before the round counts as done
                            wait_written(on.url, pid)
                        timings[kind, name] = timings.get((kind, name), 0.0) + time.perf_counter() - started
                        cpus[kind, name] = cpus.get((kind, name), 0.0) + cpu_s(pid) - cpu
        recorded = sqlite_rows(data / "on" / "modelport.sqlite3")
    images = rounds * per_round
    print(
        f"4-plate 1280x720 photo, {len(first['results'])} plates read, {flagged} flagged; "
        f"{recorded} review rows written by the store-on server"
    )
    print(
        "| photos sent | store on (img/s) | store off (img/s) | wall cost | on (server CPU ms/img) "
        "| off (server CPU ms/img) | CPU cost |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in ("same photo", "new photos"):
        on_rate, off_rate = images / timings[kind, "on"], images / timings[kind, "off"]
        on_cpu, off_cpu = cpus[kind, "on"] / images * 1000, cpus[kind, "off"] / images * 1000
        print(
            f"| {kind} | {on_rate:.2f} | {off_rate:.2f} | {(1 - on_rate / off_rate) * 100:.1f}% | "
            f"{on_cpu:.0f} | {off_cpu:.0f} | {(on_cpu / off_cpu - 1) * 100:.1f}% |"
        )


def cpu_s(root_pid: int) -> float:
    """CPU seconds (user + system, every thread) of the serving processes so far."""
    import psutil

    from tests.probes import serving_pids

    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in serving_pids(root_pid))


def sqlite_rows(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT count(*) FROM reviews").fetchone()[0]


def wait_written(url: str, pid: int) -> None:
    """Until the recorder has written what the last requests queued: the server's CPU is idle."""
    for _ in range(100):
        before = cpu_s(pid)
        time.sleep(0.05)
        if cpu_s(pid) - before < 0.005:
            return


def record_cost(count: int) -> None:
    """CPU seconds (process_time: every thread, ONNX Runtime's too) to read a photo (decode +
    read_batch) and to record it for review (what the recorder's thread does), interleaved in one
    process: load on the machine slows both alike, so their ratio holds."""
    import bentoml

    from services.core.database import database_engine
    from services.plate_reader.image_decoding import decode_photos
    from services.plate_reader.pipeline import PlateRecognizer
    from services.plate_reader.review_store import ReviewStore
    from services.plate_reader.settings import Settings
    from services.plate_reader.types import ReadRequest

    settings = Settings.from_env()

    def path(tag: str) -> str:
        return bentoml.models.get(tag).path_of("model.onnx")

    recognizer = PlateRecognizer.from_files(
        path(settings.detector_model),
        path(settings.ocr_model),
        review_threshold=settings.review_threshold,
        detector_imgsz=settings.detector_imgsz,
        retry_imgsz=settings.detector_retry_imgsz,
        tile=settings.detector_tile,
        text_detector_path=path(settings.text_detector_model) if settings.text_lines else None,
    )
    work = Path(tempfile.mkdtemp(prefix="modelport-bench-record-"))
    store = ReviewStore(database_engine(f"sqlite:///{work / 'reviews.sqlite3'}"), work / "images")
    read_s, record_s, flagged = [], [], 0
    for data in four_plate_photos(count + 2):
        started = time.process_time()
        [photo] = decode_photos([data], settings)
        readings = recognizer.read_batch([ReadRequest(photo.pixels, settings.min_score, (), None, photo)])[0]
        middle = time.process_time()
        chosen = store.to_record(readings)
        if chosen:
            store.record(photo.whole(), chosen, camera_id="bench", models=("d", "o"))
        read_s.append(middle - started)
        record_s.append(time.process_time() - middle)
        flagged += bool(chosen)
    read_ms, record_ms = 1000 * sum(read_s[2:]) / count, 1000 * sum(record_s[2:]) / count  # 2 warm-up
    print(
        f"| {count} new 4-plate 1280x720 photos ({flagged} recorded) | {read_ms:.0f} | {record_ms:.1f} | "
        f"{record_ms / (read_ms + record_ms) * 100:.1f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout to serve")
    parser.add_argument("--only", default="memory,livez,reviews")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelport-bench-limits-"))
    home = os.environ.get("MODELPORT_BENCH_BENTOML_HOME", str(work / "bentoml"))
    os.environ["BENTOML_HOME"] = home
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")
    from services.core.cli import register_model_kinds
    from services.core.model_store import import_model

    register_model_kinds()
    for name in ("plate-detector", "plate-ocr", "plate-text-detector"):  # the last: newer checkouts
        try:
            import_model(name)
        except (KeyError, ValueError) as exc:
            print(f"# {name}: not imported ({exc})")
    print(f"# {describe_machine()}; shared machine: compare rows of one run, not runs")
    print(f"# serving {args.code}")
    only = set(args.only.split(","))
    for part in ("memory", "livez", "reviews", "record-cost"):
        if part not in only:
            continue
        env = {"BENTOML_HOME": home, "MODELPORT_DATA_DIR": str(work / part)}
        Path(env["MODELPORT_DATA_DIR"]).mkdir(parents=True)
        if part == "memory":
            print("| load | statuses | RSS before (MB) | peak RSS (MB) | RSS 3 s after (MB) | s |")
            print("|---|---|---|---|---|---|")
            memory(args.code, env)
        elif part == "record-cost":
            print("| photos | read CPU (ms/photo) | record CPU (ms/photo) | share of CPU-bound throughput |")
            print("|---|---|---|---|")
            record_cost(args.rounds * args.per_round)
        elif part == "livez":
            print("| photo | status | /livez max idle (ms) | /livez max while read (ms) | calls |")
            print("|---|---|---|---|---|")
            livez(args.code, env)
        else:
            reviews(args.code, env, args.rounds, args.per_round)


if __name__ == "__main__":
    main()
