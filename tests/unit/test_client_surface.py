"""The client's public surface: sorted __all__, every name importable, no torch needed."""

from __future__ import annotations

import subprocess
import sys

import modelport_client


def test_all_is_sorted_and_complete() -> None:
    assert modelport_client.__all__ == sorted(modelport_client.__all__)
    for name in modelport_client.__all__:
        assert hasattr(modelport_client, name), name


def test_importing_the_client_does_not_import_torch_or_bentoml() -> None:
    code = "import sys, modelport_client; print(sorted({'torch','bentoml','numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_timeout_is_finite() -> None:
    client = modelport_client.Client("http://127.0.0.1:9")
    try:
        assert 0 < client._http.timeout.read <= 60
    finally:
        client.close()
