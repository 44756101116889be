from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import serve

# Limits the plate-reader tests run with: small enough to trip with small test files.
PLATE_LIMITS = {
    "MODELPORT_PLATE_MAX_IMAGE_BYTES": str(2_000_000),
    "MODELPORT_PLATE_MAX_REQUEST_BYTES": str(6_000_000),
    "MODELPORT_PLATE_MAX_PIXELS": str(4_000_000),
    "MODELPORT_PLATE_MAX_IMAGES": "4",
}


@pytest.fixture(scope="session")
def plate_server(plate_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `bentoml serve services.plate_reader.service:PlateReader`, its base URL."""
    log = tmp_path_factory.mktemp("logs") / "plate_reader.log"
    with serve("services.plate_reader.service:PlateReader", env=PLATE_LIMITS, log_path=log) as url:
        yield url
