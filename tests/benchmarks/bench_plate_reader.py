"""Plate reader benchmark: the served pipeline over HTTP vs an in-process Ultralytics baseline.

    python tests/benchmarks/bench_plate_reader.py            # ~5 minutes on 2 cores

Prints two tables. Rows, all measured in this run, on four photos:
- two real street photos with several real plates each (litealpr's dashcam photos of traffic
  in Ho Chi Minh City, 1278x735 and 1257x693, sent as JPEG): motorbikes and a truck, and
  three cars (tests/assets.py);
- two 1280x720 scenes made here (tests/scenes.py): real plate crops pasted onto Ultralytics'
  bus photo, one plate, and four (two near, two far).
Per photo:
- served, 1 and 8 concurrent clients: `bentoml serve` + HTTP (multipart upload), end to end,
  one server per `--lanes` count (batches read at once, MODELPORT_PLATE_BATCH_LANES: 1 and 2)
- baseline: Ultralytics' torch `YOLO.predict` on the same detector checkpoint + the same OCR
  model (as rapidocr ships it: not folded, onnx_folding.py) on all the photo's boxes at once,
  in-process, on the same decoded pixels.
Both sides get the same thread budget: the server runs its detector and OCR in ONNX Runtime,
whose intra-op pool has one thread per core (its default; a batch's thread is one of them), at
most `lanes` batches at once. The baseline runs at most that many images at once, each in a worker
thread with its own YOLO (Ultralytics' predictors are not thread-safe), and torch's intra-op
threads set so that workers x threads = the budget (after the predictor's set-up, which sets
torch to cores - 1 threads: 1 on 2 cores); clients queue for a worker, and each worker is
warmed (YOLO loaded, a few predictions) before any timing. "plates" is the mean
number of plates each side read per photo. The second table splits the served time per photo
into the read's stages, from the server's own /metrics (services/plate_reader/stage_timing.py).
Targets (issue 10): served images/s >= 1.5x baseline at 1 and 8 clients, on every photo;
serving RSS < 600 MB. Numbers from a shared, noisy machine: compare the ratios, not the
absolute values.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
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

from services.plate_reader.stage_timing import STAGES
from tests.assets import asset
from tests.benchmarks.machine import describe_machine
from tests.scenes import plate_on_street, street_with_plates
from tests.servers import serve


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def http_load(
    url: str, jpeg: bytes, clients: int, requests: int
) -> tuple[list[float], float, float, dict[str, float]]:
    """Latencies, wall time, mean plates read per photo, `clients` at once, and the server's
    milliseconds per photo in each stage (stage_timing.py, from /metrics)."""
    latencies: list[float] = []
    plates: list[int] = []
    async with httpx.AsyncClient(timeout=60) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                start = time.perf_counter()
                response = await client.post(f"{url}/v1/plate-reader", files={"upload": jpeg})
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
                plates.append(len(response.json()["results"]))

        for _ in range(3):  # warm-up
            await worker(1)
        latencies.clear()
        plates.clear()
        before = stage_seconds((await client.get(f"{url}/metrics")).text)
        start = time.perf_counter()
        await asyncio.gather(*(worker(requests // clients) for _ in range(clients)))
        wall = time.perf_counter() - start
        after = stage_seconds((await client.get(f"{url}/metrics")).text)
        stages = {s: 1000 * (after.get(s, 0.0) - before.get(s, 0.0)) / len(latencies) for s in STAGES}
        return latencies, wall, statistics.mean(plates), stages


def stage_seconds(metrics: str) -> dict[str, float]:
    """Seconds summed per stage in a /metrics page (modelport_plate_stage_seconds_sum)."""
    found = re.findall(r'^modelport_plate_stage_seconds_sum\{stage="(\w+)"\} (\S+)$', metrics, re.MULTILINE)
    return {stage: float(value) for stage, value in found}


def stage_table(stage_ms: dict[tuple[str, int, str], dict[str, float]], rows: list) -> Table:
    """The served rows' milliseconds per photo in each stage of the read (the server's own
    modelport_plate_stage_seconds); "rules, rest" is the batch beyond its stages, "outside the
    batch" the mean latency beyond the batch (HTTP, decoding, queueing; at 8 clients a photo
    also waits for the others' batches). With two lanes two batches overlap, and each one's
    stages count whole: the columns are CPU-ish time per photo, not shares of its latency."""
    table = Table(title="served: milliseconds per photo in each stage (the server's /metrics)")
    for column in (
        "photo",
        "served",
        "clients",
        *STAGES[:-1],
        "rules, rest",
        "batch",
        "mean latency",
        "outside the batch",
    ):
        table.add_column(column)
    mean = {
        (photo, c, name): statistics.mean(lat)
        for photo, name, c, lat, *_ in rows
        if name.startswith("served")
    }
    for (photo, clients, label), ms in stage_ms.items():
        rest = ms["batch"] - sum(ms[s] for s in STAGES[:-1])
        table.add_row(
            photo,
            label.rpartition(", ")[2],
            str(clients),
            *(f"{ms[s]:.1f}" for s in STAGES[:-1]),
            f"{rest:.1f}",
            f"{ms['batch']:.1f}",
            f"{1000 * mean[photo, clients, label]:.1f}",
            f"{1000 * mean[photo, clients, label] - ms['batch']:.1f}",
        )
    return table


def rss_mb(root_pid: int) -> float:
    import psutil

    root = psutil.Process(root_pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def thread_budget() -> int:
    """The threads the served pipeline computes with: ONNX Runtime's intra-op pool, one thread
    per core by default (services/plate_reader/onnx_session.py sets no count)."""
    return os.cpu_count() or 1


class Baseline:
    """Ultralytics' torch YOLO + our OCR in-process: at most `budget` images at once, each on a
    warmed worker thread whose torch pool has budget / workers threads."""

    def __init__(self, ocr_path: Path, pt_path: Path, clients: int, budget: int) -> None:
        from ultralytics import YOLO

        from services.plate_reader.ocr import PlateOCR

        self.workers = min(clients, budget)
        # Set after each predictor's set-up (warm): Ultralytics' select_device resets torch to
        # min(8, cores - 1) threads, 1 on 2 cores, when a predictor is made.
        self.torch_threads = max(1, budget // self.workers)
        # The recogniser as its package ships it: the served reader's folded graph
        # (onnx_folding.py) is the served side's own work, as its text lines are.
        self.ocr = PlateOCR(ocr_path, as_exported=True)
        self.local = threading.local()  # Ultralytics predictors are not thread-safe: one per thread
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="baseline")
        self.make_yolo = lambda: YOLO(str(pt_path))
        self.seen_threads: set[int] = set()

    def warm(self, image: np.ndarray) -> None:
        """Load YOLO and run it a few times on every worker thread (a barrier makes each of
        the `workers` tasks take its own thread), so no timed call pays for a first call."""
        import torch

        barrier = threading.Barrier(self.workers)

        def warm_one() -> int:
            barrier.wait(timeout=300)
            self.read(image)  # sets the predictor up, and with it torch to cores - 1 threads
            barrier.wait(timeout=300)  # every worker's set-up done: now the budget holds
            torch.set_num_threads(self.torch_threads)
            for _ in range(2):
                self.read(image)
            assert torch.get_num_threads() == self.torch_threads, torch.get_num_threads()
            return threading.get_ident()

        self.seen_threads = set(self.pool.map(lambda _: warm_one(), range(self.workers)))
        assert len(self.seen_threads) == self.workers

    def read(self, image: np.ndarray) -> int:
        from services.plate_reader.types import BoundingBox

        if not hasattr(self.local, "yolo"):
            self.local.yolo = self.make_yolo()
        assert threading.get_ident() in self.seen_threads or not self.seen_threads, "a cold worker"
        boxes = self.local.yolo.predict(image[:, :, ::-1], imgsz=640, conf=0.25, verbose=False)[0].boxes
        found = [(image, BoundingBox(*map(int, b))) for b in boxes.xyxy.tolist()]
        return len(self.ocr.read_plates(found))

    def load(self, image: np.ndarray, clients: int, requests: int) -> tuple[list[float], float, float]:
        """`clients` threads each send requests // clients images, one at a time, to the workers."""
        latencies: list[float] = []
        plates: list[int] = []

        def client(n: int) -> None:
            for _ in range(n):
                start = time.perf_counter()
                plates.append(self.pool.submit(self.read, image).result())
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as senders:
            list(senders.map(client, [requests // clients] * clients))
        return latencies, time.perf_counter() - start, statistics.mean(plates)

    def close(self) -> None:
        self.pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=48, help="requests per row")
    parser.add_argument(
        "--lanes",
        type=lambda v: [int(n) for n in v.split(",")],
        default=[1, 2],
        help="a served row per lane count (MODELPORT_PLATE_BATCH_LANES), comma-separated",
    )
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")

    import bentoml

    from services.core.cli import register_model_kinds
    from services.core.model_store import DEFAULTS, import_model, serving_tag

    register_model_kinds()  # as the modelport CLI does: the store knows the kinds by registration
    for name in DEFAULTS:  # every model the plate reader loads
        if name.startswith("plate-"):
            import_model(name)
    detector = Path(bentoml.models.get(serving_tag("plate-detector")).path)
    ocr_path = Path(bentoml.models.get(serving_tag("plate-ocr")).path) / "model.onnx"
    photos = {
        "real: motorbikes, truck": real_photo("street_motorbikes"),
        "real: three cars": real_photo("street_cars"),
        "made: 1 plate": plate_on_street(canvas=(1280, 720), at=(500, 450), scale=1.5).jpeg,
        "made: 4 plates": street_with_plates(
            [
                ("plate_ad799kb", (500, 450), 1.5),
                ("plate_krw301", (120, 520), 1.2),
                ("plate_ad799kb", (900, 380), 0.9),
                ("plate_krw301", (1000, 550), 1.2),
            ]
        ).jpeg,
    }
    images = {name: np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")) for name, jpeg in photos.items()}
    budget = thread_budget()
    machine = describe_machine()
    print(machine, flush=True)
    print(
        f"thread budget, both sides: {budget} (served: ONNX Runtime's intra-op pool; baseline: "
        "workers x torch threads)",
        flush=True,
    )

    rows = []
    stage_ms: dict[tuple[str, int, str], dict[str, float]] = {}  # served ms per photo per stage
    peaks: dict[str, list[float]] = {}
    idle: dict[str, float] = {}
    with contextlib.ExitStack() as servers:
        import psutil

        # One server per lane count, all started first; an idle one uses no CPU (ONNX Runtime
        # does not spin), so each row has the machine to itself.
        urls, pids = {}, {}
        for lanes in args.lanes:
            label = f"served (HTTP), {lanes} lane{'s' if lanes > 1 else ''}"
            urls[label] = servers.enter_context(
                serve(
                    "services.plate_reader.service:PlateReader",
                    env={"MODELPORT_PLATE_BATCH_LANES": str(lanes)},
                    log_path=Path(f"/tmp/modelport-bench-plate-{lanes}.log"),
                )
            )
            pids[label] = next(
                p.pid
                for p in psutil.Process().children()
                if "bentoml" in " ".join(p.cmdline()) and p.pid not in pids.values()
            )
            peaks[label] = [0.0]
        sampling = threading.Event()

        def sample() -> None:  # the serving processes' RSS while under load
            while not sampling.wait(0.1):
                for label, pid in pids.items():
                    with contextlib.suppress(psutil.NoSuchProcess):  # a worker process restarting
                        peaks[label][0] = max(peaks[label][0], rss_mb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        os.environ.setdefault("YOLO_OFFLINE", "1")
        # Each baseline row right after its served rows: a busy minute on the shared machine
        # then slows both alike.
        for clients in (1, 8):
            baseline = Baseline(ocr_path, detector / "best.pt", clients, budget)
            try:
                for name, jpeg in photos.items():
                    for label, url in urls.items():
                        *served, stage_ms[name, clients, label] = asyncio.run(
                            http_load(url, jpeg, clients, args.requests)
                        )
                        rows.append((name, label, clients, *served))
                        print(*rows[-1][:3], f"{len(rows[-1][3]) / rows[-1][4]:.2f} images/s", flush=True)
                    baseline.warm(images[name])
                    rows.append(
                        (
                            name,
                            f"baseline (Ultralytics torch, {baseline.workers} worker(s) x "
                            f"{baseline.torch_threads} thread(s))",
                            clients,
                            *baseline.load(images[name], clients, args.requests),
                        )
                    )
                    print(*rows[-1][:3], f"{len(rows[-1][3]) / rows[-1][4]:.2f} images/s", flush=True)
            finally:
                baseline.close()
        sampling.set()
        sampler.join()
        time.sleep(3)  # idle: the reader hands freed memory back
        idle = {label: rss_mb(pid) for label, pid in pids.items()}

    table = Table(
        title=f"plate reader, {args.requests} requests per row, thread budget {budget} "
        f"for both sides; a shared machine\n{machine}"
    )
    for column in ("photo", "pipeline", "clients", "plates", "p50 ms", "p95 ms", "images/s", "vs baseline"):
        table.add_column(column)
    base = {
        (photo, c): len(lat) / wall for photo, name, c, lat, wall, _ in rows if name.startswith("baseline")
    }
    for photo in photos:
        for clients in (1, 8):
            for row_photo, name, row_clients, latencies, wall, plates in rows:
                if (row_photo, row_clients) != (photo, clients):
                    continue
                throughput = len(latencies) / wall
                table.add_row(
                    photo,
                    name,
                    str(clients),
                    f"{plates:.1f}",
                    f"{1000 * statistics.median(latencies):.1f}",
                    f"{1000 * percentile(latencies, 0.95):.1f}",
                    f"{throughput:.2f}",
                    f"{throughput / base[photo, clients]:.2f}x",
                )
    console = Console(width=140)
    console.print(table)
    console.print(stage_table(stage_ms, rows))
    for label, peak in peaks.items():
        console.print(
            f"{label}: serving processes RSS (bentoml serve + worker): peak under load "
            f"{peak[0]:.0f} MB, idle after it {idle[label]:.0f} MB"
        )


def real_photo(name: str) -> bytes:
    """A real street photo from tests/assets.py as the JPEG a camera would send."""
    out = io.BytesIO()
    Image.open(asset(name)).convert("RGB").save(out, format="JPEG", quality=92)
    return out.getvalue()


if __name__ == "__main__":
    main()
