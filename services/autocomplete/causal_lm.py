"""Causal LMs in the model store: the `causal-lm` preparer and the loader the service uses.

Whatever the source (a hub repo, a local transformers directory, a GGUF file), the store
entry holds a transformers directory (config.json, safetensors, tokenizer): what torch
serves and what fine-tuning starts from. GGUF files are de-quantised into it once, here,
at import (about a minute for SmolLM2-135M), never at start-up; the GGUF itself is kept
beside it as model.gguf, which llama.cpp serves (llama_backend.py). GPT-2 and Llama models
(a fine-tuned version too: fine-tuning stores it through here) get a model.gguf written from
their weights (gguf_export.py), kept only when llama.cpp's logits match torch's.

    modelport models import smollm2-135m                      # the offline default (a GGUF)
    modelport models import gpt2                              # openai-community/gpt2 (hub)
    modelport models import my-lm --from-path ./out --kind causal-lm
    modelport models import my-lm --from-path model.gguf --kind causal-lm
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from services.core.sources import CACHE_DIR, sha256_of

logger = logging.getLogger("modelport.autocomplete")

# De-quantising a GGUF costs a minute; a cache keyed by the file's sha256 makes re-imports
# (a fresh test store, a second machine user) instant.
_GGUF_CACHE = CACHE_DIR / "gguf-converted"
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")
GGUF_NAME = "model.gguf"  # an entry imported from a GGUF keeps the file under this name
_REENCODE = ("Q4_1", "Q5_1")  # GGUF weight types stored as Q8_0 (see _store_gguf)


def prepare_causal_lm(fetched: Path, model_dir: Path) -> dict[str, Any]:
    """The causal-lm kind's preparer: copy or convert `fetched` into `model_dir`; return metadata."""
    if fetched.is_file() and fetched.suffix == ".gguf":
        _copy_tree(_converted_gguf(fetched), model_dir)
        origin = "gguf"
    elif fetched.is_dir() and (fetched / "config.json").exists():
        _copy_tree(fetched, model_dir)
        (model_dir / GGUF_NAME).unlink(missing_ok=True)  # a stale one would serve other weights
        origin = "transformers"
    else:
        raise ValueError(
            f"{fetched.name}: a causal-lm is a transformers directory (with config.json) or a .gguf file"
        )
    if not any((model_dir / name).exists() for name in _TOKENIZER_FILES):
        raise ValueError(
            f"{fetched.name} has no tokenizer ({' or '.join(_TOKENIZER_FILES)}); "
            "save the tokenizer next to the model (tokenizer.save_pretrained(dir))"
        )
    config = json.loads((model_dir / "config.json").read_text())
    adapter_info = _adapter_gguf(model_dir) if origin == "transformers" else {}
    gguf_info = (
        {"gguf_type": _store_gguf(fetched, model_dir / GGUF_NAME)}
        if origin == "gguf"
        else _written_gguf(model_dir, config)
    )
    return {
        "format": origin,
        "architecture": (config.get("architectures") or ["?"])[0],
        "context_length": context_length(config),
        **gguf_info,
        **adapter_info,
    }


def _adapter_gguf(model_dir: Path) -> dict[str, Any]:
    """A version made with `finetune text --lora` keeps its LoRA adapter in `adapter/`: write it
    as a llama.cpp adapter too (lora_export.py), so a server holding the base once can serve
    it per request (user_versions.py); what the metadata says of it."""
    from services.autocomplete.lora_export import ADAPTER_CONFIG, ADAPTER_DIR, prepare_adapter

    if not (model_dir / ADAPTER_DIR / ADAPTER_CONFIG).is_file() or not llama_cpp_installed():
        return {}
    try:
        return {"adapter_gguf": prepare_adapter(model_dir / ADAPTER_DIR, GGUF_NAME)}
    except (ValueError, KeyError, OSError, RuntimeError) as failed:  # the merged model still serves
        logger.warning("could not write %s's adapter for llama.cpp (%s)", model_dir.name, failed)
        return {}


