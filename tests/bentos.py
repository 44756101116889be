"""Run the `bentoml` CLI from the repo root for tests that build bentos."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.servers import REPO


def bentoml(*args: str, home: str | None = None, timeout: float = 900) -> str:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "1", **({"BENTOML_HOME": home} if home else {})}
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def build(bentofile: str) -> str:
    """Build the bento described by `bentofile` (a path from the repo root); return its tag."""
    return bentoml("build", "-f", bentofile, "-o", "tag", ".").strip().removeprefix("__tag__:")
