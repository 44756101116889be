"""The OpenAPI descriptions tell the truth: schemathesis (`st run --checks all`) against a real
plate reader and a real autocompleter, 25 examples an operation and seed 1, finds 0 failures.

What `--checks all` covers: no 5xx, every status and body documented (the error schema of
services/core/api_errors.py), requests valid by the spec accepted and invalid ones refused,
content types and headers, and 405 with `Allow` listing every method of the path.

Per-operation expectations: tests/e2e/schemathesis.toml (why a 400 can be the right answer to
a request the schema cannot tell from a valid one: random bytes are not a photo). The review
routes are included, on a review item recorded by reading a photo that gets flagged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.scenes import plate_on_street

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Bounded: 25 examples an operation, one worker (2 cores; the server needs the other), a fixed
# seed and no example database, so a run is the same run each time.
BOUNDS = ["--max-examples", "25", "--seed", "1", "--generation-database", "none", "--workers", "1"]


def schemathesis(url: str, *extra: str, env: dict[str, str] | None = None) -> str:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{url}/v1/openapi.json",
        "--checks",
        "all",
        "--request-timeout",
        "60",
        *BOUNDS,
        *extra,
    ]
    # schemathesis.toml names REVIEW_ITEM_ID (the plate reader's review routes): always set it.
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "REVIEW_ITEM_ID": "", **(env or {})},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]
    assert "Tested:" in output, output[-4000:]
    return output


@pytest.mark.parametrize("tiny_server", ["llama.cpp"], indirect=True)  # one backend: same routes
def test_autocompleter_openapi_contract(tiny_server: str) -> None:
    output = schemathesis(tiny_server)
    # GET /models, POST /completions, POST /suggest, POST /suggest/feedback
    assert "Tested: 4" in output, output[-4000:]


def seeded_review_item(url: str) -> str:
    """The id of a review item recorded by reading a photo whose plate is flagged."""
    hard = plate_on_street(plate_asset="plate_krw301")  # read with one weak character: flagged
    read = httpx.post(
        f"{url}/v1/plate-reader",
        files={"upload": ("car.jpg", hard.jpeg)},
        data={"camera_id": "schemathesis"},
        timeout=60,
    )
    assert read.status_code == 200 and read.json()["results"][0]["review"] is True, read.text
    deadline = time.monotonic() + 20  # recorded after the answer
    while not (
        items := httpx.get(f"{url}/v1/reviews", params={"camera_id": "schemathesis"}, timeout=30).json()[
            "data"
        ]
    ):
        assert time.monotonic() < deadline, "the flagged reading was not recorded for review"
        time.sleep(0.2)
    return str(items[0]["id"])


def test_plate_reader_openapi_contract(plate_server: str) -> None:
    try:
        output = schemathesis(plate_server, env={"REVIEW_ITEM_ID": seeded_review_item(plate_server)})
    finally:  # the lists it made would match the shared server's later readings
        for listed in httpx.get(f"{plate_server}/v1/watchlists", timeout=30).json()["data"]:
            httpx.delete(f"{plate_server}/v1/watchlists/{listed['name']}", timeout=30)
    # POST /plate-reader, /plate-reader/, /plate-reader/annotated; GET /statistics, /statistics/;
    # GET /reviews, /reviews/{id}, /reviews/{id}/{which}; POST /reviews/{id};
    # GET, POST /watchlists; GET, PUT, PATCH, DELETE /watchlists/{name};
    # POST /watchlists/{name}/plates; DELETE /watchlists/{name}/plates/{plate};
    # POST /plate-reader/video, GET /plate-reader/video/crops/{event_id};
    # GET /plate-reader/streams, /plate-reader/streams/{camera_id}/events
    assert "Tested: 21" in output, output[-4000:]
