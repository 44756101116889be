"""Which backend runs a store entry, and loading it: llama.cpp for entries with a GGUF, torch
(transformers) for the rest, on the GPU when there is one, as the `backend`, `device` and
`dtype` settings say.

    backend = load_backend(Path(entry.path), Settings.from_env())   # what the engine runs
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from services.autocomplete.causal_lm import GGUF_NAME, llama_cpp_installed, load_causal_lm, resolve_dtype
from services.autocomplete.settings import Settings

logger = logging.getLogger("modelport.autocomplete")

BACKENDS = ("llama.cpp", "torch")


def load_backend(model_dir: Path, settings: Settings) -> Any:
    """The engine's Backend for a store entry, as `settings.backend` and `settings.dtype` say."""
    import torch

    backend = resolve_backend(settings.backend, model_dir)
    device = resolve_device(settings.device, backend)
    threads = settings.threads or torch.get_num_threads()  # torch's default: one per core
    if backend == "llama.cpp":
        from transformers import AutoTokenizer

        from services.autocomplete.llama_backend import LlamaCppBackend

        torch.set_num_threads(1)  # torch only samples here; its threads would contend with llama.cpp's
        return LlamaCppBackend(
            model_dir / GGUF_NAME,
            AutoTokenizer.from_pretrained(model_dir),
            threads=threads,
            kv_tokens=settings.kv_cache_tokens,
            max_sequences=settings.max_batch_size + settings.max_n,
            gpu=device == "cuda",
        )
    from services.autocomplete.torch_backend import TorchBackend

    torch.set_num_threads(threads)
    if device == "cuda" and settings.dtype == "int8":
        raise ValueError(
            "dtype int8 is for CPUs (int8 linear weights run by CPU kernels): on a "
            "GPU use auto, bfloat16 or float32"
        )
    dtype = "bfloat16" if device == "cuda" and settings.dtype == "auto" else resolve_dtype(settings.dtype)
    model, tokenizer = load_causal_lm(model_dir, dtype)
    return TorchBackend(model.to(device), tokenizer, dtype, device=device)


def gpu_present(backend: str) -> bool:
    """A GPU this backend can use: CUDA for torch; for llama.cpp, a build with GPU offload
    (the CPU build from PyPI's source has none, whatever the machine has)."""
    if backend == "llama.cpp":
        from services.autocomplete.llama_backend import quiet_llama_cpp

        return bool(quiet_llama_cpp().llama_supports_gpu_offload())
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str, backend: str) -> str:
    """ "cuda" or "cpu": what the `device` setting means for this backend on this machine."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {device!r}: use auto, cpu or cuda")
    if device == "cpu":
        return "cpu"
    present = gpu_present(backend)
    if device == "cuda" and not present:
        how = (
            "llama-cpp-python built with CMAKE_ARGS=-DGGML_CUDA=on (the GPU image builds it so)"
            if backend == "llama.cpp"
            else "torch's CUDA build and a visible GPU"
        )
        raise ValueError(f"device cuda: no GPU for the {backend} backend here; it needs {how}")
    return "cuda" if present else "cpu"


def resolve_backend(backend: str, model_dir: Path) -> str:
    """ "llama.cpp" or "torch": what `backend` (a setting) means for this store entry."""
    has_gguf = (model_dir / GGUF_NAME).is_file()
    installed = llama_cpp_installed()
    if backend == "auto":
        if has_gguf and not installed:
            logger.warning(
                "this model came from a GGUF, which llama.cpp serves several times "
                "faster, but llama-cpp-python is not installed: serving it in torch "
                "(pip install 'modelport[autocomplete]' installs it)"
            )
        return "llama.cpp" if has_gguf and installed else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: use auto or one of {', '.join(BACKENDS)}")
    if backend == "llama.cpp" and not has_gguf:
        raise ValueError(
            f"backend llama.cpp serves GGUF files, and {model_dir.name} has none "
            f"({GGUF_NAME}): import the model from a .gguf, or use backend torch"
        )
    if backend == "llama.cpp" and not installed:
        raise ValueError("backend llama.cpp needs llama-cpp-python: pip install 'modelport[autocomplete]'")
    return backend
