"""The batching engine, in-process, on a tiny GPT-2 with the real GPT-2 tokenizer."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.autocomplete.backend import PromptChunk
from services.autocomplete.causal_lm import load_causal_lm
from services.autocomplete.engine import Engine, Load
from services.autocomplete.generation import Delta, GenerationStream
from services.autocomplete.sampling import SamplingParams
from services.autocomplete.torch_backend import TorchBackend
from services.core.admission import Busy
from tests.autocomplete_fixtures import record_passes, tiny_gpt2_dir

REPO = Path(__file__).resolve().parents[2]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    # float32: batched and solo runs then agree to the last bit that matters for argmax.
    model_dir = tiny_gpt2_dir(tmp_path_factory.mktemp("tiny") / "m")
    return Engine(lambda: TorchBackend(*load_causal_lm(model_dir, "float32")), max_batch_size=8)


async def _run(
    engine: Engine,
    prompt: str,
    params: SamplingParams,
    n: int = 1,
    delay: float = 0.0,
    timeout_s: float | None = None,
) -> dict[int, list[Delta]]:
    await asyncio.sleep(delay)
    choices: dict[int, list[Delta]] = {}
    async for delta in engine.submit([engine.encode(prompt)], params, n=n, timeout_s=timeout_s):
        choices.setdefault(delta.index, []).append(delta)
    return choices


def run(engine: Engine, prompt: str, params: SamplingParams, **kwargs: object) -> dict[int, str]:
    choices = asyncio.run(_run(engine, prompt, params, **kwargs))
    return {i: "".join(d.text for d in deltas) for i, deltas in choices.items()}


PROMPTS = ["Hello world", "The quick brown fox jumps over the lazy", "A", "Once upon a time, in"]


@pytest.mark.parametrize("stagger_s", [0.0, 0.02], ids=["prefilled-together", "joining-mid-batch"])
def test_batched_sequences_get_the_same_tokens_as_alone(engine: Engine, stagger_s: float) -> None:
    alone = [run(engine, p, GREEDY)[0] for p in PROMPTS]

    async def concurrently() -> list[dict[int, list[Delta]]]:
        return await asyncio.gather(
            *(_run(engine, p, GREEDY, delay=stagger_s * i) for i, p in enumerate(PROMPTS))
        )

    together = ["".join(d.text for d in c[0]) for c in asyncio.run(concurrently())]
    assert together == alone
    assert all(len(engine.encode(text)) >= 6 for text in alone)  # real text came out


def test_concurrent_requests_share_forward_passes(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The mechanism behind throughput at many clients (the benchmark measures the speed):
    # sequences decoded together take one model forward per step, not one each.
    calls = 0
    forward = engine.backend.model.forward

    def counting_forward(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine.backend.model, "forward", counting_forward)
    for prompt in PROMPTS:
        run(engine, prompt, GREEDY)
    alone, calls = calls, 0
    assert alone >= len(PROMPTS) * 6  # the counter sees the forwards (>= 6 tokens each)

    async def concurrently() -> None:
        await asyncio.gather(*(_run(engine, p, GREEDY) for p in PROMPTS))

    asyncio.run(concurrently())
    assert calls <= alone / 2, (calls, alone)


def test_same_seed_same_text_and_choices_differ(engine: Engine) -> None:
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=1234)
    first, second = run(engine, "Hello world", params, n=3), run(engine, "Hello world", params, n=3)
    assert first == second
    assert len(set(first.values())) == 3  # choice i uses seed + i
    assert run(engine, "Hello world", SamplingParams(max_tokens=10, seed=99)) != {0: first[0]}


def test_stop_string_spanning_tokens_ends_the_text_before_it(engine: Engine) -> None:
    full = run(engine, PROMPTS[1], GREEDY)[0]
    tokens = [engine.decode([t]) for t in engine.encode(full)]
    stop = (tokens[2] + tokens[3])[1:]  # starts inside token 2, ends in token 3
    cut = full.index(stop)
    choices = asyncio.run(
        _run(engine, PROMPTS[1], SamplingParams(max_tokens=12, temperature=0.0, stop=(stop,)))
    )
    assert "".join(d.text for d in choices[0]) == full[:cut]
    assert choices[0][-1].finish_reason == "stop"


@pytest.mark.parametrize("prefix", [" wonderf", " naïv", "étÉ"])
def test_a_continuation_starts_with_its_required_start(engine: Engine, prefix: str) -> None:
    # The random tiny model continues "It was" some other way; held to `prefix`, greedy and
    # sampled choices and the alternatives (first_token_rank) all write it first.
    assert not run(engine, "It was", GREEDY)[0].startswith(prefix)
    for params in [
        dataclasses.replace(GREEDY, prefix=prefix),
        SamplingParams(max_tokens=12, temperature=1.0, seed=7, prefix=prefix),
    ]:
        texts = run(engine, "It was", params, n=3)
        assert len(texts) == 3 and all(t.startswith(prefix) and len(t) > len(prefix) for t in texts.values())
    # The 2nd, 3rd, ... likeliest first tokens among those that agree with it; where fewer
    # agree than rows are asked, the rest end empty.
    texts = run(engine, "It was", dataclasses.replace(GREEDY, prefix=prefix, first_token_rank=2), n=3)
    written = [t for t in texts.values() if t]
    assert len(texts) == 3 and written and all(t.startswith(prefix) for t in written)


def test_rows_beyond_the_tokens_that_agree_with_a_required_start_end_empty(engine: Engine) -> None:
    # Few of GPT-2's tokens agree with "\u00e9t\u00c9" (pieces of "\u00e9"): of 8 alternatives
    # from the 2nd likeliest first token on, one per agreeing token but the first writes; the
    # rest stop at once, empty.
    agree = len(engine.prefixes.allowed("étÉ".encode()))
    assert 1 < agree < 8
    params = dataclasses.replace(GREEDY, prefix="étÉ", first_token_rank=2)
    choices = asyncio.run(_run(engine, "It was", params, n=8))
    texts = {i: "".join(d.text for d in deltas) for i, deltas in choices.items()}
    assert sum(bool(t) for t in texts.values()) == agree - 1 and len(texts) == 8
    assert all(choices[i][-1].finish_reason == "stop" for i, t in texts.items() if not t)


def test_logprobs_under_a_required_start_are_over_the_tokens_that_agree_with_it(engine: Engine) -> None:
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=5, prefix=" wonderful")
    deltas = asyncio.run(_run(engine, "It was", params))[0]
    entries = [e for d in deltas for e in d.logprobs]
    first = entries[0]
    # Only tokens that agree with " wonderful" are offered (each of the top 5 is a start of it or
    # starts with it), their probabilities over those tokens alone: the chosen one's at least
    # the 1 / (tokens that agree) of an even split.
    agree = len(engine.prefixes.allowed(b" wonderful"))
    assert all(" wonderful".startswith(t) or t.startswith(" wonderful") for t in first.top)
    assert first.logprob == max(first.top.values()) >= math.log(1 / agree)


def test_echo_with_prompt_logprobs_and_no_new_tokens(engine: Engine) -> None:
    params = SamplingParams(max_tokens=0, echo=True, logprobs=2)
    deltas = asyncio.run(_run(engine, "Hello world, again", params))[0]
    entries = [e for d in deltas for e in d.logprobs]
    assert "".join(d.text for d in deltas) == "Hello world, again"
    assert [e.token for e in entries] == ["Hello", " world", ",", " again"]
    assert entries[0].logprob is None and all(e.logprob < 0 for e in entries[1:])
    assert [e.offset for e in entries] == [0, 5, 11, 12]
    assert deltas[-1].finish_reason == "length"


def test_cancel_and_timeout_end_generation(engine: Engine) -> None:
    long = SamplingParams(max_tokens=200, temperature=1.0)

    async def cancel_soon() -> list[Delta]:
        stream = engine.submit([engine.encode("Hello")], long)
        seen = []
        async for delta in stream:
            seen.append(delta)
            if len(seen) == 3:
                stream.cancel()
        return seen

    cancelled = asyncio.run(cancel_soon())
    assert cancelled[-1].finish_reason == "cancelled" and len(cancelled) < 20
    timed_out = asyncio.run(_run(engine, "Hello", long, timeout_s=0.05))[0]
    assert timed_out[-1].finish_reason == "timeout"


@pytest.fixture(scope="module")
def narrow_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One sequence at a time and room for 2 more waiting: easy to fill."""
    model_dir = tiny_gpt2_dir(tmp_path_factory.mktemp("tiny") / "m")
    return Engine(
        lambda: TorchBackend(*load_causal_lm(model_dir, "float32")), max_batch_size=1, max_waiting_rows=2
    )


