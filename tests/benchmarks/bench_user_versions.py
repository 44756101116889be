"""Many users, one process: memory and speed of user versions (LoRA adapters) on one base.

    nice -n 10 python tests/benchmarks/bench_user_versions.py            # SmolLM2-135M, 20 versions
    nice -n 10 python tests/benchmarks/bench_user_versions.py --rounds 3

The base is SmolLM2-135M (the offline default, Q8_0 GGUF); 20 versions are peft LoRA adapters
of it (rank 16 on every linear layer, as `modelport finetune text --lora` trains, B drawn at
random so each changes the model), stored in a store of the benchmark's own
(~/.cache/modelport/bench-user-versions, kept: a re-run stores nothing; see import_versions). One server
(`bentoml serve`, llama.cpp) runs throughout; it measures, in order:
- RSS of the server (its worker and the arbiter) with 0, 1, 5 and 20 versions loaded;
- the first suggestion of a version not loaded yet (its adapter loads on that request), and
  the same request again, loaded, for 5 versions;
- bench_typing's as-you-type trace (each editor types its email, a `/v1/suggest` every 6
  characters, the next as soon as the answer came), 4 editors on 4 different versions against
  4 editors on one shared version, in turns for `--rounds` rounds (a row's p50: the median of
  its rounds'). Each editor has its own API key whose default model is its version.
Goals (issue 23): 20 versions within 2 GiB RSS; 4 versions' p50 at most 1.3x one shared
version's; a version's first suggestion within 1 s. Figures from a shared machine: read the
ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOME = Path.home() / ".cache" / "modelport" / "bench-user-versions"
os.environ.setdefault("BENTOML_HOME", str(HOME / "bentoml"))  # before bentoml is imported
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from tests.benchmarks.bench_typing import EMAILS, Run, median_p50, type_email
from tests.benchmarks.machine import describe_machine
from tests.servers import serve_process

SERVICE = "services.autocomplete.service:Autocomplete"
BASE = "smollm2-135m"
VERSIONS = 20
RANK = 16


def version_name(i: int) -> str:
    return f"bench-user-{i:02d}"


def import_versions() -> str:
    """The base and VERSIONS adapters of it in the benchmark's store; the base's tag.

    The first version goes through the real import (adapter.gguf written and checked against
    torch+peft: ~1 minute on 2 shared cores); the others are stored the same way but without
    that check (4-5 minutes each on the busy machine), which serving never runs."""
    import bentoml
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import services.autocomplete.model_kinds  # noqa: F401 - registers causal-lm and causal-lm-lora
    from services.autocomplete.lora_export import (
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
        LORA_GGUF_NAME,
        write_lora_gguf,
    )
    from services.autocomplete.user_versions import LORA_KIND
    from services.core.model_store import import_model
    from services.core.sources import LocalFile

    base = import_model(BASE)
    missing = [i for i in range(VERSIONS) if not _stored(version_name(i))]
    if missing:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
        config = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        with tempfile.TemporaryDirectory() as tmp:
            for i in missing:
                torch.manual_seed(i)
                with torch.no_grad():
                    for name, weight in model.named_parameters():
                        if "lora_B" in name:
                            weight.normal_(0.0, 0.02)
                adapter = Path(tmp) / str(i)
                model.save_pretrained(adapter)
                started = time.perf_counter()
                if i == 0:
                    import_model(version_name(i), LocalFile(str(adapter)), kind=LORA_KIND)
                else:
                    metadata = {"kind": LORA_KIND, "format": "lora", "base_model": str(base.tag)}
                    with bentoml.models.create(
                        version_name(i), metadata=metadata, labels={"kind": LORA_KIND}
                    ) as entry:
                        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
                            shutil.copyfile(adapter / name, Path(entry.path) / name)
                        write_lora_gguf(adapter, Path(base.path), Path(entry.path) / LORA_GGUF_NAME)
                print(f"stored {version_name(i)} ({time.perf_counter() - started:.0f} s)", flush=True)
    return str(bentoml.models.get(base.tag).tag)


def _stored(name: str) -> bool:
    from services.core.model_store import versions

    return bool(versions(name))


def rss_mb(server: Any) -> tuple[float, float]:
    """(the worker's RSS, the whole tree's), MB: the worker holds the model and the versions."""
    process = psutil.Process(server.pid)
    tree = [process, *process.children(recursive=True)]
    sizes = {p.pid: p.memory_info().rss / 2**20 for p in tree if p.is_running()}
    return max(sizes.values()), sum(sizes.values())


def suggest_ms(url: str, key: str, text: str) -> float:
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/suggest", json={"text": text}, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def typing(url: str, keys: list[str]) -> Run:
    """bench_typing's trace: editor e types EMAILS[e] with its own key (its default version)."""

    async def go() -> Run:
        run = Run()
        clients = [
            httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {k}"})
            for k in keys
        ]
        try:
            for e, client in enumerate(clients):  # warm: each editor's version loaded and its prefix cached
                await type_email(client, "suggest", "Warm up: " + EMAILS[-1][:30], 90 + e, Run(), 1)
            await asyncio.gather(
                *(type_email(c, "suggest", EMAILS[e], e, run, 1) for e, c in enumerate(clients))
            )
        finally:
            for client in clients:
                await client.aclose()
        return run

    return asyncio.run(go())


