"""Autocompleter benchmark: our server vs llama.cpp's server vs a naive transformers loop.

    python tests/benchmarks/bench_autocomplete.py                        # ~10 minutes on 2 cores
    python tests/benchmarks/bench_autocomplete.py --llama-python /tmp/venv-llama/bin/python
    python tests/benchmarks/bench_autocomplete.py --models smollm2 --skip-naive   # some rows
    MODELPORT_AUTOCOMPLETE_THREADS=1 python tests/benchmarks/bench_autocomplete.py  # any setting

Prints one table. For each model, (a) a GPT-2 124M-shaped model (random weights: they cost
the same as real ones) and (b) SmolLM2-135M, all measured in this run on the same ~20-token
prompt, 64 new tokens per request (temperature 0.8), streamed:
- ours: `bentoml serve services.autocomplete.service:Autocomplete` over HTTP (continuous batching),
  with each backend: llama.cpp (the default for both models: SmolLM2's GGUF, and the GGUF
  that the import writes for GPT-2) and torch (int8 weights on CPUs without bf16)
- llama.cpp: `python -m llama_cpp.server` (llama-cpp-python[server]) on the same GGUF
  (SmolLM2 only: there is no GGUF of the GPT-2 shape here), over HTTP
- naive: in-process `model.generate`, one request at a time (a lock, as a naive server has)
Columns: tokens/s for one stream; aggregate tokens/s at 1, 4 and 16 concurrent clients;
time to first token p50/p95 at 1 client (and p50 at 16); server RSS after the load (ours:
the whole `bentoml serve` process tree, BentoML's parent process included).
Targets (issue 3): one stream >= 0.5x llama.cpp; 16 clients >= llama.cpp; TTFT p50 < 100 ms
for a 20-token prompt; RSS < 1.2 GB for GPT-2 124M. Numbers from a shared, noisy machine:
compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from services.autocomplete.settings import tune_openmp  # noqa: E402

tune_openmp()  # as the service does: the naive baseline gets the same OpenMP threads

from tests.autocomplete_fixtures import SERVICE, gpt2_tokenizer  # noqa: E402
from tests.servers import free_port, serve, wait_ready  # noqa: E402

PROMPT = "The history of the old harbour town begins in the twelfth century, when fishermen from the"
NEW_TOKENS = 64
CONCURRENCY = (1, 4, 16)
ROUNDS = {1: 4, 4: 1, 16: 1}  # requests per client: one client runs several, for TTFT p95
Result = dict[str, float]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _stream_once(http: httpx.AsyncClient, url: str, model: str | None,
                       count: Callable[[str], int]) -> tuple[float, int]:
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
                runs = [run for runs in await asyncio.gather(*(client(ROUNDS[clients])
                                                               for _ in range(clients)))
                        for run in runs]
                elapsed = time.perf_counter() - started
                result[f"tps{clients}"] = sum(tokens for _, tokens in runs) / elapsed
                ttfts = [ttft for ttft, _ in runs]
                result[f"ttft50_{clients}"], result[f"ttft95_{clients}"] = (
                    percentile(ttfts, 0.5), percentile(ttfts, 0.95))
        return result

    return asyncio.run(run())


def tree_rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def measure_ours(tag: str, count: Callable[[str], int], backend: str) -> Result:
    env = {"MODELPORT_AUTOCOMPLETE_MODEL": tag, "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1",
           "MODELPORT_AUTOCOMPLETE_BACKEND": backend}
    with serve(SERVICE, env=env, startup_timeout=600) as url:
        result = http_load(url, None, count)
        servers = [p for p in psutil.Process().children() if "bentoml" in " ".join(p.cmdline())]
        result["rss"] = sum(tree_rss_mb(p.pid) for p in servers) if servers else float("nan")
    return result


@contextmanager
def llama_server(python: str, gguf: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(gguf),
                                "--n_threads", str(os.cpu_count() or 2), "--n_ctx", "2048",
                                "--host", "127.0.0.1", "--port", str(port),
                                # By default a new request interrupts the one streaming.
                                "--interrupt_requests", "False"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, path="/v1/models", timeout=120,
                   failed=lambda: "llama_cpp.server exited" if process.poll() is not None else None)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def measure_llama(python: str, gguf: Path, count: Callable[[str], int]) -> Result:
    with llama_server(python, gguf) as (url, pid):
        result = http_load(url, None, count)
        result["rss"] = tree_rss_mb(pid)
    return result


def measure_naive(model_dir: Path, count: Callable[[str], int]) -> Result:
    """`generate` behind a lock, one request at a time, as a naive server serves them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor

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
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=True, temperature=0.8,
                                 logits_processor=[first], pad_token_id=tokenizer.eos_token_id)
        return (first.at or started) - started, count(tokenizer.decode(out[0][ids.shape[1]:]))

    one()  # warm-up
    result: Result = {"rss": psutil.Process().memory_info().rss / 2**20}
    for clients in CONCURRENCY:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            runs = list(pool.map(lambda _: one(), range(clients * ROUNDS[clients])))
        result[f"tps{clients}"] = sum(t for _, t in runs) / (time.perf_counter() - started)
        ttfts = [t for t, _ in runs]
        result[f"ttft50_{clients}"], result[f"ttft95_{clients}"] = (
            percentile(ttfts, 0.5), percentile(ttfts, 0.95))
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
    parser.add_argument("--llama-python", default="/tmp/venv-llama/bin/python",
                        help="a Python with llama-cpp-python[server] installed")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--models", default="gpt2,smollm2",
                        help="comma-separated: gpt2 (the GPT-2 124M shape), smollm2")
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
    from services.core.model_store import CATALOG, import_model, resolve
    register_model_kinds()  # the store knows model kinds by registration, as the CLI does
    from services.core.sources import LocalFile

    work.mkdir()
    wanted = set(args.models.split(","))
    models = {}
    if "gpt2" in wanted:
        gpt2_dir = gpt2_shaped(work)
        models["GPT-2 124M shape"] = (import_model("gpt2-124m-random", LocalFile(str(gpt2_dir)),
                                                   kind="causal-lm").tag, gpt2_dir, None)
    if "smollm2" in wanted:
        smol = import_model("smollm2-135m")
        models["SmolLM2-135M"] = (smol.tag, smol.path,
                                  CATALOG["smollm2-135m"].source.fetch(work))
    rows: list[tuple[str, str, Result]] = []
    for label, (tag, model_dir, gguf_file) in models.items():
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        count = lambda text, t=tokenizer: len(t(text, add_special_tokens=False).input_ids)  # noqa: E731
        has_gguf = (Path(resolve(tag).path) / GGUF_NAME).is_file()  # GPT-2's: written at import
        for backend in ("llama.cpp", "torch") if has_gguf else ("torch",):
            rows.append((label, f"ours: {backend} backend", measure_ours(tag, count, backend)))
            print(label, *rows[-1][1:], flush=True)
        if gguf_file is not None and not args.skip_llama and Path(args.llama_python).exists():
            rows.append((label, "llama.cpp server", measure_llama(args.llama_python, gguf_file, count)))
            print(label, *rows[-1][1:], flush=True)
        if not args.skip_naive:
            rows.append((label, "naive transformers", measure_naive(Path(model_dir), count)))
            print(label, *rows[-1][1:], flush=True)
    import torch  # the servers run in this Python: its torch build sets their RSS (CPU or CUDA)

    table = Table(title=f"Autocompleter, {NEW_TOKENS} new tokens per request, "
                        f"{os.cpu_count()} CPU cores, torch {torch.__version__} (tokens/s; ms)")
    for column in ("model", "server", "1 stream tok/s", "4 clients tok/s", "16 clients tok/s",
                   "TTFT p50", "TTFT p95", "TTFT p50 @16", "RSS MB"):
        table.add_column(column, justify="left" if column in ("model", "server") else "right")
    for label, server, r in rows:
        table.add_row(label, server, f"{r['tps1']:.1f}", f"{r['tps4']:.1f}", f"{r['tps16']:.1f}",
                      f"{r['ttft50_1'] * 1000:.0f}", f"{r['ttft95_1'] * 1000:.0f}",
                      f"{r['ttft50_16'] * 1000:.0f}", f"{r['rss']:.0f}")
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
