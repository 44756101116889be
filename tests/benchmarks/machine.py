"""One line naming the machine a benchmark ran on, for its header: speeds differ between the
CPUs this project runs on (AVX2-only EPYCs, Zen 4 with AVX-512/BF16), so every table says which.

    print(describe_machine())   # AMD EPYC 9R14, 2 cores, flags avx2 avx512f avx512_bf16 ..., Python 3.11.7
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The flags that decide which kernels run fast (matrix maths, int8, bf16).
FLAGS_THAT_MATTER = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def describe_machine() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                model = value.strip()
            elif name.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    present = " ".join(f for f in FLAGS_THAT_MATTER if f in flags) or "unknown"
    return f"{model}, {os.cpu_count()} cores, flags {present}, Python {platform.python_version()}"
