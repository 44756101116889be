"""The autocompleter on a GPU: the device setting, the GPU image's recipe, and (where a GPU is
present, else skipped with the reason) both backends running there.

    pytest tests/unit/test_gpu.py -m gpu     # on a machine with an NVIDIA GPU
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.autocomplete.backends import gpu_present, load_backend, resolve_device
from services.autocomplete.engine import Engine
from services.autocomplete.sampling import SamplingParams
from services.autocomplete.settings import Settings
from tests.autocomplete_fixtures import tiny_gpt2_dir

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def test_the_device_setting_says_what_it_means() -> None:
    assert resolve_device("cpu", "torch") == "cpu"
    assert resolve_device("auto", "torch") == ("cuda" if gpu_present("torch") else "cpu")
    with pytest.raises(ValueError, match="device 'gpu0': use auto, cpu or cuda"):
        resolve_device("gpu0", "torch")
    if not gpu_present("torch"):
        with pytest.raises(ValueError, match="no GPU for the torch backend"):
            resolve_device("cuda", "torch")


def test_the_gpu_image_builds_llama_cpp_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.core.container_image import CPU_TORCH_INDEX, CUDA_BASE_IMAGE, service_image

    monkeypatch.setenv("MODELPORT_GPU_IMAGE", "1")
    image = service_image("autocomplete")
    assert image is not None and image.base_image == CUDA_BASE_IMAGE
    assert "llama-cpp-python" not in image.python_requirements  # not with the CPU build ...
    [command] = image.post_commands  # ... but compiled with CUDA after the rest
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in command and "llama-cpp-python==" in command
    assert CPU_TORCH_INDEX not in image.python_requirements  # torch's CUDA build from PyPI

    monkeypatch.delenv("MODELPORT_GPU_IMAGE")
    cpu = service_image("autocomplete")
    assert cpu is not None and "cuda" not in cpu.base_image and not cpu.post_commands
    assert "llama-cpp-python==" in cpu.python_requirements and CPU_TORCH_INDEX in cpu.python_requirements


def greedy_texts(engine: Engine, prompts: list[str]) -> list[str]:
    async def run() -> list[str]:
        streams = [engine.submit([engine.encode(p)], GREEDY) for p in prompts]
        return [(await s.collect())[0].text for s in streams]

    return asyncio.run(run())


PROMPTS = ["Hello world", "The weather today is", "Once upon a time"]


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_present("torch"), reason="needs an NVIDIA GPU and torch's CUDA build")
def test_torch_backend_on_the_gpu_decodes_what_the_cpu_does(tmp_path: Path) -> None:
    model_dir = tiny_gpt2_dir(tmp_path / "m")
    settings = {"backend": "torch", "dtype": "float32"}
    cpu = Engine(lambda: load_backend(model_dir, Settings(device="cpu", **settings)))
    gpu = Engine(lambda: load_backend(model_dir, Settings(device="cuda", **settings)))
    assert ", on " in gpu.backend.description  # the GPU's name, in the start-up log line
    assert greedy_texts(gpu, PROMPTS) == greedy_texts(cpu, PROMPTS)


@pytest.mark.gpu
@pytest.mark.skipif(
    not gpu_present("llama.cpp"), reason="needs llama-cpp-python built with CUDA (the GPU image) and a GPU"
)
def test_llama_cpp_offloads_every_layer_and_decodes() -> None:
    import services.autocomplete.model_kinds  # noqa: F401 - registers causal-lm
    from services.core.model_store import import_model

    model_dir = Path(import_model("smollm2-135m").path)
    gpu = Engine(lambda: load_backend(model_dir, Settings(device="cuda")))
    assert "on the GPU" in gpu.backend.description
    [paris] = greedy_texts(gpu, ["The capital of France is"])
    assert paris.strip().startswith("Paris"), paris
