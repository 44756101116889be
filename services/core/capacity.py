"""How much one replica holds, and how many a target needs: `modelport capacity`.

    modelport capacity plate-reader --slo "p95<400ms" --target 50rps
    modelport capacity autocomplete --url http://127.0.0.1:3001 --editors 300

A sweep raises the number of requests in flight (1, 2, 4, ... each for `step_s`; every client
sends its next request as soon as its last is answered) until the objective breaks, then
halves the gap between the last step that held and the first that broke. The highest
concurrency that held is what one replica holds; its requests/s, less headroom for an
autoscaler to react, sizes the rest (`recommend`).

The load generator is aiohttp's client in this process. Measured on this project's 2-core
machine (shared, load ~10), 16 clients against a Starlette echo server for 10 s: aiohttp 400
requests/s at 0.39 ms of client CPU a request; Locust 2.47's FastHttpUser 444 requests/s at
0.56 ms, its HttpUser 193 at 1.6 ms; httpx 0.28's AsyncClient 57-67 requests/s at 4.2-4.8 ms.
httpx would take a visible share of two cores from the server it measures; Locust is as light,
but it monkey-patches the whole process for gevent, rounds latencies above 100 ms to 10 ms, and
runs open-ended users where the sweep wants a ladder of closed-loop steps with a decision
after each. The generator still shares the machine, so its CPU is reported in every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import aiohttp
import httpx
import psutil

HEADROOM = 0.8  # replicas run at 80% of the load they held: room for the HPA to add one in time
WARMUP_S = 2.0  # of each step, not counted: clients ramping up, batches filling
LEVELS = (1, 2, 4, 8, 16, 32, 64, 128)
REFINE_STEPS = 2  # halvings of the gap between the last step that held and the first that broke
MIN_ANSWERS = 20  # a p95 of fewer says little: a slow step runs on until it has this many ...
MAX_STEP_STRETCH = 4  # ... up to this many times its length
BUSY_PERCENT = 25  # CPU already in use before the sweep above which the report warns of contention


class CapacityError(Exception):
    """Input or a situation the user must fix; the message says how."""


class Traffic(Protocol):
    """One kind of request, as the real clients send it."""

    name: str

    async def call(self, session: aiohttp.ClientSession, worker: int) -> int:
        """Send one request as client `worker`; its HTTP status (the body read)."""


@dataclass(frozen=True)
class Objective:
    """`--slo "p95<400ms"` and the error-rate ceiling (errors and 429s over all answers)."""

    percentile: int
    limit_ms: float
    max_error_rate: float

    @classmethod
    def parse(cls, text: str, max_error_rate: float = 0.01) -> Objective:
        match = re.fullmatch(r"\s*p(50|90|95|99)\s*<\s*([0-9.]+)\s*(ms|s)\s*", text)
        if not match:
            raise CapacityError(f"--slo {text!r}: write it as p95<400ms (p50, p90, p95 or p99; ms or s)")
        limit = float(match.group(2)) * (1000 if match.group(3) == "s" else 1)
        if limit <= 0:
            raise CapacityError("--slo: the latency limit must be more than 0")
        if not 0 <= max_error_rate < 1:
            raise CapacityError("--max-error-rate is a share between 0 and 1 (0.01 = 1%)")
        return cls(int(match.group(1)), limit, max_error_rate)

    def __str__(self) -> str:
        return f"p{self.percentile} < {self.limit_ms:g} ms, errors <= {self.max_error_rate:.1%}"

    def broken_by(self, step: Step) -> str | None:
        """Why `step` breaks the objective, or None when it holds."""
        if step.answered == 0:
            return "no request was answered"
        if step.error_rate > self.max_error_rate:
            return f"{step.error_rate:.1%} errors or 429s (ceiling {self.max_error_rate:.1%})"
        latency = step.percentile(self.percentile)
        if latency > self.limit_ms:
            return f"p{self.percentile} {latency:.0f} ms over {self.limit_ms:g} ms"
        return None


@dataclass
class Step:
    concurrency: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # of 2xx answers
    ok: int = 0
    rejected: int = 0  # 429
    errors: int = 0  # other non-2xx, timeouts, dropped connections
    server_cpu_cores: float | None = None
    server_rss_mib: float | None = None
    client_cpu_cores: float = 0.0

    @property
    def answered(self) -> int:
        return self.ok + self.rejected + self.errors

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def error_rate(self) -> float:
        return (self.rejected + self.errors) / self.answered if self.answered else 1.0

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else math.inf
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]

    def summary(self) -> dict[str, Any]:
        def finite(v: float | None) -> float | None:
            return None if v is None or math.isinf(v) else round(v, 1)

        return {
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 1),
            "requests_per_s": round(self.rps, 2),
            "p50_ms": finite(self.percentile(50)),
            "p95_ms": finite(self.percentile(95)),
            "p99_ms": finite(self.percentile(99)),
            "ok": self.ok,
            "rejected_429": self.rejected,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "server_cpu_cores": finite(self.server_cpu_cores),
            "server_rss_mib": finite(self.server_rss_mib),
            "client_cpu_cores": round(self.client_cpu_cores, 2),
        }


class ServerUsage:
    """CPU and memory of the server's processes (the one listening, its children), sampled."""

    def __init__(self, pid: int | None) -> None:
        self.process = psutil.Process(pid) if pid else None

    def tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mib(self) -> float:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total / 2**20


