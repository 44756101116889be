"""`modelport capacity`: the objective, the sweep's next step, the recommendation's arithmetic,
the report files, and the input errors (before any load is sent, and no report written)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.core.capacity import (
    CapacityError,
    Objective,
    Step,
    next_level,
    parse_rate,
    recommend,
)
from services.core.capacity_report import report, write
from services.core.capacity_traffic import TypingTraffic
from services.core.cli import main


def step(
    concurrency: int,
    rps: float,
    latency_ms: float,
    *,
    errors: int = 0,
    rejected: int = 0,
    cpu: float | None = 1.0,
    rss: float | None = 400.0,
) -> Step:
    """A finished step whose answers all took `latency_ms` (data, as run_step fills it)."""
    ok = round(rps * 10)
    return Step(
        concurrency,
        seconds=10.0,
        latencies_ms=[latency_ms] * ok,
        ok=ok,
        errors=errors,
        rejected=rejected,
        server_cpu_cores=cpu,
        server_rss_mib=rss,
    )


def test_objective_parsing() -> None:
    assert Objective.parse("p95<400ms") == Objective(95, 400.0, 0.01)
    assert Objective.parse(" p99 < 1.5s", 0.05) == Objective(99, 1500.0, 0.05)
    for bad in ("p95>400ms", "400ms", "p97<400ms", "p95<0ms", "p95<fast"):
        with pytest.raises(CapacityError, match="slo"):
            Objective.parse(bad)
    with pytest.raises(CapacityError, match="max-error-rate"):
        Objective.parse("p95<400ms", 1.5)


def test_a_step_breaks_the_objective_by_latency_or_errors() -> None:
    objective = Objective.parse("p95<400ms", 0.01)
    assert objective.broken_by(step(4, 10, 300)) is None
    assert "p95 500 ms over 400 ms" in objective.broken_by(step(4, 10, 500))
    # 429s count against the ceiling: a request turned away was not served.
    assert "errors or 429s" in objective.broken_by(step(4, 10, 300, rejected=5))
    assert objective.broken_by(Step(4, seconds=10)) == "no request was answered"


def test_the_sweep_doubles_then_halves_the_gap() -> None:
    objective = Objective.parse("p95<400ms")
    steps: list[Step] = []
    tried = []
    latency = {1: 100, 2: 120, 4: 200, 8: 350, 16: 900, 12: 500, 10: 380, 11: 420}
    while (level := next_level(steps, objective, 64)) is not None:
        tried.append(level)
        steps.append(step(level, level, latency[level]))
    assert tried == [1, 2, 4, 8, 16, 12, 10]  # two halvings after the first break
    assert recommend(steps, objective, None).max_concurrency == 10


def test_the_sweep_stops_at_max_concurrency_and_when_the_first_step_breaks() -> None:
    objective = Objective.parse("p95<400ms")
    assert next_level([step(1, 1, 100), step(2, 2, 100), step(4, 4, 100)], objective, 4) is None
    assert next_level([step(1, 1, 900)], objective, 64) is None


def test_recommendation_arithmetic() -> None:
    objective = Objective.parse("p95<400ms")
    steps = [
        step(4, 12.0, 200, cpu=1.2, rss=480),
        step(8, 20.0, 350, cpu=1.73, rss=500),
        step(16, 21.0, 800, cpu=1.9, rss=530),
    ]
    rec = recommend(steps, objective, 50.0)
    assert rec.max_concurrency == 8 and rec.requests_per_s == 20.0 and rec.latency_ms == 350.0
    assert rec.replicas == 4  # ceil(50 / (20 x 0.8)) = ceil(3.125)
    assert rec.traffic_concurrency == 6  # floor(8 x 0.8)
    assert rec.cpu_request == 1.8  # 1.73 cores, up to 0.1
    assert rec.memory_request_mib == 640  # 530 MiB peak x 1.2 = 636, up to a multiple of 64 MiB
    assert rec.hpa_cpu_utilization == 77  # 100 x 1.73 x 0.8 / 1.8
    assert recommend(steps, objective, 10.0).replicas == 1
    remote = recommend([step(8, 20.0, 350, cpu=None, rss=None)], objective, None)
    assert remote.cpu_request is None and remote.memory_request_mib is None and remote.replicas is None


def test_no_concurrency_meeting_the_objective_says_the_best_found() -> None:
    objective = Objective.parse("p95<100ms")
    with pytest.raises(CapacityError, match=r"best was 1 in flight, p95 250 ms"):
        recommend([step(1, 4, 250), step(2, 5, 420)], objective, 10.0)


def test_targets() -> None:
    assert parse_rate("50rps") == parse_rate("50") == parse_rate("50/s") == 50.0
    for bad in ("0", "0rps", "-3", "fast"):
        with pytest.raises(CapacityError):
            parse_rate(bad)
    with pytest.raises(CapacityError, match="more than 0"):
        recommend([step(1, 4, 100)], Objective.parse("p95<400ms"), 0.0)


def test_editors_type_on_through_their_texts() -> None:
    traffic = TypingTraffic(("abcdefghij", "KLMNOPQRST"), every=4)
    assert [traffic.text_so_far(0) for _ in range(4)] == ["abcd", "abcdefgh", "abcd", "abcdefgh"]
    assert traffic.text_so_far(1) == "KLMN"
    with pytest.raises(CapacityError, match="no text"):
        TypingTraffic(("  ",))


def test_report_files_are_whole_and_plot_the_curve(tmp_path: Path) -> None:
    objective = Objective.parse("p95<400ms")
    steps = [step(1, 5.0, 120), step(2, 9.0, 180), step(4, 10.0, 600)]
    body = report(
        "plate-reader",
        "http://127.0.0.1:3000",
        objective,
        steps,
        recommend(steps, objective, 50.0),
        partial=False,
        note="complete",
        editors=None,
        settings={},
    )
    json_path, html_path = write(tmp_path / "out", body)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json"]
    saved = json.loads(json_path.read_text())
    assert [s["held"] for s in saved["steps"]] == [True, True, False]
    assert saved["recommendation"]["replicas"] == 7  # ceil(50 / (9 x 0.8))
    assert any("holds 2 requests in flight" in line for line in saved["answer"])
    page = html_path.read_text()
    assert "<svg" in page and page.count("<polyline") == 4 and "objective p95 400 ms" in page
    assert "<script" not in page and "http" not in page.replace("http://127.0.0.1:3000", "").replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )  # self-contained: nothing fetched


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plate-reader", "--images", "EMPTY"], "no photos in it"),
        (["plate-reader", "--target", "0"], "more than 0"),
        (["plate-reader", "--target", "0rps"], "more than 0"),
        (["autocomplete", "--editors", "0"], "at least 1"),
        (["plate-reader", "--editors", "300"], "--editors is for the autocompleter"),
        (["plate-reader", "--slo", "p95 under 400"], "write it as p95<400ms"),
    ],
)
def test_input_errors_before_any_load(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "EMPTY" / "notes.txt").write_text("not a photo")
    args = [str(tmp_path / a) if a == "EMPTY" else a for a in args]
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["capacity", *args, "--url", "http://127.0.0.1:9", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_an_unreachable_url_is_said_plainly(tmp_path: Path) -> None:
    out = tmp_path / "report"
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(
        main, ["capacity", "plate-reader", "--url", url, "--images", str(tmp_path), "--out", str(out)]
    )
    # An empty --images folder is caught first; give it a photo so the URL is what fails.
    assert "no photos" in result.output
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff")
    result = CliRunner().invoke(
        main, ["capacity", "plate-reader", "--url", url, "--images", str(tmp_path), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert f"cannot reach {url}" in result.output and "Leave out --url" in result.output
    assert not out.exists()


def test_a_busy_machine_is_named_in_the_answer() -> None:
    objective = Objective.parse("p95<400ms")
    steps = [step(1, 5.0, 120)]
    rec = recommend(steps, objective, None)
    quiet = report(
        "plate-reader",
        "u",
        objective,
        steps,
        rec,
        partial=False,
        note="",
        editors=None,
        settings={"cpu_busy_before_percent": 5.0},
    )
    busy = report(
        "plate-reader",
        "u",
        objective,
        steps,
        rec,
        partial=False,
        note="",
        editors=None,
        settings={"cpu_busy_before_percent": 80.0},
    )
    assert not any("Warning" in line for line in quiet["answer"])
    assert any("80% of the machine's CPU was in use" in line for line in busy["answer"])


class FakeTraffic:
    """A fake service for the sweep's own logic: answers 200 after `seconds`, no HTTP."""

    name = "fake"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def call(self, session: object, worker: int) -> int:
        await asyncio.sleep(self.seconds)
        return 200


def test_a_slow_step_runs_on_until_it_has_enough_answers_and_the_budget_stops_the_sweep() -> None:
    from services.core.capacity import MIN_ANSWERS, ServerUsage, run_step, sweep

    usage = ServerUsage(None)
    # 0.04 s an answer, one client, a 0.5 s step: ~12 answers in its time, so it runs on to
    # MIN_ANSWERS (~0.8 s), well inside the 2 s stretch even when sleeps overshoot on a busy machine.
    step = asyncio.run(run_step("http://127.0.0.1:9", FakeTraffic(0.04), 1, 0.5, usage))
    assert step.ok == MIN_ANSWERS and 0.5 < step.seconds < 2.1
    steps: list[Step] = []
    finished = asyncio.run(
        sweep(
            "http://127.0.0.1:9",
            FakeTraffic(0.01),
            Objective.parse("p95<1s"),
            steps,
            step_s=0.2,
            max_concurrency=64,
            usage=usage,
            budget_s=0.0,
        )
    )
    assert finished is False and [s.concurrency for s in steps] == [1]  # one step, then out of time
