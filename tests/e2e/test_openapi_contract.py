"""The OpenAPI descriptions tell the truth: schemathesis (`st run --checks all`) against a real
plate reader and a real autocompleter, with bounded examples and a fixed seed, finds 0 failures.

What `--checks all` covers: no 5xx, every status and body documented (the error schema of
services/core/api_errors.py), requests valid by the spec accepted and invalid ones refused,
content types and headers, and 405 with `Allow` for an undeclared method.

Per-operation expectations: tests/e2e/schemathesis.toml (why a 400 can be the right answer to
a request the schema cannot tell from a valid one: random bytes are not a photo).

Excluded: the review routes (`/reviews...`): they need review items recorded by real reads of
plates and a database in a known state; tests/e2e/test_review_queue.py exercises them. Their
responses are documented all the same (400, 401, 403, 404, 429, 500, 503, 504).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Bounded: 10 examples an operation, one worker (2 cores; the server needs the other), a fixed
# seed and no example database, so a run is the same run each time.
BOUNDS = ["--max-examples", "10", "--seed", "1", "--generation-database", "none", "--workers", "1"]


def schemathesis(url: str, *extra: str) -> str:
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
               "run", f"{url}/v1/openapi.json", "--checks", "all", "--request-timeout", "60",
               *BOUNDS, *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=480)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]
    assert "Tested:" in output, output[-4000:]
    return output


@pytest.mark.parametrize("tiny_server", ["llama.cpp"], indirect=True)  # one backend: same routes
def test_autocompleter_openapi_contract(tiny_server: str) -> None:
    output = schemathesis(tiny_server)
    assert "Tested: 3" in output, output[-4000:]  # GET /models, POST /completions, POST /suggest


# Defined after the autocompleter's test on purpose: a `bentoml serve` started later with the same
# BENTOML_HOME empties the Prometheus folder of one already running, and the plate reader's
# tests read its /metrics, so its server must start last (as in the suite's file order).
def test_plate_reader_openapi_contract(plate_server: str) -> None:
    output = schemathesis(plate_server, "--exclude-path-regex", "^/reviews")
    # POST /plate-reader, /plate-reader/, /plate-reader/annotated; GET /statistics, /statistics/
    assert "Tested: 5" in output, output[-4000:]
