"""User versions: LoRA adapters of the served base model, stored as model-store entries of kind
`causal-lm-lora`, and which one a request gets.

    modelport models import alice-notes --from-path runs/.../adapter --kind causal-lm-lora

Two kinds of entry are user versions: a `causal-lm-lora` entry (peft's adapter_config.json and
adapter_model.safetensors), and a `causal-lm` entry made by `modelport finetune text --lora`
(the merged model, with the adapter in its `adapter/` folder and `adapter.base_model` in its
metadata). Either gets `adapter.gguf` beside the adapter at import (lora_export.py), kept only
when llama.cpp's logits with it match torch+peft's. The base it fits is recorded as the exact
base tag it was trained on (a server serves a version only on that base); `owner` in the
metadata is the API key name that may use it (none: public, every key may). Beside the adapter
a version may keep `phrases.txt`, its phrase memory (phrase_memory.py): `finetune text --lora`
writes the text it trained on there, and an imported adapter folder's is copied.

Base plus adapter, not merged: a version costs ~10 MB in memory (SmolLM2-135M, rank 16,
float16) instead of a second ~145 MB model, and twenty fit beside one base within 2 GiB
(tests/benchmarks/bench_user_versions.py). Its price is one forward pass per version in a step.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml

from services.autocomplete.causal_lm import GGUF_NAME
from services.autocomplete.lora_export import (
    ADAPTER_CONFIG,
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    LORA_GGUF_NAME,
    prepare_adapter,
)
from services.autocomplete.phrase_memory import PHRASES_NAME, PhraseMemory
from services.core.api_errors import ApiError

LORA_KIND = "causal-lm-lora"


def prepare_lora(fetched: Path, model_dir: Path) -> dict[str, Any]:
    """The causal-lm-lora kind's preparer: peft's adapter directory, with its GGUF."""
    if not fetched.is_dir():
        raise ValueError(
            f"{fetched.name}: a LoRA version is a directory ({ADAPTER_CONFIG}, {ADAPTER_WEIGHTS})"
        )
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, PHRASES_NAME):
        if (fetched / name).is_file():
            shutil.copyfile(fetched / name, model_dir / name)
    return {"format": "lora", **prepare_adapter(model_dir, GGUF_NAME)}


@dataclass(frozen=True)
class Caller:
    """Who asks: the API key's owner name (None: the API is open) and default model."""

    owner: str | None = None
    default_model: str | None = None


@dataclass(frozen=True)
class Picked:
    """The model a request runs: the base (entry None) or a user version."""

    name: str  # as answered in `model`
    tag: str
    entry: bentoml.Model | None = None

    @property
    def adapter(self) -> Path | None:
        return None if self.entry is None else adapter_of(self.entry)[0]


def adapter_of(entry: bentoml.Model) -> tuple[Path, str | None] | tuple[None, None]:
    """A user version's adapter GGUF and the base tag it fits; (None, None): not a version."""
    metadata, kind = entry.info.metadata, entry.info.labels.get("kind")
    if kind == LORA_KIND:
        base = metadata.get("base_model")
        return Path(entry.path) / LORA_GGUF_NAME, None if base is None else str(base)
    adapter = metadata.get("adapter")
    if kind == "causal-lm" and isinstance(adapter, dict):  # finetune text --lora's
        folder = Path(entry.path) / str(adapter.get("path", ADAPTER_DIR))
        base = adapter.get("base_model")
        return folder / LORA_GGUF_NAME, None if base is None else str(base)
    return None, None


def phrases_of(entry: bentoml.Model) -> PhraseMemory | None:
    """A user version's phrase memory (None: not a version, or it has none)."""
    adapter = adapter_of(entry)[0]
    return None if adapter is None else PhraseMemory.load(adapter.parent)


def picks_base(model: str | None, caller: Caller, base: bentoml.Model) -> bool:
    """Does `model` (else the key's default) name the base? Then `pick` looks nothing up."""
    wanted = model or caller.default_model
    return wanted is None or wanted in (base.tag.name, str(base.tag))


def pick(model: str | None, caller: Caller, base: bentoml.Model) -> Picked:
    """The model `model` (else the key's default, else the base) names for this caller.

    A version of another owner is answered like one that does not exist (404 model_not_found:
    its name says nothing about whether it exists); one trained on another base is a 400."""
    wanted = model or caller.default_model
    if wanted is None or picks_base(wanted, caller, base):
        return Picked(base.tag.name, str(base.tag))
    try:
        entry = bentoml.models.get(wanted)
    except (bentoml.exceptions.BentoMLException, ValueError):  # not found, or not a tag at all
        entry = None
    gguf, trained_on = adapter_of(entry) if entry is not None else (None, None)
    if entry is None or gguf is None or not may_use(entry, caller):
        raise ApiError(
            404,
            f"model {wanted!r} is not served here: this server serves {base.tag.name!r} and its "
            "user versions your key may use (GET /v1/models lists them)",
            code="model_not_found",
            param="model",
        )
    if trained_on != str(base.tag):
        raise ApiError(
            400,
            f"version {entry.tag} is a LoRA adapter of {trained_on!r}, and this server serves "
            f"{base.tag}: an adapter only fits the base it was trained on. Serve that base, or "
            "fine-tune this version again on this one",
            code="adapter_does_not_fit",
            param="model",
        )
    if not gguf.is_file():
        raise ApiError(
            400,
            f"version {entry.tag} has no adapter for llama.cpp: its import could not write one "
            "(the import's log says why); import it again",
            code="adapter_does_not_fit",
            param="model",
        )
    return Picked(wanted, str(entry.tag), entry)


def may_use(entry: bentoml.Model, caller: Caller) -> bool:
    """Public versions (no owner) are everyone's; owned ones their owner's. With no API keys
    there is no one to tell apart: every version is open, as the rest of the API is."""
    owner = entry.info.metadata.get("owner")
    return owner is None or caller.owner is None or owner == caller.owner


def usable_versions(base: bentoml.Model, caller: Caller) -> list[bentoml.Model]:
    """The stored versions of `base` this caller may use, oldest first."""
    found = [
        entry
        for entry in bentoml.models.list()
        if adapter_of(entry)[1] == str(base.tag) and may_use(entry, caller)
    ]
    return sorted(found, key=lambda e: e.info.creation_time)
