"""Where fine-tuning meets the model store: the base to start from, the version to add.

    base = base_model("smollm2-135m")                 # its serving version (imported if needed)
    tag = add_version("smollm2-135m", model_dir, kind="causal-lm", metadata={...})

A new version never replaces what a service serves: the version served before stays pinned
until `modelport models serve TAG` switches (and `modelport models rollback NAME` goes back).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import services.autocomplete.model_kinds  # registers causal-lm (the text jobs)
import services.plate_reader.model_kinds  # noqa: F401 - registers plate-detector (the detector job)
from services.core.model_store import (
    CATALOG,
    ModelNotFound,
    import_model,
    resolve,
    serving_tag,
    set_serving,
    versions,
)
from services.core.sources import LocalFile


def base_model(base: str) -> Any:
    """The store entry for `base` (name -> its serving version, or name:version); a catalogue
    model not yet in the store is imported first."""
    try:
        return resolve(base if ":" in base else serving_tag(base))
    except ModelNotFound:
        # Several processes (torchrun) importing at once would store duplicates.
        if base not in CATALOG or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise
        return resolve(import_model(base).tag)


def add_version(name: str, path: Path, *, kind: str, metadata: dict[str, Any]) -> str:
    """Store `path` as a new version of `name`; keep serving what was served. Returns the tag."""
    served = str(resolve(serving_tag(name)).tag) if versions(name) else None
    stored = import_model(name, LocalFile(str(path)), kind=kind, extra_metadata=metadata)
    if served is not None:
        set_serving(served)  # without a pin the newest version would be served at the next start
    return stored.tag


def hyperparameters(settings: Any) -> dict[str, Any]:
    """A settings dataclass as store metadata (paths as text)."""
    from dataclasses import asdict

    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items() if v is not None}
