"""Loading, checking, splitting and packing the user's text; every data error is caught and
says what to fix, before a model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.text_data import (
    DataError,
    check_sizes,
    excerpts,
    hold_out,
    load_text,
    pack,
    split_records,
)


class CharTokenizer:
    """One id per character, 0 = end of text: packing's arithmetic is visible."""

    eos_token_id = 0

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[ord(c) for c in text] for text in texts]}


def test_txt_records_split_on_blank_lines_or_a_separator(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("first para\nline two\n\n\nsecond para\n  \nthird\n")
    assert load_text(notes).records == ("first para\nline two", "second para", "third")
    fortunes = tmp_path / "fortunes"
    fortunes.write_text("A fool and his money\n\tare soon parted.\n%\nLook before you leap.\n%\n")
    data = load_text(fortunes, separator="%")
    assert data.records == ("A fool and his money\n\tare soon parted.", "Look before you leap.")
    assert len(data.sha256) == 64


def test_folder_reads_matching_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha\n\nbeta\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("gamma\n")
    (tmp_path / "index.dat").write_bytes(b"\xff\xfe\x00binary")  # not matched: never decoded
    assert load_text(tmp_path).records == ("alpha", "beta", "gamma")
    with pytest.raises(DataError, match=r"no files match '\*.md' \(choose others with --pattern\)"):
        load_text(tmp_path, pattern="*.md")
    with pytest.raises(DataError, match=r"index.dat: not UTF-8 text"):
        load_text(tmp_path, pattern="*")


def test_csv_column_and_jsonl_field(tmp_path: Path) -> None:
    tickets = tmp_path / "tickets.csv"
    tickets.write_text('id,body\n1,"Printer jams, again"\n2,\n3,VPN drops\n')
    assert load_text(tickets, column="body").records == ("Printer jams, again", "VPN drops")
    with pytest.raises(DataError, match=r"no column 'text'; its columns are \['id', 'body'\]"):
        load_text(tickets, column="text")
    with pytest.raises(DataError, match="no --column given"):
        load_text(tickets)
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"text": "hello there"}) + "\n\n" + json.dumps({"text": "bye"}) + "\n")
    assert load_text(chats).records == ("hello there", "bye")


@pytest.mark.parametrize(
    ("name", "content", "options", "message"),
    [
        ("empty.txt", "", {}, r"empty.txt: no text in it \(empty file"),
        ("blank.txt", "\n  \n\n", {}, "no text in it"),
        ("empty.csv", "", {"column": "body"}, "empty file"),
        ("bad.jsonl", '{"text": "ok"}\n{"text": oops}\n', {}, r"bad.jsonl line 2: not JSON"),
        (
            "nofield.jsonl",
            '{"body": "x"}\n',
            {},
            r"line 1: no field 'text' \(it has \['body'\]\); choose the field with --field",
        ),
        ("number.jsonl", '{"text": 3}\n', {}, r"line 1: field 'text' is int, not text"),
    ],
)
def test_data_errors_say_what_to_fix(
    tmp_path: Path, name: str, content: str, options: dict, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_text(path, **options)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_text(tmp_path / "missing.txt")


def test_split_keeps_records_whole_and_is_seeded() -> None:
    records = [f"record {i}" for i in range(20)]
    train, val = split_records(records, val_fraction=0.1, seed=0)
    assert len(val) == 2 and len(train) == 18 and sorted(train + val) == sorted(records)
    assert split_records(records, val_fraction=0.1, seed=0) == (train, val)
    with pytest.raises(DataError, match="a validation set needs at least two"):
        split_records(["only one"], val_fraction=0.1, seed=0)


def _paragraphs(n: int) -> list[str]:
    """`n` distinct paragraphs of uneven length, numbered so any two differ."""
    return [f"Paragraph {i}: " + " ".join(f"w{i}x{j}" for j in range(5 + i * 7 % 40)) for i in range(n)]


def test_blocks_holdout_is_disjoint_spread_and_deterministic() -> None:
    records = _paragraphs(400)  # ~80 KB
    train, held = hold_out(records, how="blocks", share=0.1)
    held_records = [r for block in held for r in block]
    # Nothing held out is trained on, and every record is in exactly one part (none invented).
    assert set(held_records).isdisjoint(train)
    assert sorted(train + held_records) == sorted(records)
    assert train == [r for r in records if r not in set(held_records)]  # order kept
    for block in held:  # each block a run of consecutive records of ~1.5 KB
        first = records.index(block[0])
        assert block == records[first : first + len(block)]
        assert 1_000 < sum(map(len, block)) < 2_000
    share = sum(map(len, held_records)) / sum(map(len, records))
    assert 0.07 < share < 0.13 and len(held) >= 4
    positions = [records.index(block[0]) / len(records) for block in held]
    assert min(positions) < 0.2 and max(positions) > 0.8  # from all through the text
    assert records[0] in train and records[-1] in train
    assert hold_out(records, how="blocks", share=0.1) == (train, held)  # deterministic
    # The text typed for keystroke savings comes from the held-out blocks only, spread out.
    typed = excerpts(held, max_chars=4_000)
    assert 3_500 < sum(map(len, typed)) <= 4_000 and len(typed) >= 2 and min(map(len, typed)) >= 200
    joined = ["\n\n".join(block) for block in held]
    assert all(any(text in block for block in joined) for text in typed)
    assert joined.index(next(b for b in joined if typed[-1] in b)) > len(held) // 2


def test_tail_holdout_and_short_text() -> None:
    records = _paragraphs(100)
    train, held = hold_out(records, how="tail", share=0.1)
    assert len(held) == 1 and train + held[0] == records and train
    assert 0.1 <= sum(map(len, held[0])) / sum(map(len, records)) < 0.2
    short = _paragraphs(30)  # ~3 KB: the blocks shrink so that two or more are held out
    train, held = hold_out(short, how="blocks", share=0.1)
    assert len(held) >= 2 and set(r for b in held for r in b).isdisjoint(train)
    with pytest.raises(DataError, match="held-out part needs at least two"):
        hold_out(["one"], how="blocks", share=0.1)
    with pytest.raises(DataError, match="choose one of blocks, tail"):
        hold_out(records, how="random", share=0.1)


def test_pack_joins_records_with_eos_into_full_blocks() -> None:
    blocks = pack(CharTokenizer(), ["abc", "de"], block_size=3)
    assert blocks == [[97, 98, 99], [0, 100, 101]]  # the last eos (a partial block) is dropped
    with pytest.raises(DataError, match="validation split has 1 block"):
        check_sizes(blocks, blocks[:1], block_size=3)
    with pytest.raises(DataError, match="fewer than 3 tokens"):
        check_sizes([], blocks, block_size=3)
