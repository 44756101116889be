"""A fine-tuned LM is served by the autocompleter by name, with no code change, on llama.cpp,
and rolls back.

`modelport finetune text` on a tiny GPT-2 (GPT-2's real tokenizer) and a tiny Llama (SmolLM2's
shape rules and tokenizer), then `modelport models serve TAG`, then a real `bentoml serve` of
the autocompleter configured with the store NAME only: it must load the fine-tuned version,
from the GGUF written for it, and complete with it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from services.core.cli import main
from services.core.sources import LocalFile
from tests.autocomplete_fixtures import SERVICE, tiny_gpt2_dir, tiny_llama_dir
from tests.servers import serve

pytestmark = pytest.mark.slow


def base_dir(architecture: str, target: Path) -> Path:
    if architecture == "gpt2":
        return tiny_gpt2_dir(target)
    import services.autocomplete.model_kinds  # noqa: F401 - registers causal-lm
    from services.core.model_store import import_model

    return tiny_llama_dir(target, Path(import_model("smollm2-135m").path))


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_finetuned_version_is_served_by_name_and_rolls_back(
    architecture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.core.model_store import import_model, resolve, serving_tag

    NAME = f"finetune-served-{architecture}"
    monkeypatch.chdir(tmp_path)  # run folders land here
    base = import_model(NAME, LocalFile(str(base_dir(architecture, tmp_path / "base"))), kind="causal-lm").tag
    notes = tmp_path / "notes.jsonl"
    notes.write_text(
        "".join(
            f'{{"text": "Ticket {i}: the printer on floor {i % 5} is jammed again."}}\n' for i in range(80)
        )
    )
    cli = CliRunner()
    trained = cli.invoke(
        main,
        [
            "finetune",
            "text",
            str(notes),
            "--base",
            NAME,
            "--block-size",
            "32",
            "--max-steps",
            "10",
            "--learning-rate",
            "3e-3",
        ],
    )
    assert trained.exit_code == 0, trained.output
    summary = trained.stdout.strip().splitlines()[-1]
    assert summary.startswith("validation perplexity ") and " -> " in summary
    new_tag = summary.split("new version ")[1].split(".")[0]

    stored = resolve(new_tag)  # written as a GGUF, checked against torch
    assert (Path(stored.path) / "model.gguf").is_file(), stored.info.metadata
    assert "KL divergence" in stored.info.metadata["gguf_check"]

    served = cli.invoke(main, ["models", "serve", new_tag])
    assert served.exit_code == 0 and serving_tag(NAME) == new_tag
    listed = cli.invoke(main, ["models", "list", NAME])
    assert "val_ppl_before=" in listed.output and "val_ppl_after=" in listed.output

    env = {"MODELPORT_AUTOCOMPLETE_MODEL": NAME, "MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL": "1"}
    log = tmp_path / "autocomplete.log"
    with serve(SERVICE, env=env, log_path=log) as url:
        assert f"serving model {new_tag} (llama.cpp:" in log.read_text()
        models = httpx.get(f"{url}/v1/models", timeout=10).json()
        assert models["data"][0]["root"] == new_tag
        response = httpx.post(
            f"{url}/v1/completions",
            timeout=60,
            json={"prompt": "Ticket 3: the printer", "max_tokens": 5, "temperature": 0},
        )
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"]

    rolled = cli.invoke(main, ["models", "rollback", NAME])
    assert rolled.exit_code == 0 and serving_tag(NAME) == base
