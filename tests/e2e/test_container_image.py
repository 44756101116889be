"""Build the plate reader's container image with podman and serve a request from it.

Runs where podman and debootstrap are installed; elsewhere it is skipped with the reason, but
in CI (CI=true: .ci/run installs them) their absence fails it. No registry is needed: the base
image is made from Debian packages (deploy/container/offline-base-image.sh) and BentoML's
generated Dockerfile is used as is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.bentos import bentoml, build
from tests.ci_tools import missing_tool
from tests.scenes import plate_on_street
from tests.servers import REPO, free_port, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.container]
CONF = {"CONTAINERS_CONF": str(REPO / "deploy" / "container" / "containers.conf")}


def podman(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(
        ["podman", *args], env={**os.environ, **CONF}, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def base_image() -> None:
    missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        missing_tool(f"needs root with podman and debootstrap (missing: {missing or 'root'})")
    uv = Path(sys.executable).with_name("uv")
    subprocess.run(
        ["bash", str(REPO / "deploy" / "container" / "offline-base-image.sh")],
        check=True,
        env={**os.environ, **CONF, "UV": str(uv)},
        timeout=900,
    )


def test_plate_reader_image_builds_and_serves(base_image: None, plate_models: dict[str, Path]) -> None:
    tag = build("deploy/plate_reader/bentofile.yaml")
    image = f"modelport/plate-reader:{tag.split(':')[1]}"
    env = {**os.environ, **CONF}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bentoml",
            "containerize",
            tag,
            "--backend",
            "podman",
            "--opt",
            "pull-never",
            "--opt",
            "network=host",
            "-t",
            image,
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=1200,
    )
    size_mb = json.loads(podman("image", "inspect", image))[0]["Size"] / 2**20
    print(f"\n{image}: {size_mb:.0f} MB")
    assert "torch" not in podman(
        "run",
        "--rm",
        "--entrypoint",
        "/app/.venv/bin/python",
        image,
        "-c",
        "import sys, importlib.util as u; print(u.find_spec('torch'))",
    ).replace("None", "")
    port = free_port()
    container = podman("run", "-d", image, "--port", str(port)).strip()
    try:

        def stopped() -> str | None:
            status = podman("inspect", "-f", "{{.State.Status}}", container).strip()
            return (
                f"container {status}:\n{podman('logs', container)}" if status in ("exited", "dead") else None
            )

        wait_ready(f"http://127.0.0.1:{port}", timeout=120, failed=stopped)
        scene = plate_on_street()
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/plate-reader", files={"upload": scene.jpeg}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert [p["plate"] for p in response.json()["results"]] == [scene.plate]
    finally:
        podman("rm", "-f", container)
        podman("rmi", "-f", image)  # 1.2 GB per run: left behind, re-runs fill the disk
        bentoml("delete", "-y", tag)