def _written_gguf(model_dir: Path, config: dict[str, Any]) -> dict[str, str]:
    """For a GPT-2 or Llama model, also write it as a GGUF for llama.cpp, checked against torch;
    what the entry's metadata says of it (nothing: no GGUF, torch serves the entry).

    llama.cpp decodes these ~4x faster than torch on CPUs (tests/benchmarks/bench_autocomplete.py).
    """
    from services.autocomplete.gguf_export import ARCHITECTURES, check_gguf, write_gguf

    if config.get("model_type") not in ARCHITECTURES or not llama_cpp_installed():
        return {}
    target = model_dir / GGUF_NAME
    try:
        check = check_gguf(model_dir, target, write_gguf(model_dir, target))
    except (ValueError, KeyError, OSError, RuntimeError) as failed:  # torch still serves it
        target.unlink(missing_ok=True)
        logger.warning(
            "could not write %s as a GGUF for llama.cpp (%s); torch will serve it", model_dir.name, failed
        )
        return {}
    if not check.passed:
        target.unlink()
        logger.warning(
            "the GGUF written for %s does not compute what torch computes (%s): dropped; torch will serve it",
            model_dir.name,
            check,
        )
        return {}
    logger.info("wrote %s as a GGUF for llama.cpp: %s", model_dir.name, check)
    return {"gguf_type": "Q8_0 (written from the transformers weights)", "gguf_check": str(check)}


def _store_gguf(fetched: Path, target: Path) -> str:
    """Keep the GGUF for llama.cpp; its weight type, as stored.

    llama.cpp's fast CPU matmuls for several sequences at once cover Q8_0, Q4_0 and the
    float types but not Q4_1 (measured) or Q5_1 (its min + scale kin): those are re-encoded
    to Q8_0, which holds their values (SmolLM2-135M's perplexity on Debian's fortunes: 31.72
    as Q4_1, 31.76 re-encoded) and decodes 16 sequences 1.4x faster (183 -> 257 tokens/s,
    2 cores). Re-encoding Q4_1 to Q4_0 instead ruins the model (its greedy text is noise).
    """
    import gguf

    field = gguf.GGUFReader(fetched).fields.get("general.file_type")
    kind = gguf.LlamaFileType(int(field.parts[field.data[0]][0])).name if field else "unknown"
    kind = kind.removeprefix("MOSTLY_")
    if kind in _REENCODE and llama_cpp_installed():
        from services.autocomplete.llama_backend import quiet_llama_cpp

        llama_cpp = quiet_llama_cpp()
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, True
        if llama_cpp.llama_model_quantize(str(fetched).encode(), str(target).encode(), params) == 0:
            return f"Q8_0 (re-encoded from {kind})"
        logger.warning("llama.cpp could not re-encode %s to Q8_0; keeping it as %s", fetched, kind)
    shutil.copyfile(fetched, target)
    return kind


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def context_length(config: dict[str, Any]) -> int:
    """Tokens a model's sequence may hold, from its config.json (2048 when it does not say)."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return 2048


def _copy_tree(source: Path, target: Path) -> None:
    for item in source.iterdir():
        if item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, dirs_exist_ok=True)
        else:
            shutil.copyfile(item, target / item.name)


def _converted_gguf(gguf: Path) -> Path:
    """A transformers directory with the GGUF's weights (float32) and tokenizer."""
    cached = _GGUF_CACHE / sha256_of(gguf)
    if (cached / "config.json").exists():
        return cached
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already de-quantised to float32; dropping the GGUF quantiser lets
    # them be saved as ordinary safetensors.
    model.hf_quantizer = None  # type: ignore[assignment]  # undeclared in transformers: nn.Module types it Tensor | Module
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = cached.with_name(cached.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(cached, ignore_errors=True)
    partial.rename(cached)
    return cached


def load_causal_lm(model_dir: Path, dtype: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) from a store entry's directory, in eval mode, weights in `dtype`.

    dtype: float32, bfloat16, int8 (float32 with int8 linear weights, services/autocomplete/
    int8_weights.py) or auto (best_cpu_dtype).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32 if dtype == "int8" else getattr(torch, dtype)
    )
    if dtype == "int8":
        from services.autocomplete.int8_weights import quantize_linear_weights

        quantize_linear_weights(model)
        # What stays float32 (embeddings, norms) still views the memory-mapped weights file,
        # which then stays resident whole: own copies let it go (GPT-2: RSS 971 -> 650 MB).
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dtype != torch.int8:  # the int8 weights are new copies already
                tensor.data = tensor.data.clone()
    return model.eval(), tokenizer


DTYPES = ("int8", "bfloat16", "float32")


def resolve_dtype(dtype: str) -> str:
    """The dtype a setting means on this machine ("auto" picked by best_cpu_dtype)."""
    dtype = best_cpu_dtype() if dtype == "auto" else dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: use auto or one of {', '.join(DTYPES)}")
    return dtype


def best_cpu_dtype() -> str:
    """bfloat16 on CPUs with native bf16 arithmetic; elsewhere int8 weights (decoding is bound
    by memory bandwidth, and bf16 arithmetic there is 1.5-5x slower than float32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: float32, which every CPU runs
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "int8"
