"""The local multi-service stack without Docker: both services (and the example page) as
child processes, started together and stopped together.

    modelport serve                 # plate reader :3000, autocompleter :3001, web page :8080
    modelport serve --only plate-reader

Each service is exactly what `bentoml serve` runs on its own; this only starts them side by
side, waits until each /readyz answers, and stops all of them when one exits or on Ctrl-C.
Each gets its own Prometheus multiprocess folder, PROMETHEUS_MULTIPROC_DIR/<name> (default
$BENTOML_HOME/modelport-prometheus/<name>), so each /metrics shows its own series only
(prometheus_folder.py says why BentoML alone does not).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Member:
    name: str
    port: int
    command: tuple[str, ...]
    ready_path: str  # answers 200 once the member can take requests


def members(plate_port: int, autocomplete_port: int, web_port: int) -> dict[str, Member]:
    bentoml = (sys.executable, "-m", "services.core.prometheus_folder", "serve")  # `bentoml serve`
    plate = "services.plate_reader.service:PlateReader"
    return {
        "plate-reader": Member(
            "plate-reader", plate_port, (*bentoml, plate, "--port", str(plate_port)), "/readyz"
        ),
        "autocomplete": Member(
            "autocomplete",
            autocomplete_port,
            (*bentoml, "services.autocomplete.service:Autocomplete", "--port", str(autocomplete_port)),
            "/readyz",
        ),
        "web": Member(
            "web",
            web_port,
            (
                sys.executable,
                "examples/autocomplete_web/serve.py",
                "--port",
                str(web_port),
                "--service",
                f"http://127.0.0.1:{autocomplete_port}",
            ),
            "/",
        ),
    }


def prometheus_root(env: Mapping[str, str]) -> Path:
    """Where the members' Prometheus folders go: the user's PROMETHEUS_MULTIPROC_DIR, else beside
    BentoML's own folder in its home (not inside it: a `bentoml serve` elsewhere empties that)."""
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        return Path(env["PROMETHEUS_MULTIPROC_DIR"])
    return Path(env.get("BENTOML_HOME") or Path.home() / "bentoml") / "modelport-prometheus"


def run(selected: Sequence[Member], *, startup_timeout: float = 300.0) -> int:
    """Start `selected`, print their URLs once ready, and wait; returns the exit status."""
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "1"}
    metrics_root = prometheus_root(env)
    processes = {
        m.name: subprocess.Popen(
            m.command,
            cwd=REPO,
            start_new_session=True,
            env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_root / m.name)},
        )
        for m in selected
    }
    try:
        deadline = time.monotonic() + startup_timeout
        pending = {m.name: m for m in selected}
        while pending:
            for name, member in list(pending.items()):
                if processes[name].poll() is not None:
                    print(f"{name} exited with {processes[name].returncode} while starting", file=sys.stderr)
                    return 1
                try:
                    if httpx.get(f"http://127.0.0.1:{member.port}{member.ready_path}", timeout=2).is_success:
                        print(f"{name:<13} ready  http://127.0.0.1:{member.port}", flush=True)
                        del pending[name]
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                print(f"not ready after {startup_timeout:.0f}s: {', '.join(pending)}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        print("all ready; Ctrl-C stops everything", flush=True)
        while all(p.poll() is None for p in processes.values()):
            time.sleep(0.5)
        exited = [n for n, p in processes.items() if p.poll() is not None]
        print(f"{', '.join(exited)} exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
