"""Autocompleter benchmark: our server vs llama.cpp's `llama-server` vs a naive transformers loop.

    python tests/benchmarks/bench_autocomplete.py                     # builds llama-server once (~15 min)
    python tests/benchmarks/bench_autocomplete.py --llama-server PATH  # a llama-server you built
    python tests/benchmarks/bench_autocomplete.py --models smollm2 --skip-naive   # some rows
    MODELPORT_AUTOCOMPLETE_MAX_BATCH_SIZE=16 python tests/benchmarks/bench_autocomplete.py  # any setting

Prints one table. For each model, (a) a GPT-2 124M-shaped model (random weights: they cost
the same as real ones) and (b) SmolLM2-135M, all measured in this run on the same ~20-token
prompt, 64 new tokens per request (temperature 0.8), streamed:
- ours: `bentoml serve services.autocomplete.service:Autocomplete` over HTTP (continuous batching),
  with each backend: llama.cpp (the default for both models: the GGUF the store entry holds,
  SmolLM2's re-encoded as Q8_0, GPT-2's written at import) and torch (int8 weights on CPUs
  without bf16)
- llama-server: llama.cpp's own server (built by bench_typing.py from the llama.cpp source
  vendored in the pinned llama-cpp-python sdist) on the very GGUF file our llama.cpp backend
  loads, with 16 slots (`-np 16`: it decodes up to 16 requests together, as our engine
  batches them), over HTTP. If it cannot be built or started, the benchmark fails.
- naive: in-process `model.generate`, one request at a time (a lock, as a naive server has)
Every server computes with the same number of threads (`--threads`, default one per core):
ours through MODELPORT_AUTOCOMPLETE_THREADS, llama-server through `-t`/`-tb`; the naive loop
through torch's OpenMP threads.
Columns: tokens/s for one stream; aggregate tokens/s at 1, 4 and 16 concurrent clients, and
as a ratio to llama-server's; time to first token p50/p95 at 1 client (and p50 at 16); server
RSS after the load (ours: the whole `bentoml serve` process tree, BentoML's parent process
included). Targets (issue 3): one stream >= 0.5x llama.cpp; 16 clients >= llama.cpp; TTFT p50
< 100 ms for a 20-token prompt; RSS < 1.2 GB for GPT-2 124M. Numbers from a shared, noisy
machine: compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from services.autocomplete.settings import tune_openmp

tune_openmp()  # as the service does: the naive baseline gets the same OpenMP threads

from tests.autocomplete_fixtures import SERVICE, gpt2_tokenizer
from tests.benchmarks.bench_typing import build_llama_server, llama_server
from tests.benchmarks.machine import describe_machine
from tests.servers import serve

PROMPT = "The history of the old harbour town begins in the twelfth century, when fishermen from the"
NEW_TOKENS = 64
CONCURRENCY = (1, 4, 16)
ROUNDS = {1: 4, 4: 1, 16: 1}  # requests per client: one client runs several, for TTFT p95
Result = dict[str, float]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _stream_once(
    http: httpx.AsyncClient, url: str, model: str | None, count: Callable[[str], int]
) -> tuple[float, int]:
    body = {"prompt": PROMPT, "max_tokens": NEW_TOKENS, "temperature": 0.8, "stream": True}
    if model:
        body["model"] = model
    started, first, text = time.perf_counter(), None, []
    async with http.stream("POST", f"{url}/v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            piece = "".join(c.get("text", "") for c in json.loads(line[6:])["choices"])
            if piece and first is None:
                first = time.perf_counter() - started
            text.append(piece)
    return first or float("nan"), count("".join(text))


def http_load(url: str, model: str | None, count: Callable[[str], int]) -> Result:
    async def run() -> Result:
        result: Result = {}
        async with httpx.AsyncClient(timeout=600) as http:
            await _stream_once(http, url, model, count)  # warm-up

            async def client(rounds: int) -> list[tuple[float, int]]:
                return [await _stream_once(http, url, model, count) for _ in range(rounds)]

            for clients in CONCURRENCY:
                started = time.perf_counter()
                runs = [
                    run
                    for runs in await asyncio.gather(*(client(ROUNDS[clients]) for _ in range(clients)))
                    for run in runs
                ]
                elapsed = time.perf_counter() - started
                result[f"tps{clients}"] = sum(tokens for _, tokens in runs) / elapsed
                ttfts = [ttft for ttft, _ in runs]
                result[f"ttft50_{clients}"], result[f"ttft95_{clients}"] = (
                    percentile(ttfts, 0.5),
                    percentile(ttfts, 0.95),
                )
        return result

    return asyncio.run(run())


def tree_rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def measure_ours(tag: str, count: Callable[[str], int], backend: str, threads: int) -> Result:
    env = {
        "MODELPORT_AUTOCOMPLETE_MODEL": tag,
        "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1",
        "MODELPORT_AUTOCOMPLETE_BACKEND": backend,
        "MODELPORT_AUTOCOMPLETE_THREADS": str(threads),
    }
    with serve(SERVICE, env=env, startup_timeout=600) as url:
        result = http_load(url, None, count)
        servers = [p for p in psutil.Process().children() if "bentoml" in " ".join(p.cmdline())]
        result["rss"] = sum(tree_rss_mb(p.pid) for p in servers) if servers else float("nan")
    return result


def measure_llama(binary: Path, gguf: Path, count: Callable[[str], int], threads: int) -> Result:
    # 16 slots of 256 KV cells: every client of the 16-client row decodes in the same batch.
    with llama_server(
        binary, gguf, slots=max(CONCURRENCY), context=256 * max(CONCURRENCY), threads=threads
    ) as url:
        result = http_load(url, None, count)
        [process] = [p for p in psutil.Process().children() if Path(p.exe()) == binary.resolve()]
        result["rss"] = tree_rss_mb(process.pid)
    return result


def measure_naive(model_dir: Path, count: Callable[[str], int], threads: int) -> Result:
    """`generate` behind a lock, one request at a time, as a naive server serves them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor

    torch.set_num_threads(threads)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    lock = threading.Lock()

    class FirstToken(LogitsProcessor):
        def __init__(self) -> None:
            self.at: float | None = None

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            self.at = self.at or time.perf_counter()
            return scores

    def one() -> tuple[float, int]:
        started, first = time.perf_counter(), FirstToken()
        with lock, torch.inference_mode():
            out = model.generate(
                ids,
                max_new_tokens=NEW_TOKENS,
                do_sample=True,
                temperature=0.8,
                logits_processor=[first],
                pad_token_id=tokenizer.eos_token_id,
            )
        return (first.at or started) - started, count(tokenizer.decode(out[0][ids.shape[1] :]))

    one()  # warm-up
    result: Result = {"rss": psutil.Process().memory_info().rss / 2**20}
    for clients in CONCURRENCY:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            runs = list(pool.map(lambda _: one(), range(clients * ROUNDS[clients])))
        result[f"tps{clients}"] = sum(t for _, t in runs) / (time.perf_counter() - started)
        ttfts = [t for t, _ in runs]
        result[f"ttft50_{clients}"], result[f"ttft95_{clients}"] = (
            percentile(ttfts, 0.5),
            percentile(ttfts, 0.95),
        )
    return result


