"""User versions: fair turns between versions in the engine (on a fake backend), the adapter
memory budget (on a fake engine), API key options, and LoRA adapters on the real llama.cpp
backend (tiny GPT-2): exported, checked against torch+peft, two versions in one process."""

from __future__ import annotations

import asyncio
import tempfile
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from services.autocomplete.backend import PromptChunk
from services.autocomplete.engine import Engine, in_turns
from services.autocomplete.sampling import SamplingParams
from services.core.api_errors import ApiError
from services.core.api_keys import parse_keys_file

# peft's get_peft_model reads this transformers property (peft 0.21.2 with transformers 5.23).
PEFT_WARNING = "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"


class FakeVersionedBackend:
    """A fake model for scheduling tests: every row's next token is 1, each step takes 5 ms,
    and each step records which versions its rows and chunks belonged to."""

    description, context_length, vocab_size = "fake", 1024, 8
    stop_token_ids: frozenset[int] = frozenset()
    kv_capacity = None
    cached_cells = 0

    def __init__(self) -> None:
        self.steps: list[set[int | None]] = []
        self.reset()

    def encode(self, text: str) -> list[int]:
        return [2] * len(text)

    def decode(self, ids: Any) -> str:
        return "x" * len(ids)

    def token_bytes(self) -> list[bytes]:
        return [b"x"] * self.vocab_size

    def begin(self, key: int, prompt: list[int], every_position: bool, version: int | None = None) -> int:
        self._pending[key] = version
        return 0

    def step(self, chunks: list[PromptChunk], tokens: list[int]) -> tuple[list[Any], Any]:
        import time

        import torch

        time.sleep(0.005)
        self.steps.append({self._pending[c.key] for c in chunks} | set(self._rows))
        logits = torch.zeros(len(tokens), self.vocab_size)
        logits[:, 1] = 10.0
        first = torch.zeros(1, self.vocab_size)
        first[0, 1] = 10.0
        return [first if c.last else first[:0] for c in chunks], logits

    def join(self, keys: list[int]) -> None:
        self._rows += [self._pending[k] for k in keys]
        for key in set(keys):
            del self._pending[key]

    def abandon(self, key: int) -> None:
        self._pending.pop(key, None)

    def keep(self, rows: list[int]) -> None:
        self._rows = [self._rows[i] for i in rows]

    def reset(self) -> None:
        self._pending: dict[int, int | None] = {}
        self._rows: list[int | None] = []

    def evict(self, cells: int) -> int:
        return 0


def test_in_turns_interleaves_versions_oldest_first() -> None:
    items = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("b", 2)]
    assert in_turns(items, lambda i: i[0]) == [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2), ("a", 3)]


def test_a_busy_version_does_not_starve_another() -> None:
    # Version 1 sends 12 requests at once, then version 2 one; two batch slots. Oldest first
    # overall, version 2's request would wait for all 12; in turns it takes the next free slot.
    backend = FakeVersionedBackend()
    engine = Engine(lambda: backend, max_batch_size=2)
    params = SamplingParams(max_tokens=4, temperature=0.0)

    async def main() -> list[int | None]:
        finished: list[int | None] = []

        async def one(version: int | None) -> None:
            await engine.submit([[2, 2]], params, version=version).collect()
            finished.append(version)

        tasks = [asyncio.ensure_future(one(1)) for _ in range(12)]
        tasks.append(asyncio.ensure_future(one(2)))
        await asyncio.gather(*tasks)
        return finished

    finished = asyncio.run(main())
    assert finished.index(2) <= 3, finished  # at most the 2 running and 1 more of version 1 before it
    assert any(step == {1, 2} for step in backend.steps)  # the two versions ran in the same steps


def test_engine_calls_run_in_the_engine_thread_between_steps() -> None:
    import threading

    engine = Engine(FakeVersionedBackend, max_batch_size=2)
    future = engine.run_in_engine(lambda backend: (threading.current_thread().name, backend.description))
    assert future.result(timeout=10) == ("autocomplete-engine", "fake")
    failing = engine.run_in_engine(lambda backend: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=10)
    assert engine.run_in_engine(lambda backend: "still running").result(timeout=10) == "still running"


