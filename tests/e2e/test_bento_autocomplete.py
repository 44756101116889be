"""Build the autocompleter's bento, move it to a fresh store, serve it, complete a prompt.

Built with the tiny GPT-2 (MODELPORT_AUTOCOMPLETE_MODEL=tiny-gpt2) to keep the archive
small; the default build packs SmolLM2 the same way. The fresh BENTOML_HOME has no models
until the bento archive is imported: the bento carries its model version.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.autocomplete_fixtures import TINY_GPT2, import_tiny_gpt2
from tests.bentos import bentoml, build
from tests.servers import serve

pytestmark = pytest.mark.slow


def test_built_bento_serves_completions_from_a_fresh_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_tiny_gpt2()
    monkeypatch.setenv("MODELPORT_AUTOCOMPLETE_MODEL", TINY_GPT2)
    tag = build("deploy/autocomplete/bentofile.yaml")
    info = bentoml("get", tag, "-o", "yaml")
    assert f"{TINY_GPT2}:" in info
    requirements = Path(bentoml("get", tag, "-o", "path").strip(), "env/python/requirements.txt").read_text()
    assert "torch" in requirements and "download.pytorch.org/whl/cpu" in requirements  # CPU image

    archive = tmp_path / "autocomplete.bento"
    bentoml("export", tag, str(archive))
    fresh_home = str(tmp_path / "fresh-bentoml-home")
    bentoml("import", str(archive), home=fresh_home)
    assert os.listdir(Path(fresh_home, "models")) == [TINY_GPT2]

    env = {"BENTOML_HOME": fresh_home, "PYTHONPATH": "", "MODELPORT_AUTOCOMPLETE_MODEL": TINY_GPT2}
    with serve(tag, env=env, log_path=tmp_path / "serve.log", cwd=tmp_path) as url:
        response = httpx.post(
            f"{url}/v1/completions", timeout=60, json={"prompt": "Hello", "max_tokens": 4, "temperature": 0}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == TINY_GPT2 and body["usage"]["completion_tokens"] == 4
