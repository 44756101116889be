"""Many users, one process: user versions (LoRA adapters) of the tiny GPT-2, served for real
(`bentoml serve`, llama.cpp) with API keys, over real HTTP.

alice's key owns `alice-notes` and has it as its default model; `house-style` is public;
`narrow-notes` is an adapter of another base (a narrower tiny GPT-2) that this server does not
serve. bob's key owns nothing. `house-style` carries a phrase memory (its user's text).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.autocomplete_fixtures import SERVICE, import_tiny_gpt2, tiny_gpt2_dir
from tests.servers import serve
from tests.user_versions import lora_adapter_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),  # peft
]

ALICE = "a1ice-a1ice-a1ice-a1ice"
BOB = "b0b-b0b-b0b-b0b-b0b-b0b"
GREEDY = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
HOUSE_PHRASES = "Ship it with the quick brown fox review.\nEvery change gets the quick brown fox review.\n"


def _import_version(
    name: str, base_tag: str, seed: int, tmp: Path, owner: str | None = None, phrases: str = ""
) -> str:
    import bentoml

    from services.autocomplete.phrase_memory import PHRASES_NAME
    from services.core.model_store import import_model
    from services.core.sources import LocalFile

    adapter = lora_adapter_dir(Path(bentoml.models.get(base_tag).path), tmp / name, seed=seed)
    if phrases:
        (adapter / PHRASES_NAME).write_text(phrases, encoding="utf-8")
    extra = {"owner": owner} if owner else None
    return import_model(name, LocalFile(str(adapter)), kind="causal-lm-lora", extra_metadata=extra).tag


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from services.core.model_store import import_model
    from services.core.sources import LocalFile

    tmp = tmp_path_factory.mktemp("user-versions")
    base = import_tiny_gpt2()
    _import_version("alice-notes", base, 1, tmp, owner="alice")
    _import_version("house-style", base, 2, tmp, phrases=HOUSE_PHRASES)
    with tempfile.TemporaryDirectory() as narrow:
        other = tiny_gpt2_dir(Path(narrow) / "narrow", seed=1, n_embd=32)
        other_base = import_model("tiny-gpt2-narrow", LocalFile(str(other)), kind="causal-lm").tag
    _import_version("narrow-notes", other_base, 3, tmp)
    keys = tmp / "api-keys"
    keys.write_text(f"{ALICE} reader name=alice model=alice-notes\n{BOB} reader name=bob\n")
    env = {
        "MODELPORT_AUTOCOMPLETE_MODEL": base,
        "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1",
        "MODELPORT_AUTOCOMPLETE_BACKEND": "llama.cpp",
        "MODELPORT_API_KEYS_FILE": str(keys),
        "MODELPORT_DATA_DIR": str(tmp / "data"),
    }
    with serve(SERVICE, env=env, log_path=tmp / "server.log") as url:
        yield url


def _post(url: str, key: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{url}/v1/{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_models_lists_the_base_and_the_versions_the_key_may_use(server: str) -> None:
    def names(key: str) -> set[str]:
        response = httpx.get(f"{server}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert response.status_code == 200, response.text
        return {card["id"] for card in response.json()["data"]}

    assert names(ALICE) == {"tiny-gpt2", "alice-notes", "house-style"}
    assert names(BOB) == {"tiny-gpt2", "house-style"}  # not alice's; not another base's


def test_the_key_default_and_each_version_answer_from_one_process(server: str) -> None:
    default = _post(server, ALICE, "completions", GREEDY)  # no model: the key's default
    assert default.status_code == 200, default.text
    assert default.json()["model"] == "alice-notes"
    texts = {}
    for model in ("tiny-gpt2", "alice-notes", "house-style"):
        response = _post(server, ALICE, "completions", {**GREEDY, "model": model})
        assert response.status_code == 200, response.text
        texts[model] = response.json()["choices"][0]["text"]
    assert texts["alice-notes"] == default.json()["choices"][0]["text"]
    assert len(set(texts.values())) == 3, texts  # each version its own model

    async def together() -> list[str]:  # the three at once: steps of mixed versions
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}, timeout=60) as client:
            answers = await asyncio.gather(
                *(client.post(f"{server}/v1/completions", json={**GREEDY, "model": m}) for m in texts)
            )
        return [a.json()["choices"][0]["text"] for a in answers]

    assert asyncio.run(together()) == list(texts.values())
    suggested = _post(server, BOB, "suggest", {"text": "Once upon a time", "model": "house-style"})
    assert suggested.status_code == 200, suggested.text
    assert suggested.json()["model"] == "house-style" and suggested.json()["suggestions"]


def test_a_versions_phrase_memory_suggests_what_its_user_wrote(server: str) -> None:
    def suggested(model: str, n: int = 2) -> list[str]:
        body = {"text": "Send it for the quick bro", "model": model, "n": n}
        response = _post(server, ALICE, "suggest", body)
        assert response.status_code == 200, response.text
        return [s["text"] for s in response.json()["suggestions"]]

    house = suggested("house-style")
    assert house[0] == "wn fox review."  # the word being typed, then what followed it both times
    assert suggested("house-style", n=1) == ["wn fox review."]  # alone: the model is not asked


def test_another_keys_version_is_answered_as_if_it_did_not_exist(server: str) -> None:
    theirs = _post(server, BOB, "completions", {**GREEDY, "model": "alice-notes"})
    missing = _post(server, BOB, "completions", {**GREEDY, "model": "no-such-notes"})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["code"] == "model_not_found"
    assert theirs.json()["error"]["message"].replace("alice-notes", "X") == missing.json()["error"][
        "message"
    ].replace("no-such-notes", "X")
    suggested = _post(server, BOB, "suggest", {"text": "Hello", "model": "alice-notes"})
    assert suggested.status_code == 404


def test_a_version_of_another_base_is_a_400_and_the_server_goes_on(server: str) -> None:
    refused = _post(server, ALICE, "completions", {**GREEDY, "model": "narrow-notes"})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "adapter_does_not_fit" and "tiny-gpt2-narrow:" in error["message"]
    assert _post(server, ALICE, "completions", {**GREEDY, "model": "house-style"}).status_code == 200


def test_metrics_show_loaded_versions_and_loads(server: str) -> None:
    _post(server, ALICE, "completions", {**GREEDY, "model": "house-style"})
    text = httpx.get(f"{server}/metrics", timeout=30).text

    def value(name: str) -> float:
        found = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE)
        assert found, f"{name} not on /metrics"
        return float(found.group(1))

    assert value("modelport_autocomplete_versions_loaded") >= 1
    assert value("modelport_autocomplete_version_loads_total") >= 1
    assert value("modelport_autocomplete_version_load_seconds_count") >= 1
    assert "modelport_autocomplete_version_evictions_total" in text


def test_the_python_client_lists_and_picks_the_users_version(server: str) -> None:
    from modelport_client import AsyncClient, Client

    with Client(server, api_key=ALICE) as alice:
        assert set(alice.models()) == {"tiny-gpt2", "alice-notes", "house-style"}
        own = alice.complete(GREEDY["prompt"], max_tokens=8, temperature=0)  # the key's default
        assert own.model == "alice-notes"
        assert (
            alice.complete(GREEDY["prompt"], max_tokens=8, temperature=0, model="tiny-gpt2").model
            == "tiny-gpt2"
        )
        assert alice.suggest("Once upon a time", model="house-style")

    async def bob() -> list[str]:
        async with AsyncClient(server, api_key=BOB) as client:
            assert await client.suggest("Once upon a time", model="house-style")
            return await client.models()

    assert asyncio.run(bob()) == ["tiny-gpt2", "house-style"]


def _saving_counts(url: str, user: str, model: str) -> tuple[float, ...]:
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    counts = []
    for name in (
        "modelport_suggest_typed_chars_total",
        "modelport_suggest_accepted_total",
        "modelport_suggest_accepted_chars_total",
    ):
        labels = r"\{" + rf'(?=[^}}]*user="{user}")(?=[^}}]*model="{model}")[^}}]*' + r"\}"
        match = re.search(rf"^{name}{labels} (\S+)$", metrics, re.M)
        counts.append(float(match.group(1)) if match else 0.0)
    return tuple(counts)


def test_editors_feedback_counts_each_users_savings(server: str) -> None:
    before = _saving_counts(server, "alice", "alice-notes")
    # alice typed 40 characters by hand and took 2 suggestions of 25 characters in all.
    report = _post(server, ALICE, "suggest/feedback", {"typed": 40, "accepted": 2, "accepted_chars": 25})
    assert report.status_code == 200, report.text
    assert report.json() == {"model": "alice-notes", "keystrokes_saved": 23}  # her key's default model
    after = _saving_counts(server, "alice", "alice-notes")
    assert [a - b for a, b in zip(after, before)] == [40, 2, 25]
    assert _post(server, BOB, "suggest/feedback", {"typed": 5, "model": "house-style"}).status_code == 200
    assert _saving_counts(server, "bob", "house-style")[0] >= 5  # another user, another series
    # Bad reports: a clear 400 / 404, nothing counted.
    bad = _post(server, ALICE, "suggest/feedback", {"typed": 3, "accepted": 2, "accepted_chars": 1})
    assert bad.status_code == 400 and "accepted_chars" in bad.json()["error"]["message"], bad.text
    assert _post(server, ALICE, "suggest/feedback", {"typed": -1}).status_code == 400
    assert _post(server, BOB, "suggest/feedback", {"typed": 3, "model": "alice-notes"}).status_code == 404
    assert _saving_counts(server, "alice", "alice-notes") == after
