"""Prove a `modelport capacity` answer: serve the service with the recommended per-replica
concurrency as its admission limit, send its traffic at the planned load per replica, then at
1.5x it, at a fixed rate (open loop: arrivals do not wait for answers, as real cameras and
typists do not). Plate reader: photos. Autocompleter: `/v1/suggest` from the replica's share
of the editors, each asking every few characters (a 409 is an editor's own older request
superseded by its newer one, as in an editor; it is counted apart).

    modelport capacity plate-reader --target 10rps --out /tmp/cap
    python tests/benchmarks/prove_capacity.py /tmp/cap/report.json
    modelport capacity autocomplete --editors 300 --out /tmp/capa
    python tests/benchmarks/prove_capacity.py /tmp/capa/report.json

Expected: at the planned load the objective holds with no errors; at 1.5x the extra load is
answered 429 (with Retry-After) and nothing times out or fails with 5xx. One replica is
measured (this machine); the planned load per replica is the target / replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from services.core.capacity_traffic import PhotoTraffic, TypingTraffic
from tests.benchmarks.machine import describe_machine
from tests.servers import serve


async def open_loop(
    url: str, traffic: PhotoTraffic | TypingTraffic, rate: float, seconds: float, *, senders: int = 0
) -> tuple[Counter, list[float]]:
    """Send `rate` requests a second for `seconds`, request i from sender i % `senders` (0: each
    its own); statuses (0: timeout or dropped) and the latencies of 200s."""
    statuses: Counter = Counter()
    latencies: list[float] = []
    async with aiohttp.ClientSession(
        url, timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def one(i: int) -> None:
            sent = time.perf_counter()
            try:
                status = await traffic.call(session, i % senders if senders else i)
            except (TimeoutError, aiohttp.ClientError):
                status = 0
            statuses[status] += 1
            if status == 200:
                latencies.append((time.perf_counter() - sent) * 1000)

        tasks, start = [], time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return statuses, latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("report", type=Path, help="a report.json of `modelport capacity`")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    rec, objective = report["recommendation"], report["objective_detail"]
    per_replica = (
        rec["target_rps"] / rec["replicas"] if rec.get("target_rps") else rec["requests_per_s"] * 0.8
    )
    limit = rec["traffic_concurrency"]
    typing = report["service"] == "autocomplete"
    prefix = "MODELPORT_AUTOCOMPLETE" if typing else "MODELPORT_PLATE"
    env = {
        f"{prefix}_MAX_IN_FLIGHT": str(limit),
        f"{prefix}_MAX_QUEUE": str(limit),
        f"{prefix}_MAX_QUEUE_WAIT_S": str(objective["limit_ms"] / 1000),
    }
    # An editor asks 5/6 times a second (5 characters a second, every 6): the replica's editors.
    editors = max(1, round(per_replica / (5 / 6))) if typing else 0
    console = Console()
    console.print(f"{describe_machine()}; shared machine: compare within this run")
    console.print(f"replica limits {env}; planned load {per_replica:.2f} req/s per replica")
    table = Table(
        "load",
        "req/s",
        "200",
        "429",
        "409 superseded",
        "5xx",
        "timeouts/dropped",
        f"p{objective['percentile']} of 200s ms",
        "objective",
        title=f"objective p{objective['percentile']} < {objective['limit_ms']:g} ms",
    )
    traffic = TypingTraffic() if typing else PhotoTraffic.test_scenes()
    target = (
        "services.autocomplete.service:Autocomplete"
        if typing
        else "services.plate_reader.service:PlateReader"
    )
    with serve(target, env=env) as url:
        asyncio.run(open_loop(url, traffic, 1.0, 3.0, senders=editors))  # warm-up
        for label, factor in (("planned", 1.0), ("1.5x planned", 1.5)):
            rate = per_replica * factor
            statuses, latencies = asyncio.run(open_loop(url, traffic, rate, args.seconds, senders=editors))
            p = (
                statistics.quantiles(latencies, n=100)[objective["percentile"] - 1]
                if len(latencies) > 1
                else float("nan")
            )
            server_errors = sum(n for s, n in statuses.items() if s >= 500)
            held = p <= objective["limit_ms"] and statuses[0] == 0 and server_errors == 0
            table.add_row(
                label,
                f"{rate:.2f}",
                str(statuses[200]),
                str(statuses[429]),
                str(statuses[409]),
                str(server_errors),
                str(statuses[0]),
                f"{p:.0f}",
                "held" if held else "broken",
            )
    console.print(table)


if __name__ == "__main__":
    main()
