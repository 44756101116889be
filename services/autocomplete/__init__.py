"""Text autocompleter service: `bentoml serve services.autocomplete:Autocomplete --port 3001`."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so `services.autocomplete.engine` etc. import without defining the service
    # (which reads settings and picks its model from the store).
    if name == "Autocomplete":
        from services.autocomplete.service import Autocomplete

        return Autocomplete
    raise AttributeError(name)
