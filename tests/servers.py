"""Start a real `bentoml serve` process for a test and stop it afterwards.

with serve("services.plate_reader.service:PlateReader", env={"BENTOML_HOME": home}) as url:
    httpx.get(f"{url}/readyz")
with serve_process(...) as server:    # the same, with the `bentoml serve` process too
    server.process.send_signal(signal.SIGTERM)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
QUIET_ENV = {
    "BENTOML_DO_NOT_TRACK": "1",
    "YOLO_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    url: str, *, timeout: float, failed: Callable[[], str | None] = lambda: None, path: str = "/readyz"
) -> None:
    """Poll `url` + `path` until it answers 200; `failed()` returns why to give up early."""
    deadline = time.monotonic() + timeout
    while True:
        reason = failed()
        if reason is not None:
            raise RuntimeError(reason)
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout}s")
        time.sleep(0.5)


@contextlib.contextmanager
def serve(
    target: str,
    *,
    env: dict[str, str] | None = None,
    startup_timeout: float = 180.0,
    log_path: Path | None = None,
    cwd: Path = REPO,
) -> Iterator[str]:
    """Run `bentoml serve TARGET` on a free loopback port; yield its base URL once /readyz is 200.

    `cwd` is the repo root (where `services.*` targets import from); a bento tag runs from its
    own copy of the code, so serve it from elsewhere to prove that.
    """
    with serve_process(
        target, env=env, startup_timeout=startup_timeout, log_path=log_path, cwd=cwd
    ) as server:
        yield server.url


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen  # `bentoml serve`, the arbiter of its workers


def own_bentoml_home(shared: str) -> str:
    """A BENTOML_HOME for one server: the shared one's models, bentos and pins (symlinked), but
    its own Prometheus folder. `bentoml serve` empties that folder at start, which would wipe
    the metrics of a server already running on the shared home."""
    if not shared or not Path(shared).is_dir():
        return shared
    home = Path(tempfile.mkdtemp(prefix="modelport-server-home-"))
    for entry in Path(shared).iterdir():
        if entry.name != "prometheus_multiproc_dir":
            (home / entry.name).symlink_to(entry)
    return str(home)


@contextlib.contextmanager
def serve_process(
    target: str,
    *,
    env: dict[str, str] | None = None,
    startup_timeout: float = 180.0,
    log_path: Path | None = None,
    cwd: Path = REPO,
) -> Iterator[Server]:
    """`serve`, yielding the process too (e.g. to send it SIGTERM as Kubernetes does)."""
    port = free_port()
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, **QUIET_ENV, **(env or {})}
    shared_home = env.get("BENTOML_HOME") or str(Path.home() / "bentoml")
    env["BENTOML_HOME"] = own_bentoml_home(shared_home)
    process = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def exited() -> str | None:
            if process.poll() is None:
                return None
            tail = Path(log_path).read_text()[-3000:] if log_path else "(no log kept)"
            return f"bentoml serve {target} exited with {process.returncode}:\n{tail}"

        wait_ready(url, timeout=startup_timeout, failed=exited)
        yield Server(url, process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()
        if env["BENTOML_HOME"] != shared_home:  # only symlinks and this server's metrics
            shutil.rmtree(env["BENTOML_HOME"], ignore_errors=True)
