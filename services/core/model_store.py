"""The model catalogue and BentoML model-store imports.

Every model a service loads is a versioned entry in BentoML's model store, with its source
and sha256 in the metadata. Importing is explicit and idempotent:

    modelport models import plate-detector          # the catalogue's default source
    modelport models import plate-detector --from-path runs/best.pt

    >>> import services.plate_reader.model_kinds  # registers plate-detector, plate-ocr
    >>> from services.core.model_store import import_model
    >>> import_model("plate-ocr").tag  # doctest: +SKIP
    Tag(name='plate-ocr', version='...')

Services name models by tag (`plate-detector:latest` unless configured) and never fetch.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml

from services.core.sources import Source, SourceError, sha256_of

# How a fetched file becomes the files a service loads from a store entry's directory;
# returns metadata to record (e.g. class names, context length).
Preparer = Callable[[Path, Path], dict[str, Any]]


@dataclass(frozen=True)
class ModelKind:
    """A kind of model entry (plate-detector, causal-lm, ...), registered by the service that
    serves it: the store itself knows no service."""

    name: str
    prepare: Preparer
    # How this kind's entries are prepared, numbered: bump it when `prepare` starts putting
    # something new into its entries, so that importing the same file again prepares a new
    # version instead of finding the old one.
    version: int = 1


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the model-store name services ask for
    kind: str  # a registered ModelKind's name
    source: Source  # where the default comes from
    licence: str
    description: str


KINDS: dict[str, ModelKind] = {}
# The named models `modelport models import NAME` knows, each arriving from a pinned source
# (the defaults from packages on the registry, so they import without internet).
CATALOG: dict[str, ModelSpec] = {}
# What `modelport models import --defaults` imports: every service's defaults.
DEFAULTS: list[str] = []


def register(kind: ModelKind, *models: ModelSpec, defaults: tuple[str, ...] = ()) -> None:
    """Make `kind` importable, with its catalogue `models`; `defaults` names those every setup
    imports. Each service calls this from its own model_kinds.py."""
    KINDS[kind.name] = kind
    for spec in models:
        CATALOG[spec.name] = spec
    DEFAULTS.extend(name for name in defaults if name not in DEFAULTS)


class ModelNotFound(LookupError):
    """A service asked for a model the store does not have; the message says how to import it."""


def prepare_copy(filename: str) -> Preparer:
    """A preparer that stores the fetched file as `filename` (a directory as it is)."""

    def prepare(fetched: Path, model_dir: Path) -> dict[str, Any]:
        if fetched.is_dir():
            shutil.copytree(fetched, model_dir, dirs_exist_ok=True)
        else:
            shutil.copyfile(fetched, model_dir / filename)
        return {}

    return prepare


def versions(name: str | None = None) -> list[bentoml.Model]:
    """Stored versions (of `name`, or of every model), oldest first."""
    try:
        found = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:  # BentoML raises rather than return [] for a new name
        return []
    return sorted(found, key=lambda m: (m.tag.name, m.info.creation_time))


def find_by_checksum(name: str, source_sha256: str, kind: str) -> bentoml.Model | None:
    """The stored version of `name` made from this file by today's preparer for `kind`."""
    for model in versions(name):
        metadata = model.info.metadata
        prepared_by = metadata.get("prepared_by", 1)
        if (
            metadata.get("source_sha256") == source_sha256
            and isinstance(prepared_by, int)
            and prepared_by >= KINDS[kind].version
        ):
            return model
    return None


@dataclass(frozen=True)
class ImportResult:
    tag: str
    created: bool  # False: the same file was already in the store (idempotent re-import)
    path: Path


