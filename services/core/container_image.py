"""Container image recipes for the services, derived from pyproject.toml (one source of truth).

    @bentoml.service(image=service_image())                      # plate reader: core only
    @bentoml.service(image=service_image("autocomplete"))        # + torch, transformers

Package locking is off by default, so `bentoml build` works on machines that only reach a
package index; set MODELPORT_LOCK_PACKAGES=1 where the internet is reachable to pin every
transitive version into the bento. MODELPORT_TORCH_INDEX picks the torch wheel index
(default: PyTorch's CPU wheels, 5x smaller than the CUDA ones; "" for the CUDA build from
PyPI).

MODELPORT_GPU_IMAGE=1 builds the GPU image: on NVIDIA's CUDA development image (nvcc), torch's
CUDA build, and llama.cpp compiled with CUDA (GGML_CUDA=on), so the autocompleter offloads
every layer to the GPU (its `device` setting, "auto", finds it).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import bentoml

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PYTHON_VERSION = "3.11"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# nvcc and CUDA's headers, for llama.cpp's CUDA kernels; torch's CUDA wheels bring their own runtime.
CUDA_BASE_IMAGE = "nvidia/cuda:12.6.3-devel-ubuntu24.04"


def service_image(*extras: str) -> bentoml.images.Image | None:
    """The image for a service needing the core dependencies plus `extras` (pyproject extras).

    None inside a built bento, whose image was already resolved at build time.
    """
    if not PYPROJECT.is_file():
        return None
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    packages = list(project["dependencies"])
    for extra in extras:
        packages += project["optional-dependencies"][extra]
    gpu = os.environ.get("MODELPORT_GPU_IMAGE") == "1"
    image = bentoml.images.Image(
        base_image=CUDA_BASE_IMAGE if gpu else "",
        python_version=PYTHON_VERSION,
        lock_python_packages=os.environ.get("MODELPORT_LOCK_PACKAGES") == "1",
    )
    torch_index = "" if gpu else os.environ.get("MODELPORT_TORCH_INDEX", CPU_TORCH_INDEX)
    if any(p.startswith("torch") for p in packages) and torch_index:
        image = image.python_packages(f"--extra-index-url {torch_index}")
    llama = [p for p in packages if p.startswith("llama-cpp-python")]
    if llama:
        # PyPI has only its source: pip compiles llama.cpp in the image build, for that
        # machine's CPU (GGML_NATIVE), so build the image on the CPU family it will run on.
        image = image.system_packages("build-essential")
    if not (gpu and llama):
        return image.python_packages(*packages)
    # The GPU image compiles llama.cpp with CUDA, a build option a requirements line cannot carry.
    image = image.python_packages(*(p for p in packages if p not in llama))
    return image.run(
        f'CMAKE_ARGS="-DGGML_CUDA=on" uv pip install --python /app/.venv/bin/python --no-cache "{llama[0]}"'
    )
