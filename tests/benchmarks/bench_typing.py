"""As-you-type benchmark: our autocompleter against llama.cpp's own `llama-server`, in one run.

    python tests/benchmarks/bench_typing.py                       # builds llama-server once (~15 min)
    python tests/benchmarks/bench_typing.py --llama-server PATH   # a llama-server you built
    python tests/benchmarks/bench_typing.py --suggest 3x6,1x6,3x8  # suggestions x tokens to compare

Each editor types an email (a different one per editor, ~400 characters) and asks for a
suggestion every 6 characters: 1 editor, then 4 at once. Each asks as soon as its previous
answer came (an editor waits for the answer to the text so far, then types on), so a slow
server is asked less often, not queued up. Rows:
- llama-server: `/v1/completions`, an 8-token greedy continuation of everything typed so far,
  with `cache_prompt: true`, `-np 4` slots, on the same GGUF file our server serves
- ours, continuation: the same request to our `/v1/completions`
- ours, suggest: `/v1/suggest` with the editor's `session`, for each n (suggestions asked:
  rows decoded) x tokens (`MODELPORT_AUTOCOMPLETE_SUGGEST_TOKENS`) setting asked
Columns: p50/p95 latency, the p50 as a ratio of llama-server's continuation p50 at the same
editors (goal: continuation <= 1.0x, suggest <= 1.5x), the share of prompt tokens served from
the prefix cache (ours), and quality: how often the first word offered (a suggestion, or the
continuation) is the word the editor then typed ("next word"), the best of the n for suggest.

llama-server is built from the llama.cpp source that llama-cpp-python's sdist vendors (the
version pyproject.toml pins), into ~/.cache/modelport/llama-server/. Every server gets one
thread per core; all are up for the run, and one is measured at a time, row after row, for
`--rounds` rounds (a row's p50: the median of its rounds'). Numbers are from a shared machine:
compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.benchmarks.machine import describe_machine
from tests.servers import free_port, serve, wait_ready

SERVICE = "services.autocomplete.service:Autocomplete"
MODEL = "smollm2-135m"
EVERY_CHARS = 6  # a request every this many characters typed
CONTINUATION_TOKENS = 8
EMAILS = (
    "Dear Ms Patel, thank you for your letter of the third of May about the delivery of the garden "
    "chairs. I am sorry to hear that two of them arrived with broken legs. We will send two new "
    "chairs next week, and our driver will take the broken ones away at the same time. Please let "
    "me know which day suits you best. With kind regards, John Miller, Customer Service",
    "Hi team, a quick update on the project before the weekend. The new website went live on "
    "Tuesday and the first numbers look good: more visitors than last month and fewer complaints "
    "about the checkout. Next week we will fix the search page and start on the mobile app. Thanks "
    "to everyone for the hard work, and have a good weekend. Best, Anna",
    "Hello Mark, I hope you are well. I am writing to ask whether we could move our meeting on "
    "Thursday to the afternoon, as I have to take my daughter to the doctor in the morning. Would "
    "three o'clock work for you? If not, I am also free on Friday morning. Sorry for the change "
    "and thank you for your patience. Kind regards, Laura",
    "Dear Sir or Madam, I would like to complain about the train from London to Leeds on Monday "
    "evening. It was more than two hours late, the heating did not work and nobody told us what "
    "was going on. I would like a full refund of my ticket, which I have attached to this email. "
    "I look forward to hearing from you soon. Yours faithfully, Peter Brown",
)


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # seconds per request
    next_word_hits: int = 0
    asked: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def median_p50(rounds: list[Run]) -> float:
    return statistics.median(run.p(0.5) for run in rounds)


def trace(text: str) -> list[tuple[str, str]]:
    """(typed so far, what the editor types next) every EVERY_CHARS characters."""
    return [(text[:end], text[end:]) for end in range(EVERY_CHARS, len(text), EVERY_CHARS)]


def next_word(offered: str, truth: str) -> bool:
    """Does `offered` start with the next word the editor types (finishing the one being typed)?"""
    words = re.match(r"\s*\S+", truth)
    first = re.match(r"\s*\S+", offered)
    if not words or not first:
        return False
    return first.group().strip(".,!?") == words.group().strip(".,!?")


async def type_email(http: httpx.AsyncClient, kind: str, text: str, editor: int, run: Run, n: int) -> None:
    for typed, truth in trace(text):
        if kind == "suggest":
            body: dict[str, object] = {"text": typed, "n": n, "session": f"editor-{editor}"}
            path = "/v1/suggest"
        else:
            body = {"prompt": typed, "max_tokens": CONTINUATION_TOKENS, "temperature": 0}
            if kind == "llama-server":
                body["cache_prompt"] = True
            path = "/v1/completions"
        started = time.perf_counter()
        response = await http.post(path, json=body)
        run.latencies.append(time.perf_counter() - started)
        response.raise_for_status()
        answer = response.json()
        run.asked += 1
        if kind == "suggest":
            offered = [s["text"] for s in answer["suggestions"]]
        else:
            offered = [answer["choices"][0]["text"]]
            usage = answer.get("usage") or {}
            run.prompt_tokens += usage.get("prompt_tokens", 0)
            run.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        run.next_word_hits += any(next_word(o, truth) for o in offered)


def measure(url: str, kind: str, editors: int, n: int = 1) -> Run:
    async def go() -> Run:
        run = Run()
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            await type_email(http, kind, "Warm up: " + EMAILS[-1][:60], 99, Run(), n)
            await asyncio.gather(*(type_email(http, kind, EMAILS[e], e, run, n) for e in range(editors)))
        return run

    return asyncio.run(go())


def llama_cmake_args() -> list[str]:
    """The Makefile's flags for llama.cpp (without AMX where the CPU reports it: a VM that listed
    amx_tile died on its first tile instruction), so both servers run the same kernels."""
    printed = subprocess.run(
        ["make", "-s", "-C", str(REPO), "llama-cmake-args"], check=True, capture_output=True, text=True
    ).stdout
    return shlex.split(printed)


def build_llama_server() -> Path:
    """llama-server from the llama.cpp source vendored in the pinned llama-cpp-python sdist."""
    pin = re.search(r"llama-cpp-python==([0-9.]+)", (REPO / "pyproject.toml").read_text())
    assert pin, "pyproject.toml pins llama-cpp-python"
    version = pin.group(1)
    binary = Path.home() / ".cache/modelport/llama-server" / version / "llama-server"
    if binary.exists():
        return binary
    with tempfile.TemporaryDirectory() as work:
        print(
            f"building llama-server from llama-cpp-python {version}'s vendored llama.cpp "
            "(once; ~15 min on 2 cores) ...",
            flush=True,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                work,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        [sdist] = Path(work).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        source = next(Path(work).glob("*/vendor/llama.cpp"))
        build = source / "build"
        subprocess.run(
            [
                "cmake",
                "-S",
                str(source),
                "-B",
                str(build),
                "-DCMAKE_BUILD_TYPE=Release",
                "-DLLAMA_BUILD_SERVER=ON",
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DGGML_NATIVE=ON",
                "-DBUILD_SHARED_LIBS=OFF",
                *llama_cmake_args(),  # as the Makefile builds our llama.cpp: the same kernels on both sides
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / "bin" / "llama-server", binary)
    return binary


@contextmanager
def llama_server(
    binary: Path, gguf: Path, *, slots: int = 4, context: int = 8192, threads: int | None = None
) -> Iterator[str]:
    """llama-server on `gguf`: `slots` sequences decoded together (`-np`), sharing `context`
    KV cells, `threads` for both decoding and prompts (default: one per core)."""
    port = free_port()
    threads = threads or os.cpu_count() or 2
    process = subprocess.Popen(
        [
            str(binary),
            "-m",
            str(gguf),
            "-np",
            str(slots),
            "-c",
            str(context),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(
            url,
            path="/health",
            timeout=120,
            failed=lambda: "llama-server exited" if process.poll() is not None else None,
        )
        yield url
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-server", type=Path, help="a llama-server binary (default: build one)")
    parser.add_argument(
        "--suggest",
        default="3x6,1x6,3x8",
        help="/v1/suggest settings to measure, n x tokens, comma-separated",
    )
    parser.add_argument("--editors", default="1,4")
    parser.add_argument("--rounds", type=int, default=3, help="times each row is measured, in turn")
    args = parser.parse_args()
    from services.autocomplete import model_kinds  # noqa: F401 - registers the causal-lm kind
    from services.core.model_store import import_model

    gguf = Path(import_model(MODEL).path) / "model.gguf"
    binary = args.llama_server or build_llama_server()
    editors = [int(e) for e in args.editors.split(",")]
    # Every server is up for the whole run, and each round measures every row once, in turn:
    # a slow minute on a shared machine then hits all rows alike. A row's p50 is the median
    # of its rounds' p50s; its p95 pools the rounds.
    jobs: list[tuple[str, str, str, int]] = [
        ("llama-server, continuation", "llama", "llama-server", 1),
        ("ours, continuation", "ours-6", "continuation", 1),
    ]
    token_settings = set()
    for setting in args.suggest.split(","):
        n, tokens = setting.split("x")
        token_settings.add(tokens)
        jobs.append((f"ours, suggest n={n} x {tokens} tokens", f"ours-{tokens}", "suggest", int(n)))
    runs: dict[tuple[str, int], list[Run]] = {(name, e): [] for name, *_ in jobs for e in editors}
    with ExitStack() as servers:
        urls = {"llama": servers.enter_context(llama_server(binary, gguf))}
        for tokens in token_settings | {"6"}:
            env = {"MODELPORT_AUTOCOMPLETE_MODEL": MODEL, "MODELPORT_AUTOCOMPLETE_SUGGEST_TOKENS": tokens}
            urls[f"ours-{tokens}"] = servers.enter_context(serve(SERVICE, env=env))
        for _ in range(args.rounds):
            for e in editors:
                for name, server, kind, n in jobs:
                    runs[name, e].append(measure(urls[server], kind, e, n))
    rows = [(name, e, runs[name, e]) for name, *_ in jobs for e in editors]

    baseline = {e: median_p50(r) for name, e, r in rows if name.startswith("llama-server")}
    table = Table(
        title=f"As-you-type, SmolLM2-135M (Q8_0 GGUF), a request every {EVERY_CHARS} "
        f"characters\n{describe_machine()}"
    )
    for column in (
        "server",
        "editors",
        "requests",
        "p50 ms",
        "p95 ms",
        "p50 / llama-server",
        "prompt from cache",
        "next word",
    ):
        table.add_column(column, justify="left" if column == "server" else "right")
    for name, e, rounds in rows:
        pooled = Run()
        for run in rounds:
            pooled.latencies += run.latencies
            pooled.asked += run.asked
            pooled.next_word_hits += run.next_word_hits
            pooled.prompt_tokens += run.prompt_tokens
            pooled.cached_tokens += run.cached_tokens
        cache = (
            f"{pooled.cached_tokens / pooled.prompt_tokens:.0%}"
            if pooled.prompt_tokens and name.startswith("ours")
            else "-"
        )
        p50 = median_p50(rounds)
        table.add_row(
            name,
            str(e),
            str(pooled.asked),
            f"{p50:.0f}",
            f"{pooled.p(0.95):.0f}",
            f"{p50 / baseline[e]:.2f}x",
            cache,
            f"{pooled.next_word_hits / pooled.asked:.0%}",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