def gpt2_shaped(workdir: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    target = workdir / "gpt2-124m-random"
    GPT2LMHeadModel(GPT2Config()).save_pretrained(target)  # GPT2Config() is GPT-2 124M's shape
    gpt2_tokenizer(workdir).save_pretrained(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--llama-server", type=Path, help="a llama-server binary (default: bench_typing.py builds one, once)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 2,
        help="threads every server computes with [default: one per core]",
    )
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--models", default="gpt2,smollm2", help="comma-separated: gpt2 (the GPT-2 124M shape), smollm2"
    )
    args = parser.parse_args()
    # Models, bentoml's store and servers' files live in one scratch folder, removed at the end.
    with tempfile.TemporaryDirectory(prefix="bench-autocomplete-") as scratch:
        os.environ.setdefault("BENTOML_HOME", f"{scratch}/bentoml")
        os.environ.update({"BENTOML_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"})
        run(args, Path(scratch) / "work")


def run(args: argparse.Namespace, work: Path) -> None:
    from transformers import AutoTokenizer

    from services.autocomplete.causal_lm import GGUF_NAME
    from services.core.cli import register_model_kinds
    from services.core.model_store import import_model, resolve

    register_model_kinds()  # the store knows model kinds by registration, as the CLI does
    from services.core.sources import LocalFile

    work.mkdir()
    binary = args.llama_server or build_llama_server()  # fails loudly: no baseline, no table
    wanted = set(args.models.split(","))
    models = {}
    if "gpt2" in wanted:
        gpt2_dir = gpt2_shaped(work)
        models["GPT-2 124M shape"] = (
            import_model("gpt2-124m-random", LocalFile(str(gpt2_dir)), kind="causal-lm").tag,
            gpt2_dir,
        )
    if "smollm2" in wanted:
        smol = import_model("smollm2-135m")
        models["SmolLM2-135M"] = (smol.tag, smol.path)
    rows: list[tuple[str, str, Result]] = []
    for label, (tag, model_dir) in models.items():
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        count = lambda text, t=tokenizer: len(t(text, add_special_tokens=False).input_ids)  # noqa: E731
        gguf = Path(resolve(tag).path) / GGUF_NAME  # what our llama.cpp backend loads
        assert gguf.is_file(), f"{tag} has no {GGUF_NAME}: llama-server would have nothing to serve"
        rows.append((label, "llama-server (llama.cpp)", measure_llama(binary, gguf, count, args.threads)))
        print(label, *rows[-1][1:], flush=True)
        for backend in ("llama.cpp", "torch"):
            rows.append((label, f"ours: {backend} backend", measure_ours(tag, count, backend, args.threads)))
            print(label, *rows[-1][1:], flush=True)
        if not args.skip_naive:
            rows.append((label, "naive transformers", measure_naive(Path(model_dir), count, args.threads)))
            print(label, *rows[-1][1:], flush=True)
    import torch  # the servers run in this Python: its torch build sets their RSS (CPU or CUDA)

    table = Table(
        title=f"Autocompleter, {NEW_TOKENS} new tokens per request, {args.threads} threads "
        f"per server, torch {torch.__version__} (tokens/s; ms); a shared machine\n"
        f"{describe_machine()}"
    )
    for column in (
        "model",
        "server",
        "1 stream tok/s",
        "4 clients tok/s",
        "16 clients tok/s",
        "1 / 16 vs llama-server",
        "TTFT p50",
        "TTFT p95",
        "TTFT p50 @16",
        "RSS MB",
    ):
        table.add_column(column, justify="left" if column in ("model", "server") else "right")
    llama = {label: r for label, server, r in rows if server.startswith("llama-server")}
    for label, server, r in rows:
        ratio = f"{r['tps1'] / llama[label]['tps1']:.2f}x / {r['tps16'] / llama[label]['tps16']:.2f}x"
        table.add_row(
            label,
            server,
            f"{r['tps1']:.1f}",
            f"{r['tps4']:.1f}",
            f"{r['tps16']:.1f}",
            ratio,
            f"{r['ttft50_1'] * 1000:.0f}",
            f"{r['ttft95_1'] * 1000:.0f}",
            f"{r['ttft50_16'] * 1000:.0f}",
            f"{r['rss']:.0f}",
        )
    Console(width=170).print(table)


if __name__ == "__main__":
    main()