def listening_pid(url: str) -> int | None:
    """The local process serving `url`, when it is on this machine; else None (no CPU/RSS)."""
    parsed = httpx.URL(url)
    if parsed.host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        pids = {
            conn.pid
            for conn in psutil.net_connections("tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid
        }
    except psutil.AccessDenied:
        return None
    # BentoML's arbiter binds the socket and its workers share it: take the one whose parent
    # does not listen too, so the workers are counted as its children.
    for pid in pids:
        try:
            if psutil.Process(pid).ppid() not in pids:
                return pid
        except psutil.NoSuchProcess:
            continue
    return None


def check_reachable(url: str) -> None:
    try:
        response = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5)
    except httpx.TransportError as exc:
        raise CapacityError(
            f"cannot reach {url} ({exc.__class__.__name__}: {exc}); is the service "
            "running there? Leave out --url to have capacity start it."
        ) from None
    if response.status_code != 200:
        raise CapacityError(
            f"{url}/readyz answered {response.status_code}: the service is not ready "
            "(models still loading?); try again when it answers 200"
        )


async def run_step(
    url: str,
    traffic: Traffic,
    concurrency: int,
    step_s: float,
    usage: ServerUsage,
    *,
    timeout_s: float = 30.0,
    tick: Callable[[float], None] = lambda _: None,
) -> Step:
    """`concurrency` clients, each sending its next request when its last is answered, for
    WARMUP_S + `step_s` (longer, up to MAX_STEP_STRETCH x, until MIN_ANSWERS came); only
    answers to requests sent after the warm-up count."""
    step = Step(concurrency)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(
        url, timeout=aiohttp.ClientTimeout(total=timeout_s), connector=aiohttp.TCPConnector(limit=concurrency)
    ) as session:
        start = loop.time()
        counting_from, end = start + WARMUP_S, start + WARMUP_S + step_s
        longest = start + WARMUP_S + MAX_STEP_STRETCH * step_s

        def running() -> bool:  # the step's time, and then until MIN_ANSWERS came (or `longest`)
            now = loop.time()
            return now < end or (step.answered < MIN_ANSWERS and now < longest)

        measured: dict[str, float] = {}

        async def client_loop(worker: int) -> None:
            while running():
                sent = loop.time()
                try:
                    status = await traffic.call(session, worker)
                except (TimeoutError, aiohttp.ClientError):  # refused, dropped, timed out
                    status = 0
                if sent < counting_from:
                    continue
                if 200 <= status < 300:
                    step.ok += 1
                    step.latencies_ms.append((loop.time() - sent) * 1000)
                elif status == 429:
                    step.rejected += 1
                else:
                    step.errors += 1

        async def sampler() -> None:
            rss, peak = 0.0, 0.0
            await asyncio.sleep(max(0.0, counting_from - loop.time()))
            measured.update(server=usage.cpu_seconds(), client=_own_cpu(), at=loop.time())
            while running():
                peak = max(peak, usage.rss_mib())
                tick(loop.time() - start)
                await asyncio.sleep(0.5)
            rss = max(peak, usage.rss_mib())
            measured.update(
                server_end=usage.cpu_seconds(), client_end=_own_cpu(), at_end=loop.time(), rss=rss
            )

        await asyncio.gather(sampler(), *(client_loop(w) for w in range(concurrency)))
        step.seconds = max(1e-9, loop.time() - counting_from)
    wall = measured["at_end"] - measured["at"]
    if usage.process is not None and wall > 0:
        step.server_cpu_cores = (measured["server_end"] - measured["server"]) / wall
        step.server_rss_mib = measured["rss"]
    step.client_cpu_cores = (measured["client_end"] - measured["client"]) / wall if wall > 0 else 0.0
    return step


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def next_level(steps: Sequence[Step], objective: Objective, max_concurrency: int) -> int | None:
    """The concurrency to try next, or None when the sweep is done."""
    held = [s.concurrency for s in steps if objective.broken_by(s) is None]
    broke = [s.concurrency for s in steps if objective.broken_by(s) is not None]
    if not broke:
        higher = [level for level in LEVELS if level > max(held, default=0) and level <= max_concurrency]
        return higher[0] if higher else None
    if not held:
        return None  # the first step broke it: nothing lower to try
    low, high = max(held), min((b for b in broke if b > max(held)), default=None)
    if high is None:
        return None
    refinements = sum(1 for s in steps if s.concurrency not in LEVELS)
    middle = (low + high) // 2
    if refinements >= REFINE_STEPS or middle in (low, high):
        return None
    return middle


