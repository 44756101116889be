"""User versions: LoRA adapters of the served base model, stored as model-store entries of kind
`causal-lm-lora`, and which one a request gets.

    modelport models import alice-notes --from-path runs/.../adapter --kind causal-lm-lora
    # (or `modelport finetune text --lora`, which stores its adapter this way)

A version's directory holds peft's adapter (adapter_config.json, adapter_model.safetensors)
and `adapter.gguf`, written at import (lora_export.py) and kept only when llama.cpp's logits
with it match torch+peft's. Its metadata records `base_model`, the exact base tag it was
trained on (a server serves a version only on that base), and `owner`: the API key name that
may use it (none: public, every key may).

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
    ADAPTER_WEIGHTS,
    LORA_GGUF_NAME,
    adapter_settings,
    check_lora_gguf,
    write_lora_gguf,
)
from services.core.api_errors import ApiError
from services.core.model_store import ModelNotFound, resolve, serving_tag

LORA_KIND = "causal-lm-lora"


def prepare_lora(fetched: Path, model_dir: Path) -> dict[str, Any]:
    """The causal-lm-lora kind's preparer: the adapter, and its GGUF checked against torch+peft
    on the base named by adapter_config.json's `base_model_name_or_path` (a store tag or a
    store entry's directory: what peft records when trained on a store entry)."""
    if not fetched.is_dir():
        raise ValueError(
            f"{fetched.name}: a LoRA version is a directory ({ADAPTER_CONFIG}, {ADAPTER_WEIGHTS})"
        )
    settings = adapter_settings(fetched)
    base = base_entry(str(settings.get("base_model_name_or_path") or ""))
    base_dir = Path(base.path)
    if not (base_dir / GGUF_NAME).is_file():
        raise ValueError(f"the base {base.tag} has no GGUF; llama.cpp serves LoRA versions only on one")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        shutil.copyfile(fetched / name, model_dir / name)
    target = model_dir / LORA_GGUF_NAME
    write_lora_gguf(fetched, base_dir, target)
    check = check_lora_gguf(fetched, base_dir, target)
    if not check.passed:
        raise ValueError(f"the adapter's GGUF does not compute what torch+peft computes ({check})")
    return {
        "format": "lora",
        "base_model": str(base.tag),
        "lora_rank": settings.get("r"),
        "gguf_check": str(check),
    }


def base_entry(reference: str) -> bentoml.Model:
    """The store entry an adapter was trained on: `reference` is a tag, a name, or the
    entry's directory; ValueError saying what to set when it names none."""
    path = Path(reference).expanduser()
    try:
        if path.is_dir():  # <bentoml home>/models/<name>/<version>
            entry = resolve(f"{path.resolve().parent.name}:{path.resolve().name}")
            if Path(entry.path).resolve() == path.resolve():
                return entry
        elif reference:
            return resolve(reference if ":" in reference else serving_tag(reference))
    except ModelNotFound:
        pass
    raise ValueError(
        f"adapter_config.json's base_model_name_or_path ({reference!r}) names no model in the "
        "store: set it to the base's tag (NAME:VERSION, `modelport models list`)"
    )


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
        return None if self.entry is None else Path(self.entry.path) / LORA_GGUF_NAME


def pick(model: str | None, caller: Caller, base: bentoml.Model) -> Picked:
    """The model `model` (else the key's default, else the base) names for this caller.

    A version of another owner is answered like one that does not exist (404 model_not_found:
    its name says nothing about whether it exists); one trained on another base is a 422."""
    wanted = model or caller.default_model
    if wanted is None or wanted in (base.tag.name, str(base.tag)):
        return Picked(base.tag.name, str(base.tag))
    try:
        entry = bentoml.models.get(wanted)
    except (bentoml.exceptions.NotFound, ValueError):  # ValueError: not a tag at all
        entry = None
    if entry is None or not may_use(entry, caller) or entry.info.labels.get("kind") != LORA_KIND:
        raise ApiError(
            404,
            f"model {wanted!r} is not served here: this server serves {base.tag.name!r} and its "
            "user versions your key may use (GET /v1/models lists them)",
            code="model_not_found",
            param="model",
        )
    trained_on = entry.info.metadata.get("base_model")
    if trained_on != str(base.tag):
        raise ApiError(
            422,
            f"version {entry.tag} is a LoRA adapter of {trained_on!r}, and this server serves "
            f"{base.tag}: an adapter only fits the base it was trained on. Serve that base, or "
            "fine-tune this version again on this one",
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
        if entry.info.labels.get("kind") == LORA_KIND
        and entry.info.metadata.get("base_model") == str(base.tag)
        and may_use(entry, caller)
    ]
    return sorted(found, key=lambda e: e.info.creation_time)
