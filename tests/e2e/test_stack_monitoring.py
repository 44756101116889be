"""`modelport serve --monitoring`: a real Prometheus (Debian's) starts beside the plate reader,
loads deploy/monitoring/'s rules and scrapes the service as the job the rules group by."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.scenes import plate_on_street
from tests.servers import QUIET_ENV, REPO, free_port

pytestmark = pytest.mark.slow


def test_serve_with_monitoring_scrapes_the_plate_reader(
    plate_models: dict[str, Path], tmp_path: Path
) -> None:
    if shutil.which("prometheus") is None:  # .ci/run installs it: absent in CI is a broken set-up
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus not found: .ci/run installs Debian's `prometheus` package")
        pytest.skip("prometheus not installed (Debian: apt-get install prometheus)")
    plate_port, prometheus_port = free_port(), free_port()
    env = {**os.environ, **QUIET_ENV, "MODELPORT_DATA_DIR": str(tmp_path / "data")}
    stack = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.core.cli",
            "serve",
            "--only",
            "plate-reader",
            "--monitoring",
            "--plate-port",
            str(plate_port),
            "--prometheus-port",
            str(prometheus_port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 240
        while "all ready" not in "".join(lines):
            assert stack.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            lines.append(stack.stdout.readline())
        assert f"prometheus    ready  http://127.0.0.1:{prometheus_port}" in "".join(lines)
        prometheus = f"http://127.0.0.1:{prometheus_port}"
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert {g["name"] for g in groups} == {
            "modelport-serving",
            "modelport-plate-reader",
            "modelport-autocomplete",
        }
        httpx.post(
            f"http://127.0.0.1:{plate_port}/v1/plate-reader",
            files={"upload": plate_on_street().jpeg},
            data={"camera_id": "gate-1"},
            timeout=60,
        ).raise_for_status()
        query = 'modelport_plate_images_total{job="plate-reader", camera="gate-1"}'
        deadline = time.monotonic() + 60  # the next scrape (every 15 s)
        while True:
            result = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10).json()[
                "data"
            ]["result"]
            if result:
                break
            assert time.monotonic() < deadline, "Prometheus never scraped the plate reader's count"
            time.sleep(2)
        assert float(result[0]["value"][1]) == 1
        assert (tmp_path / "data" / "prometheus" / "prometheus.yml").exists()
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
