"""`modelport serve` starts both services and the example page together, and stops them
together on Ctrl-C; each service's /metrics shows its own series only, from its own folder under
the user's PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.autocomplete_fixtures import TINY_GPT2, import_tiny_gpt2
from tests.scenes import plate_on_street
from tests.servers import QUIET_ENV, REPO, free_port

pytestmark = pytest.mark.slow


def test_the_local_stack_serves_all_three_and_stops_together(
    plate_models: dict[str, Path], tmp_path: Path
) -> None:
    import_tiny_gpt2()
    ports = [free_port() for _ in range(3)]
    metrics_dir = tmp_path / "prometheus"
    env = {
        **os.environ,
        **QUIET_ENV,
        "MODELPORT_AUTOCOMPLETE_MODEL": TINY_GPT2,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    stack = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.core.cli",
            "serve",
            "--plate-port",
            str(ports[0]),
            "--autocomplete-port",
            str(ports[1]),
            "--web-port",
            str(ports[2]),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 240
        while "all ready" not in "".join(lines):
            assert stack.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            lines.append(stack.stdout.readline())
        plate, text, web = (f"http://127.0.0.1:{p}" for p in ports)
        scene = plate_on_street()
        read = httpx.post(f"{plate}/v1/plate-reader", files={"upload": scene.jpeg}, timeout=60)
        assert [p["plate"] for p in read.json()["results"]] == [scene.plate]
        completion = httpx.post(
            f"{text}/v1/completions", timeout=60, json={"prompt": "Hi", "max_tokens": 2, "temperature": 0}
        )
        assert completion.json()["usage"]["completion_tokens"] == 2
        page = httpx.get(web, timeout=10)
        assert page.status_code == 200 and "textarea" in page.text
        # The page's own origin forwards /v1/* to the autocompleter.
        assert httpx.post(f"{web}/v1/suggest", json={"text": "Hello"}, timeout=60).status_code == 200
        # Both services started from one BentoML home: each /metrics has its own series only.
        plate_metrics = httpx.get(f"{plate}/metrics", timeout=30).text
        text_metrics = httpx.get(f"{text}/metrics", timeout=30).text
        assert 'runner_name="plate-reader"' in plate_metrics and "modelport_plates_read" in plate_metrics
        assert 'runner_name="autocomplete"' not in plate_metrics
        assert "modelport_autocomplete" not in plate_metrics
        assert 'runner_name="autocomplete"' in text_metrics
        assert "modelport_autocomplete_tokens" in text_metrics
        assert 'runner_name="plate-reader"' not in text_metrics and "modelport_plates" not in text_metrics
        for name in ("plate-reader", "autocomplete"):  # the user's PROMETHEUS_MULTIPROC_DIR, one folder each
            assert list((metrics_dir / name).glob("*.db")), name
    finally:
        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=60) == 0
    for port in ports:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
