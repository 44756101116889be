"""Load test of both services over loopback HTTP, at their default limits: status codes and
latency under steady load and under a burst (issue 12). Not a timed unit test: run it by hand.

    python tests/benchmarks/load_test.py          # ~5 minutes on 2 cores

Rows (each service served alone by a real `bentoml serve`, the other stopped):
- plate reader: 1,000 requests (one 1280x720 photo each) from 32 clients, then a burst of 200
  requests at once;
- autocompleter (SmolLM2-135M, the offline default): 400 completions of 32 tokens from 32
  clients, then a burst of 200 at once.
Expected: no 5xx and no dropped connections anywhere; under steady load only 200s (32 clients
fit in the limits); in a burst only 200s and 429s, each 429 with Retry-After, answered at once.
Latencies are per status: a 429's says how fast "busy" is told.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.machine import describe_machine
from tests.scenes import plate_on_street
from tests.servers import serve

DROPPED = "dropped"  # a transport error: the connection failed or was cut, no status at all


@dataclass
class Outcome:
    name: str
    clients: int
    statuses: Counter[int | str] = field(default_factory=Counter)
    latencies: dict[int | str, list[float]] = field(default_factory=dict)
    retry_after_missing: int = 0
    wall_s: float = 0.0

    def add(self, status: int | str, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.setdefault(status, []).append(seconds)


async def load(name: str, url: str, request: dict[str, Any], *, total: int, clients: int) -> Outcome:
    """`total` requests from `clients` clients, each sending its next as soon as one returns
    (clients == total: a burst, all at once)."""
    outcome = Outcome(name, clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    remaining = iter(range(total))
    async with httpx.AsyncClient(timeout=180, limits=limits) as client:

        async def one_client() -> None:
            for _ in remaining:
                start = time.perf_counter()
                try:
                    response = await client.post(url, **request)
                except httpx.TransportError:
                    outcome.add(DROPPED, time.perf_counter() - start)
                    continue
                outcome.add(response.status_code, time.perf_counter() - start)
                if response.status_code == 429 and "retry-after" not in response.headers:
                    outcome.retry_after_missing += 1

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        outcome.wall_s = time.perf_counter() - start
    return outcome


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float] | None, q: float) -> str:
    return (
        "-"
        if not values
        else f"{1000 * (statistics.median(values) if q == 0.5 else percentile(values, q)):.0f}"
    )


def plate_rows(requests: int, burst: int) -> list[Outcome]:
    from services.core.model_store import import_model

    for name in ("plate-detector", "plate-ocr", "plate-text-detector"):
        import_model(name)
    photo = plate_on_street(canvas=(1280, 720), at=(500, 450), scale=1.5).jpeg
    request = {"files": {"upload": ("car.jpg", photo, "image/jpeg")}}
    with serve(
        "services.plate_reader.service:PlateReader",
        log_path=Path(tempfile.gettempdir()) / "modelport-load-plate.log",
    ) as url:
        endpoint = f"{url}/v1/plate-reader"
        asyncio.run(load("warm-up", endpoint, request, total=8, clients=2))
        return [
            asyncio.run(load("plate reader, steady", endpoint, request, total=requests, clients=32)),
            asyncio.run(load("plate reader, burst", endpoint, request, total=burst, clients=burst)),
        ]


def completion_rows(requests: int, burst: int) -> list[Outcome]:
    from services.core.model_store import import_model

    import_model("smollm2-135m")
    request = {
        "json": {"prompt": "The best way to learn a new language is", "max_tokens": 32, "temperature": 0.8}
    }
    with serve(
        "services.autocomplete.service:Autocomplete",
        env={"MODELPORT_AUTOCOMPLETE_MODEL": "smollm2-135m"},
        log_path=Path(tempfile.gettempdir()) / "modelport-load-autocomplete.log",
    ) as url:
        endpoint = f"{url}/v1/completions"
        asyncio.run(load("warm-up", endpoint, request, total=4, clients=2))
        return [
            asyncio.run(
                load("completions (32 tokens), steady", endpoint, request, total=requests, clients=32)
            ),
            asyncio.run(
                load("completions (32 tokens), burst", endpoint, request, total=burst, clients=burst)
            ),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plates", type=int, default=1000)
    parser.add_argument("--completions", type=int, default=400)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--only", choices=("plates", "completions"))
    args = parser.parse_args()
    # The model store and servers' files live in one scratch folder, removed at the end.
    with tempfile.TemporaryDirectory(prefix="load-test-") as scratch:
        os.environ.setdefault("BENTOML_HOME", f"{scratch}/bentoml")
        os.environ.update(
            {
                "BENTOML_DO_NOT_TRACK": "1",
                "HF_HUB_OFFLINE": "1",
                "YOLO_OFFLINE": "1",
                "YOLO_CONFIG_DIR": f"{scratch}/ultralytics",
            }
        )
        from services.core.cli import register_model_kinds

        register_model_kinds()  # the default models' catalogue entries
        rows = []
        if args.only != "completions":
            rows += plate_rows(args.plates, args.burst)
        if args.only != "plates":
            rows += completion_rows(args.completions, args.burst)
    print_table(rows)


def print_table(rows: list[Outcome]) -> None:
    table = Table(title=f"Load test, loopback, default limits ({describe_machine()})")
    for column in (
        "scenario",
        "requests",
        "clients",
        "200",
        "429",
        "other 4xx",
        "5xx",
        DROPPED,
        "200 p50 ms",
        "200 p95 ms",
        "429 p50 ms",
        "429 p95 ms",
        "429s w/o Retry-After",
        "wall s",
    ):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for row in rows:
        s = row.statuses
        other_4xx = sum(
            n for code, n in s.items() if isinstance(code, int) and 400 <= code < 500 and code != 429
        )
        server_errors = sum(n for code, n in s.items() if isinstance(code, int) and code >= 500)
        table.add_row(
            row.name,
            str(sum(s.values())),
            str(row.clients),
            str(s[200]),
            str(s[429]),
            str(other_4xx),
            str(server_errors),
            str(s[DROPPED]),
            ms(row.latencies.get(200), 0.5),
            ms(row.latencies.get(200), 0.95),
            ms(row.latencies.get(429), 0.5),
            ms(row.latencies.get(429), 0.95),
            str(row.retry_after_missing),
            f"{row.wall_s:.1f}",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
