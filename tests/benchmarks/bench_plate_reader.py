"""Plate reader benchmark: the served pipeline over HTTP vs an in-process Ultralytics baseline.

    python tests/benchmarks/bench_plate_reader.py            # ~2 minutes on 2 cores

Prints one table. Rows, all measured in this run on two 1280x720 street photos with real plate
crops pasted in (tests/scenes.py): one plate, and a street scene with four (two near, two far):
- served, 1 and 8 concurrent clients: `bentoml serve` + HTTP (multipart upload), end to end
- baseline: Ultralytics' torch `YOLO.predict` + the same OCR model on all the photo's boxes at
  once, in-process, one image at a time (8 threads for the 8-client row)
Targets (issue 10): served images/s >= 1.5x baseline at 1 and 8 clients, on both photos; serving
RSS < 600 MB.
Numbers from a shared, noisy machine: compare the ratios, not the absolute values.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.machine import describe_machine  # noqa: E402
from tests.scenes import plate_on_street, street_with_plates  # noqa: E402
from tests.servers import serve  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def http_load(url: str, jpeg: bytes, clients: int, requests: int, plates: int
                    ) -> tuple[list[float], float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=60) as client:
        async def worker(n: int) -> None:
            for _ in range(n):
                start = time.perf_counter()
                response = await client.post(f"{url}/v1/plate-reader", files={"upload": jpeg})
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
                assert len(response.json()["results"]) >= plates, response.text

        for _ in range(3):  # warm-up
            await worker(1)
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*(worker(requests // clients) for _ in range(clients)))
        return latencies, time.perf_counter() - start


def rss_mb(root_pid: int) -> float:
    import psutil

    root = psutil.Process(root_pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def baseline(image: np.ndarray, ocr_path: Path, pt_path: Path, clients: int, requests: int,
             plates: int) -> tuple[list[float], float]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    from services.plate_reader.ocr import PlateOCR
    from services.plate_reader.types import BoundingBox

    ocr = PlateOCR(ocr_path)
    local = threading.local()  # Ultralytics predictors are not thread-safe: one per thread

    def read_one() -> float:
        if not hasattr(local, "yolo"):
            local.yolo = YOLO(str(pt_path))
        start = time.perf_counter()
        boxes = local.yolo.predict(image[:, :, ::-1], imgsz=640, conf=0.25, verbose=False)[0].boxes
        found = [(image, BoundingBox(*map(int, b))) for b in boxes.xyxy.tolist()]
        assert len(ocr.read_plates(found)) >= plates, "baseline missed plates"
        return time.perf_counter() - start

    for _ in range(3):
        read_one()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(lambda _: read_one(), range(requests)))
    return latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=48, help="requests per row")
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")

    import bentoml

    from services.core.cli import register_model_kinds
    from services.core.model_store import import_model, serving_tag

    register_model_kinds()  # as the modelport CLI does: the store knows the kinds by registration
    for name in ("plate-detector", "plate-ocr"):
        import_model(name)
    detector = Path(bentoml.models.get(serving_tag("plate-detector")).path)
    ocr_path = Path(bentoml.models.get(serving_tag("plate-ocr")).path) / "model.onnx"
    scenes = {
        "1 plate": (plate_on_street(canvas=(1280, 720), at=(500, 450), scale=1.5), 1),
        "4 plates": (street_with_plates([("plate_ad799kb", (500, 450), 1.5),
                                         ("plate_krw301", (120, 520), 1.2),
                                         ("plate_ad799kb", (900, 380), 0.9),
                                         ("plate_krw301", (1000, 550), 1.2)]), 4),
    }
    images = {name: np.asarray(Image.open(io.BytesIO(scene.jpeg)).convert("RGB"))
              for name, (scene, _) in scenes.items()}

    rows = []
    log = Path("/tmp/modelport-bench-plate.log")
    with serve("services.plate_reader.service:PlateReader", log_path=log) as url:
        import psutil

        server_pid = next(p.pid for p in psutil.Process().children()
                          if "bentoml" in " ".join(p.cmdline()))
        peak, sampling = [0.0], threading.Event()

        def sample() -> None:  # the serving processes' RSS while under load
            while not sampling.wait(0.1):
                peak[0] = max(peak[0], rss_mb(server_pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for name, (scene, plates) in scenes.items():
            for clients in (1, 8):
                latencies, wall = asyncio.run(http_load(url, scene.jpeg, clients, args.requests, plates))
                rows.append((name, "served (HTTP)", clients, latencies, wall))
        sampling.set()
        sampler.join()
        time.sleep(3)  # idle: the reader hands freed memory back
        rss = rss_mb(server_pid)
    for name, (_, plates) in scenes.items():
        for clients in (1, 8):
            latencies, wall = baseline(images[name], ocr_path, detector / "best.pt", clients,
                                       args.requests, plates)
            rows.append((name, "baseline (Ultralytics torch, in-process)", clients, latencies, wall))

    table = Table(title=f"plate reader, 1280x720 photos, {args.requests} requests per row\n"
                        f"{describe_machine()}")
    for column in ("photo", "pipeline", "clients", "p50 ms", "p95 ms", "images/s", "vs baseline"):
        table.add_column(column)
    base = {(scene, c): len(lat) / wall for scene, name, c, lat, wall in rows
            if name.startswith("baseline")}
    for scene, name, clients, latencies, wall in rows:
        throughput = len(latencies) / wall
        table.add_row(scene, name, str(clients), f"{1000 * statistics.median(latencies):.1f}",
                      f"{1000 * percentile(latencies, 0.95):.1f}", f"{throughput:.1f}",
                      f"{throughput / base[scene, clients]:.2f}x")
    console = Console(width=120)
    console.print(table)
    console.print(f"serving processes RSS (bentoml serve + worker): peak under load {peak[0]:.0f} MB, "
                  f"idle after it {rss:.0f} MB")


if __name__ == "__main__":
    main()
