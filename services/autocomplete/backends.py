"""Which backend runs a store entry, and loading it: llama.cpp for entries with a GGUF, torch
(transformers) for the rest, as the `backend` and `dtype` settings say.

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
    threads = settings.threads or torch.get_num_threads()  # torch's default: one per core
    if backend == "llama.cpp":
        from transformers import AutoTokenizer

        from services.autocomplete.llama_backend import LlamaCppBackend

        torch.set_num_threads(1)  # torch only samples here; its threads would contend with llama.cpp's
        return LlamaCppBackend(model_dir / GGUF_NAME, AutoTokenizer.from_pretrained(model_dir),
                               threads=threads, kv_tokens=settings.kv_cache_tokens,
                               max_sequences=settings.max_batch_size + settings.max_n)
    from services.autocomplete.torch_backend import TorchBackend

    torch.set_num_threads(threads)
    dtype = resolve_dtype(settings.dtype)
    return TorchBackend(*load_causal_lm(model_dir, dtype), dtype)


def resolve_backend(backend: str, model_dir: Path) -> str:
    """"llama.cpp" or "torch": what `backend` (a setting) means for this store entry."""
    has_gguf = (model_dir / GGUF_NAME).is_file()
    installed = llama_cpp_installed()
    if backend == "auto":
        if has_gguf and not installed:
            logger.warning("this model came from a GGUF, which llama.cpp serves several times "
                           "faster, but llama-cpp-python is not installed: serving it in torch "
                           "(pip install 'modelport[autocomplete]' installs it)")
        return "llama.cpp" if has_gguf and installed else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: use auto or one of {', '.join(BACKENDS)}")
    if backend == "llama.cpp" and not has_gguf:
        raise ValueError(f"backend llama.cpp serves GGUF files, and {model_dir.name} has none "
                         f"({GGUF_NAME}): import the model from a .gguf, or use backend torch")
    if backend == "llama.cpp" and not installed:
        raise ValueError("backend llama.cpp needs llama-cpp-python: pip install "
                         "'modelport[autocomplete]'")
    return backend