def import_model(
    name: str,
    source: Source | None = None,
    *,
    kind: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> ImportResult:
    """Fetch `source` (the catalogue's default when None), check it, and store it as `name`."""
    spec = CATALOG.get(name)
    if spec is not None:
        source, kind = source or spec.source, kind or spec.kind
    elif source is None or kind is None:
        raise ValueError(
            f"unknown model {name!r}: pick one of {sorted(CATALOG)}, or give both a source and a kind"
        )
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: pick one of {sorted(KINDS)}")
    with tempfile.TemporaryDirectory(prefix="modelport-import-") as tmp:
        fetched = source.fetch(Path(tmp))
        checksum = sha256_of(fetched)
        existing = find_by_checksum(name, checksum, kind)
        if existing is not None:
            return ImportResult(str(existing.tag), False, Path(existing.path))
        metadata: dict[str, Any] = {
            "kind": kind,
            "source": source.describe(),
            "source_sha256": checksum,
            "prepared_by": KINDS[kind].version,
            "licence": spec.licence if spec else "see source",
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **(extra_metadata or {}),
        }
        with bentoml.models.create(name, metadata=metadata, labels={"kind": kind}) as model:
            metadata.update(KINDS[kind].prepare(fetched, Path(model.path)))
            model.info.metadata.update(metadata)
        stored = bentoml.models.get(model.tag)  # `model.path` was the staging dir, now moved
        return ImportResult(str(stored.tag), True, Path(stored.path))


def _serving_file() -> Path:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get()) / "modelport-serving.json"


def _serving_pointers() -> dict[str, str]:
    path = _serving_file()
    return json.loads(path.read_text()) if path.is_file() else {}


def serving_tag(name: str) -> str:
    """The tag a service loads for `name`: the version set with `set_serving`, else the newest.

    A built bento carries one version and no pointer file, so there "latest" is that version.
    """
    version = _serving_pointers().get(name)
    if version and any(m.tag.version == version for m in versions(name)):
        return f"{name}:{version}"
    return f"{name}:latest"


def set_serving(tag: str) -> str:
    """Make `tag` the version services load for its name (takes effect at their next start)."""
    model = resolve(tag)
    if model.tag.version is None:  # a stored model always has one; bentoml's Tag types it optional
        raise ModelNotFound(f"{tag!r} resolved to {model.tag}, which has no version")
    pointers = _serving_pointers()
    pointers[model.tag.name] = model.tag.version
    _serving_file().write_text(json.dumps(pointers, indent=2, sort_keys=True))
    return str(model.tag)


def rollback(name: str) -> str:
    """Serve the version created before the one served now; returns the new serving tag."""
    history = versions(name)
    current = resolve(serving_tag(name))
    older = [m for m in history if m.info.creation_time < current.info.creation_time]
    if not older:
        raise ValueError(f"{current.tag} is the oldest version of {name}: nothing to roll back to")
    return set_serving(str(older[-1].tag))


def tuned_from(tag: str) -> str | None:
    """The newest stored version of `tag`'s name fine-tuned from it (its metadata's base_model,
    as `modelport finetune` writes it), or None (also when `tag` itself is not stored)."""
    try:
        base = str(resolve(tag).tag)
    except ModelNotFound:
        return None
    tuned = [m for m in versions(base.split(":")[0]) if m.info.metadata.get("base_model") == base]
    return str(tuned[-1].tag) if tuned else None


def resolve(tag: str) -> bentoml.Model:
    """The stored model for `tag`, or ModelNotFound saying which command imports it."""
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        name = tag.split(":", 1)[0]
        hint = (
            f"modelport models import {name}"
            if name in CATALOG
            else f"modelport models import {name} --from-path PATH --kind KIND"
        )
        raise ModelNotFound(
            f"model {tag!r} is not in the BentoML model store "
            f"(`modelport models list` shows what is). Import it: {hint}"
        ) from None


__all__ = [
    "CATALOG",
    "DEFAULTS",
    "KINDS",
    "ImportResult",
    "ModelKind",
    "ModelNotFound",
    "ModelSpec",
    "SourceError",
    "import_model",
    "register",
    "resolve",
    "rollback",
    "serving_tag",
    "set_serving",
    "tuned_from",
    "versions",
]
