"""Shared test set-up: an isolated BentoML model store, offline flags, the network marker.

The store lives in a fresh temporary BENTOML_HOME for each run, so the tests exercise the
real import path (`services.core.model_store.import_model`) instead of whatever a developer has.
Downloaded packages are cached in ~/.cache/modelport, so re-runs do not download again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.autocomplete_fixtures"]  # the tiny-GPT-2 server, shared by modules

_HOME = Path(tempfile.mkdtemp(prefix="modelport-test-bentoml-"))


def pytest_configure(config: pytest.Config) -> None:
    # Before anything imports bentoml: it reads BENTOML_HOME once.
    os.environ["BENTOML_HOME"] = os.environ.get("MODELPORT_TEST_BENTOML_HOME", str(_HOME))
    # modelport's own data (review queue, call counts): never the developer's.
    os.environ["MODELPORT_DATA_DIR"] = str(_HOME / "data")
    for key, value in {
        "BENTOML_DO_NOT_TRACK": "1",
        "YOLO_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(_HOME / "ultralytics"),
    }.items():
        os.environ.setdefault(key, value)
    # The services' model kinds, registered with the store as the modelport CLI does.
    from services.core.cli import register_model_kinds

    register_model_kinds()


def pytest_unconfigure(config: pytest.Config) -> None:
    # The store holds every model and bento the run made (~700 MB): gone with the run.
    shutil.rmtree(_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MODELPORT_NETWORK_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs the internet: set MODELPORT_NETWORK_TESTS=1 to run")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def plate_models() -> dict[str, Path]:
    """The plate reader's default models, imported into the test store; their file paths."""
    from services.core.model_store import import_model

    paths = {
        name: import_model(name).path / "model.onnx"
        for name in ("plate-detector", "plate-ocr", "plate-text-detector")
    }
    return {**paths, "plate-ocr-tail": import_model("plate-ocr-tail").path / "tail.onnx"}