class FakeEngine:
    """Runs `run_in_engine` work at once on a fake backend that counts adapters by file."""

    def __init__(self) -> None:
        self.loaded: dict[int, str] = {}
        self.next_id = 0

    def run_in_engine(self, work: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(work(self))
        except Exception as failed:
            future.set_exception(failed)
        return future

    def load_adapter(self, path: Path) -> int:
        if path.read_bytes().startswith(b"bad"):
            raise ValueError("tensor 'blk.0.attn_qkv.weight' has incorrect shape")
        self.next_id += 1
        self.loaded[self.next_id] = path.name
        return self.next_id

    def free_adapter(self, version: int) -> None:
        del self.loaded[version]


def test_versions_load_on_first_use_and_the_least_recently_used_idle_one_goes(tmp_path: Path) -> None:
    from services.autocomplete.loaded_versions import LoadedVersions

    files = {}
    for name in "abcd":
        files[name] = tmp_path / name
        files[name].write_bytes(b"x" * 1000)
    engine = FakeEngine()
    versions = LoadedVersions(engine, budget_bytes=2500)  # room for two

    async def main() -> None:
        a = await versions.acquire("a", files["a"])
        assert await versions.acquire("a", files["a"]) == a  # loaded once
        versions.release("a")
        versions.release("a")
        await versions.acquire("b", files["b"])  # b in use from here on
        await versions.acquire("a", files["a"])  # a used again: b is now the older one
        versions.release("a")
        await versions.acquire("c", files["c"])  # no room: a (idle) goes, b (in use) stays
        assert sorted(engine.loaded.values()) == ["b", "c"]
        with pytest.raises(ApiError) as busy:  # b and c in use: d cannot get room
            await versions.acquire("d", files["d"])
        assert busy.value.status == 429 and sorted(engine.loaded.values()) == ["b", "c"]

    asyncio.run(main())


def test_a_versions_phrase_memory_loads_with_it_and_counts_in_the_budget(tmp_path: Path) -> None:
    from services.autocomplete.loaded_versions import LoadedVersions
    from services.autocomplete.phrase_memory import PHRASES_NAME

    for name in "abc":
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter.gguf").write_bytes(b"x" * 1000)
    (tmp_path / "a" / PHRASES_NAME).write_text("y" * 1000)  # a's ~2,000 bytes, b's 1,000
    (tmp_path / "c" / PHRASES_NAME).write_text("y" * 2000)  # c fits the budget only without them
    engine = FakeEngine()
    versions = LoadedVersions(engine, budget_bytes=2500)
    off = LoadedVersions(FakeEngine(), budget_bytes=2500, phrases=False)

    async def main() -> None:
        await versions.acquire("a", tmp_path / "a" / "adapter.gguf")
        memory = versions.phrases("a")
        assert memory is not None and versions.used == 1000 + memory.size and memory.size >= 1000
        versions.release("a")
        await versions.acquire("b", tmp_path / "b" / "adapter.gguf")  # 3,000 > 2,500: a goes
        assert versions.phrases("b") is None and versions.phrases("a") is None
        assert list(engine.loaded.values()) == ["adapter.gguf"] and versions.used == 1000
        await off.acquire("a", tmp_path / "a" / "adapter.gguf")
        assert off.phrases("a") is None and off.used == 1000
        versions.release("b")
        await versions.acquire("c", tmp_path / "c" / "adapter.gguf")  # served, without its phrases
        assert versions.phrases("c") is None and versions.used <= versions.budget

    asyncio.run(main())


def test_an_adapter_llama_cpp_refuses_is_a_400_and_nothing_stays_loaded(tmp_path: Path) -> None:
    from services.autocomplete.loaded_versions import LoadedVersions

    bad = tmp_path / "bad"
    bad.write_bytes(b"bad adapter")
    engine = FakeEngine()
    versions = LoadedVersions(engine, budget_bytes=10_000)
    with pytest.raises(ApiError) as refused:
        asyncio.run(versions.acquire("bad", bad))
    assert refused.value.status == 400 and refused.value.code == "adapter_does_not_fit"
    assert engine.loaded == {} and versions.used == 0


def test_keys_file_names_the_owner_and_default_model() -> None:
    [alice, plain] = parse_keys_file(
        "a1iceA1iceA1iceA1ice reader 100 name=alice model=alice-notes\nb0bB0bB0bB0bB0bB0b\n"
    )
    assert (alice.name, alice.model, alice.monthly_quota, alice.owner) == (
        "alice",
        "alice-notes",
        100,
        "alice",
    )
    assert plain.name is None and plain.owner == plain.id  # no name: the key's id owns its versions
    with pytest.raises(ValueError, match="options are name=NAME and model=MODEL"):
        parse_keys_file("a1iceA1iceA1iceA1ice colour=red")


# --- the real llama.cpp backend: tiny GPT-2 and LoRA adapters ------------------------------


@pytest.fixture(scope="module")
def tiny_base() -> Path:
    """The tiny GPT-2 imported into the test store (with its GGUF): a stored base."""
    import bentoml

    from tests.autocomplete_fixtures import import_tiny_gpt2

    return Path(bentoml.models.get(import_tiny_gpt2()).path)


def _logits_kl(p: Any, q: Any) -> float:
    lp, lq = p.log_softmax(-1), q.log_softmax(-1)
    return float((lp.exp() * (lp - lq)).sum())


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_a_lora_adapter_runs_in_llama_cpp_as_in_torch_and_changes_the_model(tiny_base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.autocomplete.lora_export import check_lora_gguf, prepare_adapter
    from tests.user_versions import lora_adapter_dir

    with tempfile.TemporaryDirectory() as tmp:
        adapter = lora_adapter_dir(tiny_base, Path(tmp) / "a", seed=1)
        info = prepare_adapter(adapter, "model.gguf")  # writes adapter.gguf and checks it
        check = check_lora_gguf(adapter, tiny_base / "model.gguf", adapter / "adapter.gguf")
        assert check.passed and check.kl_divergence < 0.01, check
        assert info["base_model"].startswith("tiny-gpt2:")
        # ... and the adapter matters: the adapted model is far from the base.
        tokenizer = AutoTokenizer.from_pretrained(tiny_base)
        ids = torch.tensor([tokenizer("The capital of France is").input_ids])
        base = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()
        from peft import PeftModel

        adapted = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32), adapter
        ).eval()
        with torch.inference_mode():  # it changes the model far more than the export errs
            change = _logits_kl(adapted(ids).logits[0, -1], base(ids).logits[0, -1])
        assert change > 0.01 and change > 1000 * check.kl_divergence, (change, check)


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_two_versions_and_the_base_in_one_step_compute_what_each_does_alone(tiny_base: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from services.autocomplete.llama_backend import LlamaCppBackend
    from services.autocomplete.lora_export import prepare_adapter
    from tests.user_versions import lora_adapter_dir

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    backend = LlamaCppBackend(tiny_base / "model.gguf", tokenizer, threads=1, kv_tokens=512, max_sequences=8)
    with tempfile.TemporaryDirectory() as tmp:
        versions = []
        for seed in (1, 2):
            adapter = lora_adapter_dir(tiny_base, Path(tmp) / str(seed), seed=seed)
            prepare_adapter(adapter, "model.gguf")
            versions.append(backend.load_adapter(adapter / "adapter.gguf"))
    prompt = tokenizer("Once upon a time").input_ids
    chunk = [PromptChunk(0, prompt, 0, len(prompt), False)]

    def alone(version: int | None) -> torch.Tensor:
        backend.reset()
        backend.begin(0, prompt, False, version)
        return backend.step(chunk, [])[0][0][-1]

    solo = {v: alone(v) for v in [None, *versions]}
    assert len({int(logits.argmax()) for logits in solo.values()}) >= 2  # the versions differ
    assert _logits_kl(solo[versions[0]], solo[versions[1]]) > 0.005
    backend.reset()
    mixed = [None, *versions, versions[0]]
    for key, version in enumerate(mixed):
        backend.begin(key, prompt, False, version)
    together = backend.step([PromptChunk(k, prompt, 0, len(prompt), False) for k in range(len(mixed))], [])[0]
    for version, logits in zip(mixed, together):
        assert torch.allclose(logits[-1], solo[version], atol=1e-3), version


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_an_adapter_of_another_base_is_refused_and_the_backend_goes_on(tiny_base: Path) -> None:
    import bentoml
    from transformers import AutoTokenizer

    from services.autocomplete.llama_backend import LlamaCppBackend
    from services.autocomplete.lora_export import prepare_adapter
    from services.core.model_store import import_model
    from services.core.sources import LocalFile
    from tests.autocomplete_fixtures import tiny_gpt2_dir
    from tests.user_versions import lora_adapter_dir

    with tempfile.TemporaryDirectory() as tmp:
        other = tiny_gpt2_dir(Path(tmp) / "other", seed=1, n_embd=32)
        other_dir = Path(
            bentoml.models.get(
                import_model("tiny-gpt2-narrow", LocalFile(str(other)), kind="causal-lm").tag
            ).path
        )
        adapter = lora_adapter_dir(other_dir, Path(tmp) / "a", seed=1)
        prepare_adapter(adapter, "model.gguf")
        backend = LlamaCppBackend(
            tiny_base / "model.gguf",
            AutoTokenizer.from_pretrained(tiny_base),
            threads=1,
            kv_tokens=256,
            max_sequences=2,
        )
        with pytest.raises(ValueError, match="could not apply the adapter"):
            backend.load_adapter(adapter / "adapter.gguf")
    assert backend._adapters == {}
    [logits] = backend.prefill([[464, 3139]], every_position=False)
    assert logits.shape[-1] == backend.vocab_size


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_a_finetune_lora_version_is_served_as_base_plus_adapter_to_its_owner(tiny_base: Path) -> None:
    # `modelport finetune text --lora` stores the merged model with its adapter in adapter/ and
    # `adapter.base_model` in the metadata (finetune/text.py): the import writes adapter.gguf.
    import shutil

    import bentoml

    from services.autocomplete.phrase_memory import PHRASES_NAME
    from services.autocomplete.user_versions import Caller, phrases_of, pick
    from services.core.model_store import import_model
    from services.core.sources import LocalFile
    from tests.user_versions import lora_adapter_dir

    base = bentoml.models.get(f"{tiny_base.parent.name}:{tiny_base.name}")
    with tempfile.TemporaryDirectory() as tmp:
        version_dir = Path(tmp) / "model"
        shutil.copytree(tiny_base, version_dir, ignore=shutil.ignore_patterns("*.gguf"))
        lora_adapter_dir(tiny_base, version_dir / "adapter", seed=4)
        (version_dir / "adapter" / PHRASES_NAME).write_text("carol's notes. carol's notes.")
        adapter = {"path": "adapter", "format": "peft-lora", "rank": 8, "base_model": str(base.tag)}
        tag = import_model(
            "tiny-gpt2-finetuned",
            LocalFile(str(version_dir)),
            kind="causal-lm",
            extra_metadata={"adapter": adapter, "owner": "carol"},
        ).tag
    entry = bentoml.models.get(tag)
    assert entry.info.metadata["adapter_gguf"]["base_model"] == str(base.tag)
    picked = pick("tiny-gpt2-finetuned", Caller("carol"), base)
    assert picked.tag == tag and picked.adapter is not None and picked.adapter.is_file()
    # Its phrase memory, whether served as a version or as the model itself (models serve TAG).
    memory = phrases_of(entry)
    assert memory is not None and "carol's notes." in memory.text and phrases_of(base) is None
    for caller, name in (
        (Caller("bob"), "tiny-gpt2-finetuned"),
        (Caller("carol"), ":"),
        (Caller("carol"), "a b"),
    ):
        with pytest.raises(ApiError) as missing:
            pick(name, caller, base)
        assert missing.value.status == 404, name
