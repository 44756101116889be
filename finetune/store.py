"""Where fine-tuning meets the model store: the base to start from, the version to add.

    base = base_model("smollm2-135m")                 # its serving version (imported if needed)
    tag = add_version("smollm2-135m", model_dir, kind="causal-lm", metadata={...})
    with new_version("smollm2-135m", model_dir, kind="causal-lm", metadata={...}) as entry:
        entry.info.metadata["metrics"]["after"] = measure(entry).savings   # the entry as stored

A new version never replaces what a service serves: the version served before stays pinned
until `modelport models serve TAG` switches (and `modelport models rollback NAME` goes back).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import services.autocomplete.model_kinds  # registers causal-lm (the text jobs)
import services.plate_reader.model_kinds  # noqa: F401 - registers plate-detector (the detector job)
from services.core.model_store import (
    CATALOG,
    ImportResult,
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
    return _store(name, path, kind=kind, metadata=metadata).tag


def _store(name: str, path: Path, *, kind: str, metadata: dict[str, Any]) -> ImportResult:
    served = str(resolve(serving_tag(name)).tag) if versions(name) else None
    stored = import_model(name, LocalFile(str(path)), kind=kind, extra_metadata=_without_none(metadata))
    if served is not None:
        set_serving(served)  # without a pin the newest version would be served at the next start
    return stored


@contextmanager
def new_version(name: str, path: Path, *, kind: str, metadata: dict[str, Any]) -> Iterator[Any]:
    """`add_version`, then the stored entry, to measure as a service runs it (the store's import
    writes what it runs: a GGUF, a LoRA adapter's GGUF); what the block adds to its metadata is
    recorded when it ends. If the block fails, the version is deleted: nothing half-stored. The
    same files stored before (the same data and seed) are that version: the block measures it,
    and a failure leaves it."""
    import bentoml

    stored = _store(name, path, kind=kind, metadata=metadata)
    entry = resolve(stored.tag)
    try:
        yield entry
        entry.flush()  # its model.yaml, with what the block added
    except BaseException:
        if stored.created:
            bentoml.models.delete(stored.tag)
        raise


def _without_none(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with every None entry left out, at any depth: BentoML's store refuses None
    (a figure a run could not make, such as the OCR's tail_max_abs_diff when no tail was cut, had
    a --train-backbone run train and then fail to store)."""
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in metadata.items()
        if value is not None
    }


def hyperparameters(settings: Any) -> dict[str, Any]:
    """A settings dataclass as store metadata (paths as text; unset ones, None, are left out where
    every version is stored: _store)."""
    from dataclasses import asdict

    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
