"""Every setting of the autocompleter, in one place, each overridable by an environment
variable named `MODELPORT_AUTOCOMPLETE_<FIELD>`:

    MODELPORT_AUTOCOMPLETE_MODEL=gpt2 bentoml serve services.autocomplete.service:Autocomplete --port 3001
    MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL=1   # a missing model is a start-up error, no fallback
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from services.core.env_settings import read_env

# The model served out of the box: it imports offline (`modelport models import --defaults`).
OFFLINE_DEFAULT_MODEL = "smollm2-135m"
# How long torch's OpenMP threads spin, waiting for the next parallel region, before they sleep.
OPENMP_SPINCOUNT = "3000"


def tune_openmp() -> None:
    """Set OpenMP's wait policy for torch; call before torch is imported (libgomp reads it once).

    Sleeping at once (OMP_WAIT_POLICY=PASSIVE) pays a wake-up on each of a forward pass's
    hundreds of parallel regions; libgomp's default (300,000 spins) starves the other threads
    when the cores are shared. Measured on 2 cores with tests/benchmarks/bench_autocomplete.py,
    3,000 spins against passive: time to first token p50 88 vs 100 ms (GPT-2) and 114 vs
    129 ms (SmolLM2), 16 clients 141 vs 124 and 126 vs 99 tokens/s. With another process
    keeping one core busy (first token, engine alone): 145 ms, passive 128, libgomp's default
    268. Setting GOMP_SPINCOUNT or OMP_WAIT_POLICY yourself overrides this.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)


@dataclass(frozen=True)
class Settings:
    model: str = OFFLINE_DEFAULT_MODEL  # model-store name or name:version (any causal-lm entry)
    require_model: bool = False  # True: no fallback to the offline default when `model` is missing
    # What runs the model: "llama.cpp" runs an entry's GGUF (SmolLM2: 3.5x faster per stream
    # than torch on 2 cores); "torch" runs transformers (any causal LM, `dtype` below). "auto"
    # is llama.cpp for entries with a GGUF (imported from one, or GPT-2, written as one at
    # import) when llama-cpp-python is installed, and torch for everything else.
    backend: str = "auto"
    kv_cache_tokens: int = 8192  # llama.cpp: KV cells shared by all running sequences
    # Where the model runs: "auto" is the GPU when there is one (torch: CUDA; llama.cpp: when
    # built with GPU offload, as the GPU image builds it: every layer and the KV cache on it),
    # else the CPU. "cpu" keeps it on the CPU; "cuda" makes a missing GPU a start-up error.
    device: str = "auto"
    # torch's weights in memory: "auto" is bfloat16 on a GPU and where the CPU computes in it natively
    # (AVX512-BF16, AMX: ~1.5x faster than float32) and "int8" elsewhere: int8 linear weights, 1.5-1.9x faster
    # decoding than float32 at +0.2% perplexity (services/autocomplete/int8_weights.py).
    # "float32" gives the exact outputs of transformers.
    dtype: str = "auto"
    threads: int = 0  # threads that run the model; 0 = one per core
    max_batch_size: int = 32  # sequences decoded together in one forward pass
    # Prompt tokens prefilled per engine step, beside the running rows' next tokens (chunked
    # prefill, as vLLM's max_num_batched_tokens and llama-server's batch): a long prompt is
    # prefilled over several steps, so the running streams keep getting tokens meanwhile.
    # Smaller: shorter gaps between a stream's tokens; larger: a long prompt's first token sooner.
    prefill_chunk_tokens: int = 256
    max_prompt_tokens: int = 1024  # longer prompts are refused (or left-truncated on request)
    # A longer prompt string is refused (413) before it is tokenised, which costs ~0.8 s a MB on
    # one core (in a worker thread, not the event loop). 256 Ki characters is ~60k tokens of
    # English: room for a long document sent with truncate_prompt_tokens.
    max_prompt_chars: int = 256 * 1024
    max_tokens_limit: int = 512  # the most tokens one request may ask to generate
    max_n: int = 8  # choices per prompt
    max_prompts: int = 16  # prompts in one request
    # A request body larger than this is answered 413 before it is parsed (services/core/body_limit.py).
    # The largest request within the limits above: 16 prompts x 1,024 tokens, at worst ~12 bytes
    # a token as JSON (non-ASCII text escaped \uXXXX; token ids are <= 7: "50256, "), is ~200 KB,
    # plus stop strings and options; 1 MiB leaves 5x room, e.g. for a long document sent with
    # truncate_prompt_tokens (~250k tokens of English text).
    max_request_bytes: int = 1024 * 1024
    request_timeout_s: float = 60.0  # a generation still running after this is stopped (504)
    max_in_flight: int = 32  # requests generating at once: one full batch of single-choice requests
    max_queue: int = 32  # requests waiting their turn; more: 429 + Retry-After at once
    max_queue_wait_s: float = 10.0  # a request still waiting after this is answered 429
    max_waiting_rows: int = 256  # sequences (prompts x n) queued in the engine for a batch slot; more: 429
    # Tokens generated per suggestion (~4 words): short, so it is cheap per keystroke; 8 costs
    # ~1.3x as much (tests/benchmarks/bench_typing.py). A request's `n` sets how many rows decode.
    suggest_tokens: int = 6
    # A suggestion stops after its last word the model gives this probability (all of it so far)
    # or more; its first word always stays. A wrong tail costs the whole suggestion (Tab takes it
    # all), so past even odds the next words are left for the next request (issue 23's typist:
    # services/autocomplete/README.md, "Keystroke savings"). 0 offers all `suggest_tokens`.
    suggest_min_prob: float = 0.5
    # Memory for user versions' LoRA adapters (llama.cpp), loaded on first use; past it the least
    # recently used idle one is unloaded. A SmolLM2-135M rank-16 version is ~10 MB: 512 MB holds
    # ~50 (services/autocomplete/README.md, "One process, many users").
    adapter_budget_mb: int = 512
    # A user version's phrase memory (the text it was fine-tuned on, phrase_memory.py) offers
    # what the user wrote after the same words before the model's suggestion. False: the
    # adapter alone.
    phrase_memory: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        return cls(**read_env(cls, "MODELPORT_AUTOCOMPLETE_", environ))
