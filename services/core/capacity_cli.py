"""`modelport capacity plate-reader|autocomplete`: the command (services/core/capacity.py measures).

modelport capacity plate-reader                                  # starts the service itself
modelport capacity plate-reader --images photos/ --slo "p95<400ms" --target 50rps
modelport capacity autocomplete --url http://127.0.0.1:3001 --editors 300 --out capacity/
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import psutil
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from services.core.capacity import (
    BUSY_PERCENT,
    CapacityError,
    Objective,
    ServerUsage,
    Step,
    Traffic,
    check_reachable,
    listening_pid,
    no_concurrency_held,
    parse_rate,
    recommend,
    sweep,
)
from services.core.capacity_report import report, step_table, write
from services.core.capacity_traffic import PhotoTraffic, TypingTraffic
from services.core.console import console, fail

STARTUP_TIMEOUT_S = 300  # the autocompleter may convert its model to GGUF on a first start


@click.command("capacity")
@click.argument("service", type=click.Choice(["plate-reader", "autocomplete"]))
@click.option("--url", help="A running service (default: start one here, on a free port, and stop it after).")
@click.option(
    "--slo", default="p95<400ms", show_default=True, help="Latency objective: p50/p90/p95/p99 < N ms or s."
)
@click.option(
    "--max-error-rate",
    default=0.01,
    show_default=True,
    type=float,
    help="Share of errors and 429s a step may have and still hold.",
)
@click.option("--target", help="Requests per second to plan replicas for, e.g. 50rps.")
@click.option("--editors", type=int, help="Autocompleter: editors typing at once to plan replicas for.")
@click.option("--chars-per-second", default=5.0, show_default=True, help="How fast an editor types.")
@click.option(
    "--every", default=6, show_default=True, help="Autocompleter: characters typed between two requests."
)
@click.option(
    "--completions",
    "completions_tokens",
    type=int,
    help="Autocompleter: plain /v1/completions of this many tokens instead of /v1/suggest.",
)
@click.option(
    "--texts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Autocompleter: your editors' texts (paragraphs separated by a blank line).",
)
@click.option(
    "--images", type=click.Path(path_type=Path), help="Plate reader: a folder of your cameras' photos."
)
@click.option(
    "--step-seconds", default=15.0, show_default=True, help="Measured seconds per step (+2 s warm-up)."
)
@click.option(
    "--max-concurrency", default=64, show_default=True, help="Stop the sweep here even if it holds."
)
@click.option(
    "--max-minutes",
    default=4.0,
    show_default=True,
    help="No step starts after this (slow steps run on until they have 20 answers).",
)
@click.option(
    "--out",
    default=Path("capacity-report"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for report.json and report.html.",
)
def capacity(
    service: str,
    url: str | None,
    slo: str,
    max_error_rate: float,
    target: str | None,
    editors: int | None,
    chars_per_second: float,
    every: int,
    completions_tokens: int | None,
    texts: Path | None,
    images: Path | None,
    step_seconds: float,
    max_concurrency: int,
    max_minutes: float,
    out: Path,
) -> None:
    """Sweep requests in flight until the objective breaks; say what one replica holds and what a
    target (--target 50rps, --editors 300) needs: replicas, traffic.concurrency, HPA, requests."""
    try:
        objective = Objective.parse(slo, max_error_rate)
        target_rps, per_editor = _target(service, target, editors, chars_per_second, every)
        traffic = _traffic(service, images, texts, every, completions_tokens)
        if step_seconds <= 0 or max_concurrency < 1 or max_minutes <= 0:
            raise CapacityError("--step-seconds and --max-minutes must be > 0, --max-concurrency >= 1")
    except CapacityError as exc:
        raise click.UsageError(str(exc)) from None
    settings = {
        "step_seconds": step_seconds,
        "max_concurrency": max_concurrency,
        "max_minutes": max_minutes,
        "target_rps": target_rps,
        "editors": editors,
        "requests_per_editor_per_s": per_editor,
        "traffic": traffic.name,
    }
    steps: list[Step] = []
    with _service(service, url) as base:
        try:
            check_reachable(base)
        except CapacityError as exc:
            fail(exc)
        usage = ServerUsage(listening_pid(base))
        # Before any load: CPU others already use here. A busy machine measures its contention.
        settings["cpu_busy_before_percent"] = busy = psutil.cpu_percent(interval=1.0)
        settings["load_average_before"] = round(psutil.getloadavg()[0], 2)
        if busy > BUSY_PERCENT:
            console.print(
                f"[yellow]warning: {busy:.0f}% of this machine's CPU is in use before any load "
                f"(load average {settings['load_average_before']}): the figures will show that "
                "contention, not what the service does alone[/yellow]"
            )
        console.print(f"measuring {service} at {base}: objective {objective}, {step_seconds:g} s a step")
        stopped_by = None
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        try:
            with progress:
                finished = asyncio.run(
                    sweep(
                        base,
                        traffic,
                        objective,
                        steps,
                        step_s=step_seconds,
                        max_concurrency=max_concurrency,
                        usage=usage,
                        budget_s=max_minutes * 60,
                        progress=progress,
                        on_step=lambda s: progress.console.print(_step_line(s, objective)),
                    )
                )
            if not finished:
                stopped_by = f"the {max_minutes:g}-minute budget"
                console.print(
                    f"[yellow]the {max_minutes:g}-minute budget ran out before the objective broke: "
                    "the answer is a lower bound (raise --max-minutes)[/yellow]"
                )
        except KeyboardInterrupt:
            stopped_by = "Ctrl-C"
            console.print("[yellow]stopped: writing a partial report of the steps that finished[/yellow]")
    console.print(step_table(steps, objective))
    partial = stopped_by is not None
    try:
        rec = recommend(steps, objective, target_rps)
    except CapacityError as exc:
        if not partial:  # no concurrency held: say so with the best found; no report to misread
            fail(exc)
        rec = None
    note = f"partial: stopped by {stopped_by}" if partial else "complete"
    if rec is None:
        note += "; " + no_concurrency_held(steps, objective)
    body = report(
        service, base, objective, steps, rec, partial=partial, note=note, editors=editors, settings=settings
    )
    for line in body["answer"]:
        console.print(line)
    json_path, html_path = write(out, body)
    console.print(f"wrote {json_path} and {html_path}")


def _step_line(step: Step, objective: Objective) -> str:
    why = objective.broken_by(step)
    return (
        f"{step.concurrency:>4} in flight: {step.rps:6.1f} req/s, p50 {step.percentile(50):6.0f} ms, "
        f"p95 {step.percentile(95):6.0f} ms, {step.errors} errors, {step.rejected} 429s  "
        + ("[green]held[/green]" if why is None else f"[red]{why}[/red]")
    )


def _target(
    service: str, target: str | None, editors: int | None, chars_per_second: float, every: int
) -> tuple[float | None, float | None]:
    """(requests/s to plan for, requests/s of one editor)."""
    if target is not None and editors is not None:
        raise CapacityError("give --target or --editors, not both")
    if editors is not None:
        if service != "autocomplete":
            raise CapacityError("--editors is for the autocompleter; give the plate reader --target 50rps")
        if editors < 1:
            raise CapacityError("--editors must be at least 1")
        if chars_per_second <= 0:
            raise CapacityError("--chars-per-second must be more than 0")
        per_editor = chars_per_second / every  # one request every `every` characters typed
        return editors * per_editor, per_editor
    return (parse_rate(target) if target is not None else None), None


def _traffic(
    service: str, images: Path | None, texts: Path | None, every: int, completions_tokens: int | None
) -> Traffic:
    if service == "plate-reader":
        if texts or completions_tokens:
            raise CapacityError("--texts and --completions are for the autocompleter")
        return PhotoTraffic.from_folder(images) if images is not None else PhotoTraffic.test_scenes()
    if images is not None:
        raise CapacityError("--images is for the plate reader")
    if completions_tokens is not None and completions_tokens < 1:
        raise CapacityError("--completions must be at least 1 token")
    options = {"every": every, "completions_tokens": completions_tokens}
    return (
        TypingTraffic.from_file(texts, **options)
        if texts
        else TypingTraffic(every=every, completions_tokens=completions_tokens)
    )


@contextlib.contextmanager
def _service(service: str, url: str | None) -> Iterator[str]:
    """`url`, or a `bentoml serve` of SERVICE started here (the local stack's command) and
    stopped afterwards."""
    if url:
        yield url.rstrip("/")
        return
    from services.core.local_stack import REPO, members

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    member = members(port, port, port)[service]
    # Kept after the run (delete=False): where to look when the service would not start.
    with tempfile.NamedTemporaryFile(
        prefix=f"modelport-capacity-{service}-", suffix=".log", delete=False
    ) as log:
        console.print(
            f"starting {service} on port {port} (log: {log.name}; --url measures one already running) ..."
        )
        process = subprocess.Popen(
            member.command,
            cwd=REPO,
            env={**os.environ, "BENTOML_DO_NOT_TRACK": "1"},
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not _ready(base):
                if process.poll() is not None:
                    fail(f"{service} exited with {process.returncode} while starting; its log: {log.name}")
                if time.monotonic() > deadline:
                    fail(f"{service} not ready after {STARTUP_TIMEOUT_S} s; its log: {log.name}")
                time.sleep(0.5)
            yield base
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
