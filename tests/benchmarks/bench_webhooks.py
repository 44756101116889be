"""What webhooks add to a photo's answer: the wait in `record_answers` (the event written to the
outbox, SQLite on disk, before the answer goes), one client and 8 at once, against a real
plate reader's whole answer time measured in the same run.

    python tests/benchmarks/bench_webhooks.py [--requests 200]

Rows: `record_answers` alone (webhooks.py, in this process, a real SQLite outbox in a temp
folder, a target that is down so rows stay pending the way they do in a receiver outage), one
caller after another and 8 callers together (their writes grouped into shared transactions);
then the same plate photo read over HTTP by a real `bentoml serve`, webhooks off and on
(target down), interleaved. Times in ms, p50/p95. A shared, noisy machine: compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, run as a script
from services.core.database import database_engine
from services.plate_reader.settings import Settings
from services.plate_reader.webhook_outbox import Outbox
from services.plate_reader.webhook_targets import parse_targets
from services.plate_reader.webhooks import Policy, Webhooks
from tests.benchmarks.machine import describe_machine
from tests.scenes import plate_on_street
from tests.servers import free_port, serve

SECRET = "whsec_" + "A" * 44  # 32 bytes
RESULTS = [{"plate": "ad799kb", "score": 0.97, "box": {"xmin": 300, "ymin": 700, "xmax": 460, "ymax": 740}}]


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def row(name: str, values: list[float]) -> str:
    return f"| {name:<58} | {p(values, 50) * 1000:8.2f} | {p(values, 95) * 1000:8.2f} |"


async def record_times(hooks: Webhooks, requests: int, clients: int) -> list[float]:
    times: list[float] = []

    async def one(i: int) -> None:
        body = {"filename": f"{i}.jpg", "camera_id": "gate-1", "timestamp": "x", "results": RESULTS}
        started = time.perf_counter()
        await hooks.record_answers([body])
        times.append(time.perf_counter() - started)

    for start in range(0, requests, clients):
        await asyncio.gather(*(one(i) for i in range(start, min(start + clients, requests))))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: rows stay pending
    targets = json.dumps([{"url": down, "secret": SECRET}])
    print(describe_machine())
    print(f"| {'what (ms)':<58} | {'p50':>8} | {'p95':>8} |\n|{'-' * 60}|{'-' * 10}|{'-' * 10}|")
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(webhooks=targets, webhook_dev_hosts=("127.0.0.1",), webhook_backoff_s=60)
        engine = database_engine(f"sqlite:///{Path(folder) / 'modelport.sqlite3'}")
        hooks = Webhooks(
            parse_targets(targets, dev_hosts=("127.0.0.1",)), lambda: Outbox(engine), Policy.of(settings)
        )
        asyncio.run(record_times(hooks, 20, 1))  # warm: migrations, first connection
        for clients in (1, 8):
            times = asyncio.run(record_times(hooks, args.requests, clients))
            print(row(f"record_answers, {clients} caller(s) at once", times), flush=True)
        hooks.close()

        jpeg = plate_on_street().jpeg
        env = {"MODELPORT_DATA_DIR": folder}
        on = {**env, "MODELPORT_PLATE_WEBHOOKS": targets, "MODELPORT_PLATE_WEBHOOK_DEV_HOSTS": "127.0.0.1"}
        with (
            serve("services.plate_reader.service:PlateReader", env=env) as off_url,
            serve("services.plate_reader.service:PlateReader", env=on) as on_url,
        ):
            times: dict[str, list[float]] = {off_url: [], on_url: []}
            with httpx.Client(timeout=60) as client:
                for i in range(args.requests // 4 + 5):
                    for url in (off_url, on_url):  # interleaved: the machine's noise hits both
                        started = time.perf_counter()
                        response = client.post(f"{url}/v1/plate-reader", files={"upload": ("c.jpg", jpeg)})
                        response.raise_for_status()
                        if i >= 5:  # the first few warm each server
                            times[url].append(time.perf_counter() - started)
            print(row("photo read over HTTP, webhooks off", times[off_url]))
            print(row("photo read over HTTP, webhooks on (event written first)", times[on_url]))
            ratio = statistics.median(times[on_url]) / statistics.median(times[off_url])
            print(f"\nmedian answer time, on / off: {ratio:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")
    main()
