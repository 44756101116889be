"""Licence-plate reader service: `bentoml serve services.plate_reader:PlateReader`."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so `services.plate_reader.export` etc. import without defining the service
    # (which reads settings and declares its models).
    if name == "PlateReader":
        from services.plate_reader.service import PlateReader

        return PlateReader
    raise AttributeError(name)
