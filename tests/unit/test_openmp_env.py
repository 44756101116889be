"""Who sets OpenMP's wait policy: the autocompleter for itself, fine-tuning for itself, the
`modelport` CLI for nobody (its `serve` starts servers that inherit its environment)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.autocomplete.settings import OPENMP_SPINCOUNT, tune_openmp
from tests.servers import REPO

OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def test_importing_the_cli_leaves_openmp_alone() -> None:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    code = (
        "import os, services.core.cli; "
        "print([os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[None, None]"


def test_tune_openmp_sets_a_spin_count(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in OPENMP_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    tune_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == OPENMP_SPINCOUNT


@pytest.mark.parametrize("key", OPENMP_VARIABLES)
def test_tune_openmp_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    for other in OPENMP_VARIABLES:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(key, "PASSIVE" if key == "OMP_WAIT_POLICY" else "100")
    tune_openmp()
    assert [os.environ.get(k) for k in OPENMP_VARIABLES] == (
        ["PASSIVE", None] if key == "OMP_WAIT_POLICY" else [None, "100"]
    )
