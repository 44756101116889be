"""A user's fine-tune refuses text too small, too large or in a script its tokenizer does not
cover, with a message that says the limit, and stores nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from finetune import text_data
from finetune.cli import finetune
from finetune.text import TextSettings, finetune_text
from finetune.text_data import (
    MAX_TEXT_BYTES,
    MIN_TEXT_BYTES,
    DataError,
    check_amount,
    check_coverage,
    load_text,
)
from services.core.sources import LocalFile
from tests.autocomplete_fixtures import gpt2_tokenizer, tiny_gpt2_dir

BASE = "finetune-limits-tiny-gpt2"
ENGLISH = "The cat sat on the mat, and then it went to sleep in the warm afternoon sun. "
TAMIL = "யாதும் ஊரே யாவரும் கேளிர் தீதும் நன்றும் பிறர்தர வாரா நோதலும் தணிதலும் அவற்றோ ரன்ன "


def test_ten_bytes_are_refused_naming_the_minimum(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello, you")  # 10 bytes
    with pytest.raises(
        DataError, match=f"10 bytes of text; fine-tuning needs at least {MIN_TEXT_BYTES:,} bytes"
    ):
        check_amount(load_text(tiny))
    result = CliRunner().invoke(finetune, ["text", str(tiny), "--base", "no-such-model"])
    assert result.exit_code == 1 and f"at least {MIN_TEXT_BYTES:,} bytes" in result.output


def test_500_mb_is_refused_naming_the_limit_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as sparse:  # 500 MB on paper, no disk used
        sparse.truncate(500_000_000)

    def read_whole(path: Path) -> str:
        raise AssertionError(f"{path} was read: the size check must come first")

    monkeypatch.setattr(text_data, "_read", read_whole)
    with pytest.raises(DataError, match=f"500.0 MB of text; the limit is {MAX_TEXT_BYTES // 1_000_000} MB"):
        load_text(huge)
    folder = tmp_path / "folder"  # a folder's files count together
    folder.mkdir()
    for i in range(2):
        with (folder / f"{i}.txt").open("wb") as sparse:
            sparse.truncate(MAX_TEXT_BYTES // 2 + 1)
    with pytest.raises(DataError, match="the limit is"):
        load_text(folder)


def test_text_in_a_script_the_tokenizer_does_not_cover_is_refused(tmp_path: Path) -> None:
    tokenizer = gpt2_tokenizer(tmp_path)
    check_coverage(tokenizer, [ENGLISH * 20])  # ~4 characters a token: fine
    with pytest.raises(DataError, match=r"does not cover this text's script \(TAMIL"):
        check_coverage(tokenizer, [TAMIL * 20])


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    from services.core.model_store import import_model

    folder = tiny_gpt2_dir(tmp_path_factory.mktemp("tiny") / "model")
    return import_model(BASE, LocalFile(str(folder)), kind="causal-lm").tag


def test_a_refused_fine_tune_stores_nothing(tiny_base: str, tmp_path: Path) -> None:
    from services.core.model_store import versions

    tamil = tmp_path / "tamil.txt"
    tamil.write_text("\n\n".join([TAMIL * 3] * 40))
    before = [str(m.tag) for m in versions(BASE)]
    settings = TextSettings(base=BASE, block_size=32, runs_dir=tmp_path / "runs", eval_chars=0)
    with pytest.raises(DataError, match="TAMIL"):
        finetune_text(tamil, settings)
    assert [str(m.tag) for m in versions(BASE)] == before
    assert not os.path.exists(tmp_path / "runs")  # refused before a run folder was made