@dataclass(frozen=True)
class Recommendation:
    max_concurrency: int  # one replica, within the objective
    requests_per_s: float  # what it served there
    latency_ms: float  # the objective's percentile there
    cpu_request: float | None  # cores, per pod
    memory_request_mib: int | None
    traffic_concurrency: int  # BentoML's traffic.concurrency
    hpa_cpu_utilization: int | None  # Kubernetes HPA averageUtilization, % of the CPU request
    target_rps: float | None = None
    replicas: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def recommend(steps: Sequence[Step], objective: Objective, target_rps: float | None) -> Recommendation:
    """Size replicas from the highest concurrency that held the objective.

    A replica is planned at HEADROOM of what it held: replicas = ceil(target / (held rps x 0.8)),
    traffic.concurrency = floor(held concurrency x 0.8); the CPU request is the server's cores at
    that step (to 0.1), the memory request its highest RSS in the sweep + 20% (to 64 MiB), and
    the HPA scales out at HEADROOM of the CPU it used there.
    """
    if target_rps is not None and not target_rps > 0:
        raise CapacityError("the target must be more than 0 (e.g. --target 50rps or --editors 300)")
    held = [s for s in steps if objective.broken_by(s) is None]
    if not held:
        raise CapacityError(no_concurrency_held(steps, objective))
    best = max(held, key=lambda s: s.concurrency)
    cpu = best.server_cpu_cores
    cpu_request = max(0.1, math.ceil(cpu * 10) / 10) if cpu is not None else None
    rss = [s.server_rss_mib for s in steps if s.server_rss_mib is not None]
    memory = int(math.ceil(max(rss) * 1.2 / 64) * 64) if rss else None
    hpa = None
    if cpu is not None and cpu_request:
        hpa = int(min(95, max(10, round(100 * cpu * HEADROOM / cpu_request))))
    replicas = None
    if target_rps is not None:
        replicas = max(1, math.ceil(target_rps / (best.rps * HEADROOM)))
    return Recommendation(
        best.concurrency,
        round(best.rps, 2),
        round(best.percentile(objective.percentile), 1),
        cpu_request,
        memory,
        max(1, math.floor(best.concurrency * HEADROOM)),
        hpa,
        target_rps,
        replicas,
    )


def no_concurrency_held(steps: Sequence[Step], objective: Objective) -> str:
    if not steps:
        return "no step ran"
    best = min(
        steps, key=lambda s: (s.error_rate > objective.max_error_rate, s.percentile(objective.percentile))
    )
    latency = best.percentile(objective.percentile)
    return (
        f"no concurrency met the objective ({objective}): the best was {best.concurrency} in flight, "
        f"p{objective.percentile} {latency:.0f} ms, {best.error_rate:.1%} errors; "
        f"relax --slo or make the service faster (fewer, smaller photos or tokens)"
    )


def parse_rate(text: str) -> float:
    """`50rps`, `50/s` or `50` -> 50.0."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(rps|/s|req/s)?\s*", text)
    if not match:
        raise CapacityError(f"--target {text!r}: write requests per second, e.g. 50rps")
    value = float(match.group(1))
    if value <= 0:
        raise CapacityError("--target must be more than 0 requests per second")
    return value


async def sweep(
    url: str,
    traffic: Traffic,
    objective: Objective,
    steps: list[Step],
    *,
    step_s: float,
    max_concurrency: int,
    usage: ServerUsage,
    budget_s: float = math.inf,
    progress: Any = None,
    on_step: Callable[[Step], None] = lambda _: None,
) -> bool:
    """Run steps into `steps` (the caller keeps what finished if this is interrupted); False
    when the time budget stopped it before the sweep was done (no step starts after it)."""
    deadline = asyncio.get_running_loop().time() + budget_s
    while (level := next_level(steps, objective, max_concurrency)) is not None:
        if steps and asyncio.get_running_loop().time() > deadline:
            return False
        task = progress.add_task(f"{level} in flight", total=WARMUP_S + step_s) if progress else None
        tick = (
            (lambda done, task=task: progress.update(task, completed=done)) if progress else (lambda _: None)
        )
        step = await run_step(url, traffic, level, step_s, usage, tick=tick)
        if progress:
            progress.update(task, completed=WARMUP_S + step_s)
        steps.append(step)
        on_step(step)
    return True
