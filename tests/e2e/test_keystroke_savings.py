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

    # A text ending in a space is asked without it (suggest.py): a suggestion for PROMPT that
    # starts with a space comes without it; one that does not would glue onto "was": dropped.
    spaced = httpx.post(f"{tiny_server}/v1/suggest", json={"text": PROMPT + " ", "n": 1}, timeout=60).json()
    expected = [suggestion[1:]] if suggestion.startswith(" ") else []
    assert [s["text"] for s in spaced["suggestions"]] == expected

    in_process = runner.invoke(
        main, ["evaluate", "suggest", str(tmp_path), "--model", import_tiny_gpt2(), "--json"]
    )
    assert in_process.exit_code == 0, in_process.output
    local = json.loads(in_process.stdout[in_process.stdout.index("{") :])
    assert (local["characters"], local["keystrokes"]) == (figures["characters"], figures["keystrokes"])


def test_a_refusing_server_is_an_error_that_says_what_it_answered(tmp_path: Path) -> None:
    (tmp_path / "held.txt").write_text("Hello there")
    result = CliRunner().invoke(
        main, ["evaluate", "suggest", str(tmp_path), "--url", "http://127.0.0.1:9", "--json"]
    )
    assert result.exit_code == 1 and "http://127.0.0.1:9" in result.output
