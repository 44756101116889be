"""A fine-tuned LM is served by the autocompleter by name, with no code change, and rolls back.

`modelport finetune text` on a tiny GPT-2 (GPT-2's real tokenizer), then `modelport models
serve TAG`, then a real `bentoml serve` of the autocompleter configured with the store NAME
only: it must load the fine-tuned version and complete with it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from services.core.cli import main
from services.core.sources import LocalFile
from tests.autocomplete_fixtures import SERVICE, tiny_gpt2_dir
from tests.servers import serve

pytestmark = pytest.mark.slow
NAME = "finetune-served-gpt2"


def test_finetuned_version_is_served_by_name_and_rolls_back(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from services.core.model_store import import_model, serving_tag

    monkeypatch.chdir(tmp_path)  # run folders land here
    base = import_model(NAME, LocalFile(str(tiny_gpt2_dir(tmp_path / "base"))), kind="causal-lm").tag
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(f'{{"text": "Ticket {i}: the printer on floor {i % 5} is jammed again."}}\n'
                             for i in range(80)))
    cli = CliRunner()
    trained = cli.invoke(main, ["finetune", "text", str(notes), "--base", NAME, "--block-size", "32",
                                "--max-steps", "10", "--learning-rate", "3e-3"])
    assert trained.exit_code == 0, trained.output
    summary = trained.stdout.strip().splitlines()[-1]
    assert summary.startswith("validation perplexity ") and " -> " in summary
    new_tag = summary.split("new version ")[1].split(".")[0]

    served = cli.invoke(main, ["models", "serve", new_tag])
    assert served.exit_code == 0 and serving_tag(NAME) == new_tag
    listed = cli.invoke(main, ["models", "list", NAME])
    assert "val_ppl_before=" in listed.output and "val_ppl_after=" in listed.output

    env = {"MODELPORT_AUTOCOMPLETE_MODEL": NAME, "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1",
           "MODELPORT_AUTOCOMPLETE_DTYPE": "float32"}
    with serve(SERVICE, env=env, log_path=tmp_path / "autocomplete.log") as url:
        models = httpx.get(f"{url}/v1/models", timeout=10).json()
        assert models["data"][0]["root"] == new_tag
        response = httpx.post(f"{url}/v1/completions", timeout=60,
                              json={"prompt": "Ticket 3: the printer", "max_tokens": 5, "temperature": 0})
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"]

    rolled = cli.invoke(main, ["models", "rollback", NAME])
    assert rolled.exit_code == 0 and serving_tag(NAME) == base