def step_costs(base_dir: Path, adapters: list[Path], steps: int = 40) -> dict[str, float]:
    """In process, no server: ms per decode step of the llama.cpp backend (2 threads) for rows
    of the base, of one version, and of 4 versions (4 passes and 4 adapter switches a step)."""
    from transformers import AutoTokenizer

    from services.autocomplete.backend import PromptChunk
    from services.autocomplete.llama_backend import LlamaCppBackend

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    backend = LlamaCppBackend(base_dir / "model.gguf", tokenizer, threads=2, kv_tokens=4096, max_sequences=8)
    ids = [backend.load_adapter(path) for path in adapters[:4]]
    prompt = tokenizer("Dear Ms Patel, thank you for your letter").input_ids

    def cost(versions: list[int | None]) -> float:
        backend.reset()
        chunks = []
        for key, version in enumerate(versions):
            backend.begin(key, [*prompt, key], False, version)
            chunks.append(PromptChunk(key, [*prompt, key], 0, len(prompt) + 1, False))
        backend.step(chunks, [])
        backend.join(list(range(len(versions))))
        backend.step([], [13] * len(versions))  # warm: the graph for this shape
        started = time.perf_counter()
        for _ in range(steps):
            backend.step([], [13] * len(versions))
        return (time.perf_counter() - started) / steps * 1000

    rows = {
        "1 row, base": [None],
        "1 row, a version": ids[:1],
        "4 rows, base": [None] * 4,
        "4 rows, one version": ids[:1] * 4,
        "4 rows, 4 versions": ids,
    }
    rounds = [{name: cost(versions) for name, versions in rows.items()} for _ in range(3)]
    backend.close()
    return {name: statistics.median(r[name] for r in rounds) for name in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="times each typing row is measured, in turn")
    args = parser.parse_args()
    base = import_versions()
    keys = {f"editor-key-{i:02d}-xxxxxxxx": version_name(i) for i in range(VERSIONS)}
    shared = {f"shared-key-{i}-xxxxxxxxxx": version_name(0) for i in range(4)}
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        keys_file = Path(tmp) / "keys"
        keys_file.write_text("".join(f"{k} reader model={m}\n" for k, m in {**keys, **shared}.items()))
        env = {
            "MODELPORT_AUTOCOMPLETE_MODEL": base,
            "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1",
            "MODELPORT_AUTOCOMPLETE_BACKEND": "llama.cpp",
            "MODELPORT_API_KEYS_FILE": str(keys_file),
            "MODELPORT_DATA_DIR": str(Path(tmp) / "data"),
        }
        with serve_process(SERVICE, env=env, log_path=Path(tmp) / "server.log") as server:
            editor_keys = list(keys)
            memory = {0: rss_mb(server.process)}
            first, again = [], []
            for i in range(5):  # each a version not loaded yet, then the same request loaded
                text = f"Dear customer number {i}, thank you for"
                first.append(suggest_ms(server.url, editor_keys[i], text))
                again.append(suggest_ms(server.url, editor_keys[i], text))
                if i == 0:
                    memory[1] = rss_mb(server.process)
            memory[5] = rss_mb(server.process)
            for i in range(5, VERSIONS):
                suggest_ms(server.url, editor_keys[i], "Hello")
            memory[VERSIONS] = rss_mb(server.process)
            rows: dict[str, list[Run]] = {"4 editors, one shared version": [], "4 editors, 4 versions": []}
            for _ in range(args.rounds):
                rows["4 editors, one shared version"].append(typing(server.url, list(shared)))
                rows["4 editors, 4 versions"].append(typing(server.url, editor_keys[:4]))

    import bentoml

    steps = step_costs(
        Path(bentoml.models.get(base).path),
        [Path(bentoml.models.get(version_name(i)).path) / "adapter.gguf" for i in range(4)],
    )
    header = f"{describe_machine()}, load average {os.getloadavg()[0]:.1f} (1 min; high: read the ratios)"
    table = Table(title=f"User versions on SmolLM2-135M (Q8_0), LoRA rank {RANK}: memory\n{header}")
    for column in ("versions loaded", "worker RSS MB", "server RSS MB (all processes)"):
        table.add_column(column, justify="right")
    for n, (worker, total) in memory.items():
        table.add_row(str(n), f"{worker:.0f}", f"{total:.0f}")
    console.print(table)

    table = Table(title="First suggestion of a version not loaded yet (its adapter loads), ms")
    for column in ("", "p50", "max"):
        table.add_column(column, justify="right")
    table.add_row("first (loads it)", f"{statistics.median(first):.0f}", f"{max(first):.0f}")
    table.add_row("same request, loaded", f"{statistics.median(again):.0f}", f"{max(again):.0f}")
    console.print(table)

    table = Table(title="As-you-type trace (bench_typing: /v1/suggest n=1 every 6 characters)")
    for column in ("editors", "requests", "p50 ms", "p95 ms", "p50 / shared"):
        table.add_column(column, justify="right")
    reference = median_p50(rows["4 editors, one shared version"])
    for name, rounds in rows.items():
        pooled = Run(latencies=[x for run in rounds for x in run.latencies])
        table.add_row(
            name,
            str(len(pooled.latencies)),
            f"{median_p50(rounds):.0f}",
            f"{pooled.p(0.95):.0f}",
            f"{median_p50(rounds) / reference:.2f}x",
        )
    console.print(table)

    table = Table(title="One decode step of the llama.cpp backend, in process (median of 3 x 40 steps)")
    for column in ("rows", "ms a step", "vs 4 rows, one version"):
        table.add_column(column, justify="right")
    for name, ms in steps.items():
        table.add_row(name, f"{ms:.1f}", f"{ms / steps['4 rows, one version']:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
