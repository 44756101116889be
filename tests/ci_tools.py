"""Tests that drive a tool `.ci/run` installs (TensorFlow's venv, Chromium, podman, PostgreSQL).

    if shutil.which("chromedriver") is None:
        missing_tool("apt-get install chromium chromium-driver")

On a laptop without the tool the test is skipped, with what to install. In CI (`CI=true`, as
GitHub Actions and most CI systems set it) the tool was installed, so its absence is a broken
set-up: the test fails, instead of a green run that tested less.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing_tool(reason: str) -> NoReturn:
    """Skip (a laptop) or fail (CI): a tool this test needs, and `.ci/run` installs, is absent."""
    if in_ci():
        pytest.fail(f"CI=true, but a tool .ci/run installs is missing: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def chromedriver() -> str:
    """Debian's chromedriver, which drives Debian's headless Chromium (nothing is downloaded)."""
    path = shutil.which("chromedriver")
    if path is None:
        missing_tool("apt-get install chromium chromium-driver")
    return path
