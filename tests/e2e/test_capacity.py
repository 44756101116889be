"""`modelport capacity plate-reader` against a real plate reader (`bentoml serve`, real models,
the test scenes as traffic): a tiny sweep and its report, an objective nothing meets, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO

pytestmark = pytest.mark.slow


def capacity(url: str, out: Path, *options: str, service: str = "plate-reader") -> list[str]:
    return [
        sys.executable,
        "-m",
        "services.core.cli",
        "capacity",
        service,
        "--url",
        url,
        "--out",
        str(out),
        *options,
    ]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_a_tiny_sweep_answers_and_writes_the_report(plate_server: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run(
        capacity(
            plate_server,
            out,
            "--step-seconds",
            "3",
            "--max-concurrency",
            "2",
            "--slo",
            "p95<20s",
            "--target",
            "5rps",
        )
    )
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads((out / "report.json").read_text())
    assert [s["concurrency"] for s in body["steps"]] == [1, 2]
    assert all(s["ok"] > 0 and s["errors"] == 0 and s["held"] for s in body["steps"])
    assert all(s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] for s in body["steps"])
    rec = body["recommendation"]
    assert rec["max_concurrency"] == 2 and rec["replicas"] >= 1 and rec["target_rps"] == 5.0
    # The server is on this machine: its CPU and memory were measured, and size the requests.
    assert rec["cpu_request"] >= 0.1 and rec["memory_request_mib"] >= 128
    assert body["partial"] is False and body["machine"]["cores"] >= 1
    assert "<svg" in (out / "report.html").read_text()
    assert "holds 2 requests in flight" in result.stdout and "replica(s)" in result.stdout


def test_an_objective_no_concurrency_meets_says_the_best_and_writes_nothing(
    plate_server: str, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = run(capacity(plate_server, out, "--step-seconds", "2", "--slo", "p95<1ms"))
    assert result.returncode == 1
    assert "no concurrency met the objective" in result.stderr and "best was 1 in flight" in result.stderr
    assert not out.exists()


def test_ctrl_c_writes_a_partial_report(plate_server: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    process = subprocess.Popen(
        capacity(plate_server, out, "--step-seconds", "3", "--slo", "p95<20s"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As from a terminal: a suite started in the background (`cmd &` without job control)
        # has SIGINT ignored, which its children inherit, and Python then never sees Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # the first step's line: one step done, the next running
        seen.append(line)
        if "in flight:" in line:
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(seen) + rest
    body = json.loads((out / "report.json").read_text())
    assert body["partial"] is True and len(body["steps"]) >= 1
    assert "partial" in rest


@pytest.mark.parametrize("tiny_server", ["llama.cpp"], indirect=True)
def test_editors_typing_against_a_real_autocompleter(tiny_server: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run(
        capacity(
            tiny_server,
            out,
            "--step-seconds",
            "2",
            "--max-concurrency",
            "2",
            "--slo",
            "p95<20s",
            "--editors",
            "30",
            service="autocomplete",
        )
    )
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads((out / "report.json").read_text())
    assert [s["concurrency"] for s in body["steps"]] == [1, 2]
    assert all(s["ok"] >= 20 and s["errors"] == 0 for s in body["steps"])  # /v1/suggest answered
    rec = body["recommendation"]
    assert rec["target_rps"] == pytest.approx(30 * 5 / 6) and rec["replicas"] >= 1
    assert "30 editors (25.0 requests/s)" in result.stdout
