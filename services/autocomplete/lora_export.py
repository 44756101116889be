"""peft LoRA adapters written as llama.cpp LoRA GGUFs, so that one base model in memory serves
many user versions (llama_backend.py applies an adapter per engine step).

    write_lora_gguf(adapter_dir, base_dir, target)             # peft's save_pretrained output
    check_lora_gguf(adapter_dir, base_dir / "model.gguf", target)  # base+adapter vs torch+peft

llama.cpp's own converter (convert_lora_to_gguf.py) is a script in its source tree, built on
its convert_hf_to_gguf.py; this is its path for GPT-2 and Llama on gguf-py, the same tensor
names as gguf_export.py writes the base with: `<base tensor>.lora_a` (peft's lora_A, [rank,
in]) and `.lora_b` (lora_B, [out, rank]; for Llama's q/k, rows permuted to llama.cpp's rotary
layout like the base's), `general.type = adapter`, `adapter.lora.alpha` (llama.cpp scales by
alpha / rank, as peft does). Stored as float16: half the memory of float32 per loaded version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.autocomplete.gguf_export import (
    ARCHITECTURES,
    LogitCheck,
    _rotary_rows,
    check_backend,
    compare_next_token,
)

ADAPTER_DIR = "adapter"  # where `finetune text --lora` keeps the adapter in its version (finetune/text.py)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LORA_GGUF_NAME = "adapter.gguf"  # what a stored version keeps for llama.cpp


def adapter_settings(adapter_dir: Path) -> dict[str, Any]:
    """peft's adapter_config.json; ValueError when llama.cpp cannot run it as written here."""
    path = adapter_dir / ADAPTER_CONFIG
    if not path.is_file() or not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        raise ValueError(
            f"{adapter_dir.name}: a LoRA version is peft's save_pretrained output "
            f"({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})"
        )
    config = json.loads(path.read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"peft_type {config.get('peft_type')!r}: only LoRA adapters are served")
    if config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError("DoRA and per-module ranks or alphas are not written to GGUF here")
    if config.get("modules_to_save"):
        raise ValueError(
            "an adapter that retrains whole modules (modules_to_save) is not a LoRA llama.cpp runs"
        )
    return dict(config)


def prepare_adapter(adapter_dir: Path, base_gguf: str) -> dict[str, Any]:
    """Write `adapter_dir`'s adapter.gguf for the base named by adapter_config.json's
    `base_model_name_or_path` (a store tag or a store entry's directory: what peft records when
    trained on one), whose GGUF is the file `base_gguf` in it, checked against torch+peft;
    metadata saying which base it fits."""
    settings = adapter_settings(adapter_dir)
    base = base_entry(str(settings.get("base_model_name_or_path") or ""))
    base_dir = Path(base.path)
    if not (base_dir / base_gguf).is_file():
        raise ValueError(f"the base {base.tag} has no GGUF; llama.cpp serves LoRA versions only on one")
    target = adapter_dir / LORA_GGUF_NAME
    write_lora_gguf(adapter_dir, base_dir, target)
    check = check_lora_gguf(adapter_dir, base_dir / base_gguf, target)
    if not check.passed:
        target.unlink()
        raise ValueError(f"the adapter's GGUF does not compute what torch+peft computes ({check})")
    return {"base_model": str(base.tag), "lora_rank": settings.get("r"), "lora_check": str(check)}


def base_entry(reference: str) -> Any:
    """The store entry (a bentoml.Model) an adapter was trained on: `reference` is a tag, a
    name, or the entry's directory; ValueError saying what to set when it names none."""
    from services.core.model_store import ModelNotFound, resolve, serving_tag

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


def write_lora_gguf(adapter_dir: Path, base_dir: Path, target: Path) -> None:
    """Write the peft adapter in `adapter_dir`, trained on the transformers model in
    `base_dir`, as a llama.cpp LoRA GGUF; ValueError if it does not fit that base."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = adapter_settings(adapter_dir)
    base = json.loads((base_dir / "config.json").read_text())
    kind = base.get("model_type")
    if kind not in ARCHITECTURES:
        raise ValueError(f"model_type {kind!r}: LoRA GGUFs are written for {', '.join(ARCHITECTURES)}")
    arch = gguf.MODEL_ARCH.GPT2 if kind == "gpt2" else gguf.MODEL_ARCH.LLAMA
    names = gguf.get_tensor_name_map(arch, base.get("n_layer") or base["num_hidden_layers"])
    pairs: dict[str, dict[str, Any]] = {}
    for name, tensor in load_file(adapter_dir / ADAPTER_WEIGHTS).items():
        part = "a" if ".lora_A." in name else "b" if ".lora_B." in name else None
        if part is None:
            raise ValueError(f"{name}: not a LoRA tensor (lora_A / lora_B)")
        module = name.removeprefix("base_model.model.").split(f".lora_{part.upper()}.")[0]
        pairs.setdefault(module, {})[part] = tensor
    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):  # peft scales by alpha / sqrt(rank), llama.cpp by alpha / rank
        rank = next(iter(pairs.values()))["a"].shape[0]
        alpha *= rank**0.5
    writer = gguf.GGUFWriter(target, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for module, pair in sorted(pairs.items()):
        gguf_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if gguf_name is None or set(pair) != {"a", "b"}:
            raise ValueError(f"{module}: not a {kind} weight llama.cpp runs a LoRA on")
        a, b = pair["a"], pair["b"]
        if kind == "llama" and module.endswith(("self_attn.q_proj", "self_attn.k_proj")):
            heads = base["num_attention_heads"]
            if module.endswith("k_proj"):
                heads = base.get("num_key_value_heads") or heads
            b = _rotary_rows(b, heads)
        for suffix, data in (("lora_a", a), ("lora_b", b)):
            writer.add_tensor(f"{gguf_name}.{suffix}", np.ascontiguousarray(data, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check_lora_gguf(adapter_dir: Path, base_gguf: Path, lora_gguf: Path) -> LogitCheck:
    """llama.cpp's next-token logits for `base_gguf` (in the base's transformers directory) plus
    `lora_gguf` against torch+peft's (float32), on gguf_export's prompts; ValueError if llama.cpp
    refuses the adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = base_gguf.parent
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    backend = check_backend(base_gguf, tokenizer)
    try:
        version = backend.load_adapter(lora_gguf)

        def next_logits(ids: list[int]) -> Any:
            backend.begin(0, ids, False, version)
            got = backend.step([_whole(ids)], [])[0][0][-1]
            backend.abandon(0)
            return got

        return compare_next_token(model, tokenizer, next_logits)
    finally:
        backend.close()


def _whole(ids: list[int]) -> Any:
    from services.autocomplete.backend import PromptChunk

    return PromptChunk(0, ids, 0, len(ids), False)
