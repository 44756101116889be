"""The engine on its llama.cpp backend, in-process, with the real SmolLM2-135M GGUF
(imported from its package into the test store, as the service serves it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.autocomplete.backends import load_backend, resolve_backend
from services.autocomplete.causal_lm import GGUF_NAME
from services.autocomplete.engine import Engine
from services.autocomplete.generation import GenerationStream
from services.autocomplete.sampling import SamplingParams
from services.autocomplete.settings import Settings
from tests.autocomplete_fixtures import record_passes

pytest.importorskip("llama_cpp", reason="llama-cpp-python is part of modelport[autocomplete]")
pytestmark = pytest.mark.slow
GREEDY = SamplingParams(max_tokens=8, temperature=0.0)
GREEDY_LONG = SamplingParams(max_tokens=40, temperature=0.0)


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    from services.core.model_store import import_model

    return Path(import_model("smollm2-135m").path)


def make_engine(model_dir: Path, **settings: object) -> Engine:
    return Engine(lambda: load_backend(model_dir, Settings(**settings)), max_batch_size=8)


@pytest.fixture(scope="module")
def engine(smollm2_dir: Path) -> Engine:
    return make_engine(smollm2_dir)


def complete(
    engine: Engine, prompts: list[str], params: SamplingParams, n: int = 1
) -> list[tuple[GenerationStream, dict[int, str]]]:
    """Run the prompts concurrently; each one's stream and its choices' texts."""

    async def one(prompt: str) -> tuple[GenerationStream, dict[int, str]]:
        stream = engine.submit([engine.encode(prompt)], params, n=n)
        done = await stream.collect()
        assert all(f.finish_reason in ("stop", "length") for f in done.values()), done
        return stream, {i: f.text for i, f in done.items()}

    async def every() -> list[tuple[GenerationStream, dict[int, str]]]:
        return await asyncio.gather(*(one(p) for p in prompts))

    return asyncio.run(every())


def test_the_gguf_entry_is_kept_for_llama_cpp_and_served_by_it(smollm2_dir: Path, engine: Engine) -> None:
    import gguf

    from services.core.model_store import resolve

    assert (smollm2_dir / GGUF_NAME).is_file() and (smollm2_dir / "config.json").is_file()
    # The package's Q4_1 is stored re-encoded as Q8_0 (llama.cpp batches Q8_0 well).
    field = gguf.GGUFReader(smollm2_dir / GGUF_NAME).fields["general.file_type"]
    assert gguf.LlamaFileType(int(field.parts[field.data[0]][0])) == gguf.LlamaFileType.MOSTLY_Q8_0
    assert resolve("smollm2-135m").info.metadata["gguf_type"] == "Q8_0 (re-encoded from Q4_1)"
    assert engine.backend.description.startswith("llama.cpp: 135M-parameter llama, Q8_0 weights")
    assert engine.kv_capacity == Settings().kv_cache_tokens


def test_greedy_completion_knows_a_capital(engine: Engine) -> None:
    [(_, texts)] = complete(engine, ["The capital of France is"], GREEDY)
    assert texts[0].strip().startswith("Paris"), texts


def test_concurrent_requests_are_decoded_in_shared_steps(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = record_passes(engine, monkeypatch)
    prompts = ["Once upon a time", "The weather today", "My favourite food is", "Dear Sir,"]
    results = complete(engine, prompts, SamplingParams(max_tokens=12, temperature=0.7, seed=1))
    assert all(stream.stats.completion_tokens >= 4 for stream, _ in results)
    widths = [running for _, running in passes]  # running rows fed per forward pass
    assert max(widths) == len(prompts)  # all four rows went through one llama_decode call
    assert len(widths) < 4 * 4, widths  # fewer steps than the rows' tokens


def test_a_new_prompt_is_prefilled_in_the_running_rows_pass(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = record_passes(engine, monkeypatch)  # (new prompts, running rows) per forward pass

    async def staggered() -> list[str]:
        first = engine.submit([engine.encode("Once upon a time")], GREEDY_LONG)
        while not passes:  # the first is running
            await asyncio.sleep(0.001)
        second = engine.submit([engine.encode("The capital of France is")], GREEDY)
        done = await asyncio.gather(first.collect(), second.collect())
        return [d[0].text for d in done]

    texts = asyncio.run(staggered())
    assert (1, 1) in passes, passes  # the second prompt rode along with the first's next token
    assert texts[1].strip().startswith("Paris"), texts


def test_n_choices_share_the_prompt_and_a_seed_repeats_them(engine: Engine) -> None:
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=7)
    [(_, first)] = complete(engine, ["In the morning I"], params, n=3)
    [(_, again)] = complete(engine, ["In the morning I"], params, n=3)
    assert first == again
    assert len(set(first.values())) > 1, first  # the choices differ (seeds seed + index)


def test_echo_with_logprobs_scores_every_prompt_token(engine: Engine) -> None:
    params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=2, echo=True)
    prompt = engine.encode("Paris is the capital of France")

    async def run() -> list[object]:
        done = await engine.submit([prompt], params).collect()
        return done[0].logprobs

    entries = asyncio.run(run())
    assert len(entries) == len(prompt) + 1
    assert entries[0].logprob is None and all(e.logprob <= 0 for e in entries[1:])
    assert all(len(e.top) == 2 for e in entries[1:])


def llama_backend(model_dir: Path, cached_sequences: int) -> object:
    from transformers import AutoTokenizer

    from services.autocomplete.llama_backend import LlamaCppBackend

    return LlamaCppBackend(
        model_dir / GGUF_NAME,
        AutoTokenizer.from_pretrained(model_dir),
        threads=2,
        kv_tokens=1024,
        max_sequences=4,
        cached_sequences=cached_sequences,
    )


def test_rows_that_leave_give_back_their_sequences_and_cells(smollm2_dir: Path) -> None:
    import llama_cpp

    backend = llama_backend(smollm2_dir, cached_sequences=0)
    prompts = [backend.encode("Hello there"), backend.encode("The sea is")]
    backend.prefill(prompts, every_position=False)
    backend.join([0, 0, 1])  # two choices of the first prompt (one copied), one of the second
    copied, kept = backend._sequences[1], backend._sequences[2]
    backend.decode_step([11, 12, 13])
    backend.keep([2])  # the first prompt's rows leave
    memory = backend._memory
    assert len(backend._free) == backend.max_sequences - 1
    assert backend._sequences == [kept] and backend._positions == [len(prompts[1]) + 1]
    assert llama_cpp.llama_memory_seq_pos_max(memory, copied) == -1  # its cells are free
    assert llama_cpp.llama_memory_seq_pos_max(memory, kept) == len(prompts[1])


TEXT = (
    "Dear Ms Patel, thank you for your letter of the third of May about the delivery of the "
    "garden chairs. I am sorry to hear that two of them arrived"
)


def last_logits(backend: object, prompt: list[int]) -> object:
    [logits] = backend.prefill([prompt], every_position=False)
    backend.join([0])
    backend.keep([])  # the row leaves at once (into the cache, if there is one)
    return logits[-1]


def test_a_prompt_that_continues_a_finished_one_starts_from_its_cells(smollm2_dir: Path) -> None:
    import torch

    cached = llama_backend(smollm2_dir, cached_sequences=4)
    fresh = llama_backend(smollm2_dir, cached_sequences=0)
    typed = cached.encode(TEXT)
    last_logits(cached, typed[:20])
    assert cached.cached_cells == 20
    previous = 20
    for length in (26, 31, len(typed)):  # keystrokes: the text so far grows
        logits = last_logits(cached, typed[:length])
        assert cached.reused_tokens == [previous]  # only the new tokens ran
        previous = length
        expected = last_logits(fresh, typed[:length])
        assert fresh.reused_tokens == [0]
        # Same next-token distribution as a whole prefill (float sums in another order).
        assert torch.allclose(logits, expected, atol=0.05), (logits - expected).abs().max()
        assert int(logits.argmax()) == int(expected.argmax())
    assert len(cached._cached) == 1  # each keystroke's sequence superseded the one before


def test_a_prompt_prefilled_in_chunks_matches_a_whole_prefill(smollm2_dir: Path) -> None:
    import torch

    from services.autocomplete.backend import PromptChunk

    chunked = llama_backend(smollm2_dir, cached_sequences=0)
    prompt = chunked.encode(TEXT)
    assert chunked.begin(7, prompt, every_position=False) == 0
    for start in range(0, len(prompt), 10):  # 10 tokens a step
        end = min(start + 10, len(prompt))
        [logits], _ = chunked.step([PromptChunk(7, prompt, start, end, False)], [])
        assert len(logits) == (1 if end == len(prompt) else 0)
    chunked.join([7, 7])  # two choices share the prompt's cells
    assert chunked._positions == [len(prompt)] * 2
    expected = last_logits(llama_backend(smollm2_dir, cached_sequences=0), prompt)
    assert torch.allclose(logits[-1], expected, atol=0.05), (logits[-1] - expected).abs().max()
    assert int(logits[-1].argmax()) == int(expected.argmax())


def test_cached_cells_make_way_for_new_requests(smollm2_dir: Path) -> None:
    backend = llama_backend(smollm2_dir, cached_sequences=4)
    for text in ("Once upon a time there was", "My favourite food is", "The sea is"):
        last_logits(backend, backend.encode(text))
    held = backend.cached_cells
    assert len(backend._cached) == 3 and held > 0
    oldest = len(backend.encode("Once upon a time there was"))
    assert backend.evict(1) == oldest and len(backend._cached) == 2  # the oldest went first
    assert backend.evict(10_000) == held - oldest
    assert backend.cached_cells == 0 and len(backend._free) == backend.max_sequences


def test_a_full_kv_cache_makes_requests_wait_their_turn(
    smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 256 cells; each request needs about 4 + 120: two fit at once, the third waits.
    small = make_engine(smollm2_dir, kv_cache_tokens=256)
    passes = record_passes(small, monkeypatch)
    params = SamplingParams(max_tokens=120, temperature=0.8, seed=3)
    results = complete(small, ["One", "Two", "Three"], params)  # all end: "stop" or "length"
    assert all(stream.stats.completion_tokens > 0 for stream, _ in results)
    assert max(running for _, running in passes) == 2  # never three rows in a cache with room for two


def test_backend_choice_follows_the_entry_and_the_setting(smollm2_dir: Path, tmp_path: Path) -> None:
    assert resolve_backend("auto", smollm2_dir) == "llama.cpp"
    assert resolve_backend("torch", smollm2_dir) == "torch"
    assert resolve_backend("auto", tmp_path) == "torch"  # no GGUF: a transformers model
    with pytest.raises(ValueError, match="has none"):
        resolve_backend("llama.cpp", tmp_path)
    with pytest.raises(ValueError, match="use auto or one of"):
        resolve_backend("vllm", smollm2_dir)