LONG = SamplingParams(max_tokens=900, temperature=1.0)


def test_the_queue_in_front_of_the_batch_is_bounded(narrow_engine: Engine) -> None:
    async def scenario() -> None:
        running = narrow_engine.submit([narrow_engine.encode("Hello")], LONG)
        await asyncio.sleep(0.05)  # in the batch, which is now full
        waiting = [narrow_engine.submit([narrow_engine.encode("Hi")], LONG) for _ in range(2)]
        with pytest.raises(Busy, match="2 sequences are waiting"):
            narrow_engine.submit([narrow_engine.encode("Hi")], LONG)
        for stream in waiting:
            stream.cancel()  # as when their clients go away: they leave the queue unrun
        running.cancel()
        assert [d.finish_reason async for d in running][-1] == "cancelled"
        for _ in range(100):
            if narrow_engine._waiting_rows == 0:
                break
            await asyncio.sleep(0.01)
        assert narrow_engine._waiting_rows == 0  # room again

    asyncio.run(scenario())


def test_a_request_that_waited_past_its_timeout_ends_without_running(
    narrow_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks: list[PromptChunk] = []
    record_passes(narrow_engine, monkeypatch, chunks)

    async def scenario() -> list[Delta]:
        running = narrow_engine.submit([narrow_engine.encode("Hello")], LONG)
        await asyncio.sleep(0.05)
        late = narrow_engine.submit([narrow_engine.encode("Once upon a time")], LONG, timeout_s=0.01)
        await asyncio.sleep(0.1)  # its timeout passes while the batch is full
        running.cancel()
        deltas = [d async for d in late]
        async for _ in running:
            pass
        return deltas

    deltas = asyncio.run(scenario())
    assert [(d.text, d.finish_reason) for d in deltas] == [("", "timeout")]  # a 504 for the client
    # Only "Hello" ran: the late request never took a place in the batch.
    assert [len(c.prompt) for c in chunks] == [1]
    assert narrow_engine._waiting_rows == 0 and narrow_engine._rows == []


def test_the_api_modules_import_without_torch() -> None:
    # BentoML's parent process imports them with the service definition and never runs a
    # model: torch there cost it ~500 MB of RSS.
    code = (
        "import sys, services.autocomplete.completions, services.autocomplete.engine, "
        "services.autocomplete.generation, services.autocomplete.sampling, "
        "services.autocomplete.suggest; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_a_failing_load_raises_from_the_constructor() -> None:
    def load() -> tuple[object, object]:
        raise FileNotFoundError("no model.safetensors in /nowhere")

    with pytest.raises(FileNotFoundError, match="nowhere"):
        Engine(load)


def test_the_engine_reports_its_load_and_each_requests_queue_time(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    model_dir = tiny_gpt2_dir(tmp_path_factory.mktemp("tiny-load") / "m")

    def load() -> TorchBackend:
        backend = TorchBackend(*load_causal_lm(model_dir, "float32"))
        backend.kv_capacity = 1000  # a fixed pool, as llama.cpp's
        return backend

    loads: list[Load] = []
    engine = Engine(load, max_batch_size=2, observe_load=loads.append)
    params = SamplingParams(max_tokens=20, temperature=0.0)
    prompt = engine.encode("Hello world")

    async def scenario() -> list[GenerationStream]:
        streams = [engine.submit([prompt], params, n=2), engine.submit([prompt], params)]
        for stream in streams:
            async for _ in stream:
                pass
        return streams

    streams = asyncio.run(scenario())
    deadline = time.monotonic() + 5  # the last token reaches the stream before its row leaves
    while loads[-1].running and time.monotonic() < deadline:
        time.sleep(0.01)
    per_row = len(prompt) + 20
    assert Load(2, 1, 2 * per_row, 1000) in loads  # the second waits for the first's 2 rows
    assert Load(1, 0, per_row, 1000) in loads
    assert loads[-1] == Load(0, 0, 0, 1000) == engine.load()
    assert all(0 <= load.running <= 2 and load.kv_used <= 1000 for load in loads)
    first, second = (s.stats for s in streams)
    assert first.started_at is not None and second.started_at is not None
    assert first.submitted_at <= first.started_at <= first.first_token_at
    assert second.started_at - second.submitted_at > first.started_at - first.submitted_at


def test_requests_arriving_as_the_last_rows_finish_all_complete(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pass that prefills a new request can be the one in which every running row ends
    # (the torch backend then resets its batch): the new request must still start.
    passes = record_passes(engine, monkeypatch)  # (new prompts, running rows) per forward pass

    async def waves() -> list[str]:
        reasons = []
        for max_tokens in (1, 2, 3) * 6:
            # Each wave's single row ends on the pass that takes the next wave's request.
            before = len(passes)
            first = engine.submit(
                [engine.encode("Hello")], SamplingParams(max_tokens=max_tokens, temperature=0.0)
            )
            while not any(new for new, _ in passes[before:]):  # its prefill has run
                await asyncio.sleep(0.0005)
            second = engine.submit([engine.encode("Hi there")], SamplingParams(max_tokens=2, temperature=0.0))
            for done in await asyncio.gather(first.collect(), second.collect()):
                reasons += [c.finish_reason for c in done.values()]
        return reasons

    reasons = asyncio.run(waves())
    assert set(reasons) <= {"length", "stop"}, reasons
    assert any(new and running for new, running in passes), passes  # they did share passes


# --- chunked prefill, and a request that waits for KV room ---------------------------------


def _reference_prompt_logprobs(engine: Engine, prompt: list[int], top_n: int) -> list[tuple]:
    """Echo's logprobs the plain way: one forward pass over the whole prompt, every prefix decoded."""
    import torch

    with torch.inference_mode():
        logits = engine.backend.model(input_ids=torch.tensor([prompt])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    entries = [(engine.decode(prompt[:1]), None, 0)]
    for i in range(1, len(prompt)):
        entries.append(
            (engine.decode([prompt[i]]), float(logprobs[i - 1, prompt[i]]), len(engine.decode(prompt[:i])))
        )
    return entries


def test_a_long_prompt_is_prefilled_in_chunks_beside_a_running_stream(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tiny_gpt2_dir(tmp_path_factory.mktemp("tiny-chunks") / "m")
    engine = Engine(
        lambda: TorchBackend(*load_causal_lm(model_dir, "float32")), max_batch_size=8, prefill_chunk_tokens=64
    )
    # Multi-byte characters (an emoji is split across tokens) test the offsets' decoding.
    text = " ".join(f"Line {i}: caf\u00e9 \U0001f600 ok." for i in range(40))
    prompt = engine.encode(text)
    assert len(prompt) > 300
    chunks: list[PromptChunk] = []
    passes = record_passes(engine, monkeypatch, chunks)
    echo = SamplingParams(max_tokens=1, temperature=0.0, echo=True, logprobs=2)

    async def scenario() -> tuple[list[Delta], str]:
        running = engine.submit(
            [engine.encode("Hello")],
            SamplingParams(max_tokens=60, temperature=0.0, logit_bias=((50256, -100.0),)),
        )
        await asyncio.sleep(0.05)
        echoed = [d async for d in engine.submit([prompt], echo)]
        return echoed, "".join([d.text async for d in running])

    echoed, _ = asyncio.run(scenario())
    ran = [c for c in chunks if c.prompt == prompt]
    assert len(ran) >= len(prompt) // 64 and all(c.end - c.start <= 64 for c in ran)
    during = [running for new, running in passes if new]
    assert sum(1 for running in during if running) >= len(ran) - 1  # the stream went on meanwhile
    entries = [(e.token, e.logprob, e.offset) for d in echoed for e in d.logprobs][: len(prompt)]
    expected = _reference_prompt_logprobs(engine, prompt, 2)
    assert [(t, o) for t, _, o in entries] == [(t, o) for t, _, o in expected]
    assert all(
        (a is None and b is None) or abs(a - b) < 1e-3 for (_, a, _), (_, b, _) in zip(entries, expected)
    )
    assert "".join(d.text for d in echoed).startswith(text)


def test_requests_with_the_same_prompt_share_its_prefill(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks: list[PromptChunk] = []
    record_passes(engine, monkeypatch, chunks)
    prompt = engine.encode("The weather today is")

    async def both() -> list[str]:
        streams = [engine.submit([prompt], GREEDY), engine.submit([prompt], GREEDY, n=2)]
        done = await asyncio.gather(*(s.collect() for s in streams))
        return [c.text for d in done for c in d.values()]

    texts = asyncio.run(both())
    assert len(chunks) == 1 and len(set(texts)) == 1 and texts[0]


def test_a_request_waiting_for_kv_room_lets_smaller_ones_pass_then_is_not_starved(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.autocomplete.engine as engine_module

    model_dir = tiny_gpt2_dir(tmp_path_factory.mktemp("tiny-kv") / "m")

    def load() -> TorchBackend:
        backend = TorchBackend(*load_causal_lm(model_dir, "float32"))
        backend.kv_capacity = 1500  # a fixed pool, as llama.cpp's
        return backend

    engine = Engine(load, max_batch_size=8)
    monkeypatch.setattr(engine_module, "HOLD_AGING_S", 0.3)
    hello = engine.encode("Hello")
    long = SamplingParams(max_tokens=900, temperature=0.0, logit_bias=((50256, -100.0),))
    small = SamplingParams(max_tokens=5, temperature=0.0)

    async def scenario() -> dict[str, GenerationStream]:
        streams: dict[str, GenerationStream] = {}

        async def run(name: str, params: SamplingParams, delay: float) -> None:
            await asyncio.sleep(delay)
            streams[name] = engine.submit([hello], params)
            await streams[name].collect()

        # The first takes 901 of the 1,500 cells for ~900 steps; the big one (1,001) waits for
        # it. A small one (6) passes it; once it has waited 0.3 s, the next waits behind it.
        await asyncio.gather(
            run("first", long, 0),
            run("big", dataclasses.replace(long, max_tokens=1000), 0.05),
            run("small", small, 0.1),
            run("late small", small, 0.6),
        )
        return streams

    streams = asyncio.run(scenario())
    started = {name: stream.stats.started_at for name, stream in streams.items()}
    finished = {name: stream.stats.finished_at for name, stream in streams.items()}
    assert finished["small"] < finished["first"] < started["big"]  # it passed the waiting one
    assert started["late small"] >= started["big"]  # which was not starved


def test_a_timeout_after_the_first_token_keeps_the_text_with_length(engine: Engine) -> None:
    from services.autocomplete.completions import Job, collect
    from services.autocomplete.settings import Settings

    params = SamplingParams(max_tokens=500, temperature=0.0, logit_bias=((50256, -100.0),))
    job = Job("cmpl-test", 0, "tiny", [engine.encode("Hello")], params, 2, False, False)

    async def scenario() -> object:
        return await collect(job, engine.submit(job.prompts, params, n=2, timeout_s=0.3), Settings())

    completion = asyncio.run(scenario())
    assert [c.finish_reason for c in completion.choices] == ["length", "length"]
    assert all(c.text for c in completion.choices)
    assert completion.usage.completion_tokens < 2 * 500
