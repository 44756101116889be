"""`modelport evaluate suggest` against a real server (the tiny GPT-2 on llama.cpp) and in
process on the same store entry: the typist takes a suggestion the model really makes, and the
served and in-process typists count the same keystrokes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from services.core.cli import main
from tests.autocomplete_fixtures import import_tiny_gpt2

PROMPT = "Once upon a time there was"


@pytest.mark.parametrize("tiny_server", ["llama.cpp"], indirect=True)
def test_the_typist_takes_the_models_own_suggestion_over_http_and_in_process(
    tiny_server: str, tmp_path: Path
) -> None:
    # Held-out text made of what the model itself suggests after PROMPT: at that point the
    # typist must press Tab once for the whole suggestion.
    answer = httpx.post(f"{tiny_server}/v1/suggest", json={"text": PROMPT, "n": 1}, timeout=60).json()
    suggestion = answer["suggestions"][0]["text"]
    assert len(suggestion) > 1, answer
    text = PROMPT + suggestion
    (tmp_path / "held.txt").write_text(text)

    runner = CliRunner()
    served = runner.invoke(main, ["evaluate", "suggest", str(tmp_path), "--url", tiny_server, "--json"])
    assert served.exit_code == 0, served.output
    figures = json.loads(served.stdout[served.stdout.index("{") :])
    assert figures["characters"] == len(text)
    # Nothing the random model says before PROMPT ends is the text (it would have been taken
    # and the count would be lower); then Tab once for the whole suggestion.
    assert figures["keystrokes"] == len(PROMPT) + 1
    assert figures["keystroke_savings"] == pytest.approx(1 - (len(PROMPT) + 1) / len(text), abs=1e-4)
    assert figures["requests"] == len(PROMPT)  # before every key but the first, and none after the end
    assert figures["accepted_share"] == pytest.approx(1 / len(PROMPT), abs=1e-4)
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p95_ms"]

    # A text ending in a space is asked without it, the continuation held to start with one
    # (suggest.heal): the suggestion comes without the space, never glued onto "was", and is
    # the model's own where its suggestion for PROMPT began with a space.
    spaced = httpx.post(f"{tiny_server}/v1/suggest", json={"text": PROMPT + " ", "n": 1}, timeout=60).json()
    [after_space] = [s["text"] for s in spaced["suggestions"]]
    assert after_space.strip() and not after_space.startswith(" ")
    if suggestion.startswith(" "):
        assert after_space == suggestion[1:]

    in_process = runner.invoke(
        main, ["evaluate", "suggest", str(tmp_path), "--model", import_tiny_gpt2(), "--json"]
    )
    assert in_process.exit_code == 0, in_process.output
    local = json.loads(in_process.stdout[in_process.stdout.index("{") :])
    assert (local["characters"], local["keystrokes"]) == (figures["characters"], figures["keystrokes"])


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft
@pytest.mark.parametrize("tiny_server", ["llama.cpp"], indirect=True)
def test_a_user_version_is_typed_in_process_as_the_server_serves_it(tiny_server: str, tmp_path: Path) -> None:
    # The page asks /v1/suggest with the user's version: the served base with the version's
    # adapter set. In process, `--model VERSION` must type with that same model (it failed
    # before: it ran the entry's own files, which for an adapter-only version hold no model,
    # and for a `finetune text --lora` version are the merged model, whose greedy suggestions
    # differ from base + adapter in places).
    import bentoml

    from services.core.model_store import import_model
    from services.core.sources import LocalFile
    from tests.user_versions import lora_adapter_dir

    base = import_tiny_gpt2()  # the served base (the import is found by its checksum)
    adapter = lora_adapter_dir(Path(bentoml.models.get(base).path), tmp_path / "typist-notes", seed=4)
    version = import_model("typist-notes", LocalFile(str(adapter)), kind="causal-lm-lora").tag
    try:

        def suggested(model: str) -> str:
            body = {"text": PROMPT, "n": 1, "model": model}
            answer = httpx.post(f"{tiny_server}/v1/suggest", json=body, timeout=60).json()
            return answer["suggestions"][0]["text"] if answer["suggestions"] else ""

        suggestion = suggested(version)
        assert len(suggestion) > 1 and suggestion != suggested(base)  # the version suggests its own
        (tmp_path / "held.txt").write_text(PROMPT + suggestion)

        runner = CliRunner()
        figures = {}
        for where in (["--url", tiny_server], []):
            result = runner.invoke(
                main,
                ["evaluate", "suggest", str(tmp_path / "held.txt"), "--model", version, *where, "--json"],
            )
            assert result.exit_code == 0, result.output
            figures[bool(where)] = json.loads(result.stdout[result.stdout.index("{") :])
        served, local = figures[True], figures[False]
        assert served["accepted_share"] > 0  # the version's suggestion was taken
        assert (local["characters"], local["keystrokes"], local["requests"]) == (
            served["characters"],
            served["keystrokes"],
            served["requests"],
        )
    finally:
        # The session's store as it was: a public version left behind is listed by every later
        # autocompleter server's /v1/models (4 tests expected the base alone).
        bentoml.models.delete(version)


def test_a_refusing_server_is_an_error_that_says_what_it_answered(tmp_path: Path) -> None:
    (tmp_path / "held.txt").write_text("Hello there")
    result = CliRunner().invoke(
        main, ["evaluate", "suggest", str(tmp_path), "--url", "http://127.0.0.1:9", "--json"]
    )
    assert result.exit_code == 1 and "http://127.0.0.1:9" in result.output
