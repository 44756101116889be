"""Your text, ready for a causal LM: load it, check it, split it, pack it.

    data = load_text("notes.txt")                              # records split on blank lines
    data = load_text("/usr/share/games/fortunes", pattern="*", separator="%")
    data = load_text("tickets.csv", column="body")             # one CSV column
    data = load_text("chats.jsonl", field="text")              # one JSONL field
    train, held = hold_out(data.records, how="blocks", share=0.1)  # every 10th ~1.5 KB block
    texts = excerpts(held, max_chars=4000)                      # held-out text to type, spread out
    blocks = pack(tokenizer, train, block_size=256)            # list of equal-length id lists

Every problem with the data is a `DataError` raised here, before a model is loaded, with a
message that says which file, line or column to fix.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.sources import sha256_of

# How a user's text is held out (for validation perplexity and keystroke savings). A user's text
# is many documents written over time, and what they type next resembles all of it (names,
# phrases, style): "blocks" holds out every 10th stretch of ~1.5 KB (whole records, so never a
# record cut in two), from all through the text; "tail" holds out its last tenth, one contiguous
# stretch (a new scene with new names: what carries over to a new chapter).
HOLDOUTS = ("blocks", "tail")
HOLDOUT_BLOCK_CHARS = 1_500
MIN_EXCERPT_CHARS = 200
MIN_VAL_BLOCKS = 2  # fewer validation blocks make the perplexity too noisy to compare
# A user's own text is 20-500 KB (what they paste or export). Below 2 KB no split has a block to
# train or measure on at the defaults; above 20 MB a data set is being fed to a per-user job
# (reading and tokenising it alone would take minutes): refused by size before a byte is read.
MIN_TEXT_BYTES = 2_000
MAX_TEXT_BYTES = 20_000_000
# Byte-level tokenizers (GPT-2's, SmolLM2's) take any script, but one they were not trained on
# falls apart into single bytes: English runs ~4 characters a token, Tamil ~0.3 under GPT-2's.
# Below this a model can only suggest fragments of characters: refused, naming the script.
MIN_CHARS_PER_TOKEN = 1.0
MAX_UNKNOWN_SHARE = 0.01  # tokenizers with an unknown token: more than 1% of tokens unknown is refused


class DataError(ValueError):
    """The data cannot be trained on; the message says what to fix."""


@dataclass(frozen=True)
class TextData:
    records: tuple[str, ...]  # the unit of the train/validation split (a paragraph, row, line)
    sha256: str  # of the file or folder as given: recorded with the model it trains
    description: str  # for messages: "notes.txt (412 records)"


def load_text(
    path: str | Path,
    *,
    column: str | None = None,
    field: str | None = None,
    pattern: str = "*.txt",
    separator: str = "",
) -> TextData:
    """Records from a .txt file or folder (split on `separator` lines), a CSV column or a
    JSONL field. Empty records are dropped; an input with none left is an error."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    files = [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob(pattern) if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: no files match {pattern!r} (choose others with --pattern)")
    check_size(path, sum(f.stat().st_size for f in files))  # before a byte is read
    if path.is_dir():
        records = [r for f in files for r in _text_records(f, separator)]
        what = f"{path} ({len(files)} files matching {pattern!r})"
    elif path.suffix.lower() == ".csv":
        records, what = _csv_records(path, column), f"{path} column {column!r}"
    elif path.suffix.lower() == ".jsonl":
        records, what = _jsonl_records(path, field or "text"), f"{path} field {field or 'text'!r}"
    else:
        records, what = _text_records(path, separator), str(path)
    if not records:
        raise DataError(f"{what}: no text in it (empty file, or only separators/whitespace)")
    return TextData(tuple(records), sha256_of(path), f"{what}, {len(records)} records")


def check_amount(data: TextData) -> None:
    """Refuse text too small to learn from (and to measure on)."""
    text_bytes = sum(len(r.encode()) for r in data.records)
    if text_bytes < MIN_TEXT_BYTES:
        raise DataError(
            f"{data.description}: {text_bytes:,} bytes of text; fine-tuning needs at least "
            f"{MIN_TEXT_BYTES:,} bytes (a user's version learns best from 20-500 KB)"
        )


def check_size(path: Path, size: int) -> None:
    """Refuse text too large for a per-user job by its size on disk, before reading it."""
    if size > MAX_TEXT_BYTES:
        raise DataError(
            f"{path}: {size / 1e6:,.1f} MB of text; the limit is {MAX_TEXT_BYTES / 1e6:,.0f} MB "
            "(a user's version learns from 20-500 KB: take a sample of the text)"
        )


def check_coverage(tokenizer: Any, records: Sequence[str], *, sample_chars: int = 200_000) -> None:
    """Refuse text in a script the tokenizer does not cover: it falls apart into byte tokens
    (few characters per token) or unknown tokens. Measured on the first `sample_chars`."""
    sample, size = [], 0
    for record in records:
        sample.append(record)
        size += len(record)
        if size >= sample_chars:
            break
    ids = [i for encoded in tokenizer(sample, add_special_tokens=False)["input_ids"] for i in encoded]
    if not ids:
        return
    chars_per_token = size / len(ids)
    unknown = tokenizer.unk_token_id
    unknown_share = sum(i == unknown for i in ids) / len(ids) if unknown is not None else 0.0
    if chars_per_token < MIN_CHARS_PER_TOKEN or unknown_share > MAX_UNKNOWN_SHARE:
        scripts = _scripts(" ".join(sample)[:5_000])
        raise DataError(
            f"the base model's tokenizer does not cover this text's script ({scripts}): "
            f"{chars_per_token:.2f} characters per token (English: ~4), {unknown_share:.0%} unknown "
            "tokens, so its suggestions would be fragments of characters. Fine-tune a base whose "
            "tokenizer was trained on this script (--base)"
        )


def _scripts(text: str) -> str:
    """The main scripts of `text` by Unicode name ("TAMIL 92%, LATIN 5%")."""
    import unicodedata
    from collections import Counter

    counts = Counter(unicodedata.name(c, "OTHER ?").split()[0] for c in text if c.isalpha())
    total = sum(counts.values()) or 1
    return ", ".join(f"{name} {n / total:.0%}" for name, n in counts.most_common(2))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start}); convert it, or leave it "
            "out of the folder with --pattern"
        ) from None


def _text_records(path: Path, separator: str) -> list[str]:
    text = _read(path)
    # A separator line ("" = a blank line) ends a record: paragraphs, or fortune's "%".
    line = r"[ \t]*" if not separator else re.escape(separator) + r"[ \t]*"
    parts = re.split(rf"(?m)^{line}\r?\n", text + "\n")
    return [p.strip("\n") for p in parts if p.strip()]


def _csv_records(path: Path, column: str | None) -> list[str]:
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        columns = reader.fieldnames or []
        if not columns:
            raise DataError(f"{path}: empty file (a CSV needs a header row)")
        if column is None or column not in columns:
            given = "no --column given" if column is None else f"no column {column!r}"
            raise DataError(f"{path}: {given}; its columns are {columns}")
        try:
            return [row[column].strip() for row in reader if (row[column] or "").strip()]
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _jsonl_records(path: Path, field: str) -> list[str]:
    records = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or field not in row:
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise DataError(
                f"{path} line {number}: no field {field!r} (it has {keys}); choose the field with --field"
            )
        if not isinstance(row[field], str):
            raise DataError(f"{path} line {number}: field {field!r} is {type(row[field]).__name__}, not text")
        if row[field].strip():
            records.append(row[field].strip())
    return records


def split_records(records: Sequence[str], *, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle whole records into train and validation, so no record is in both (the gpt-2-simple
    backend's split; `finetune text` holds out with `hold_out`)."""
    if len(records) < 2:
        raise DataError(
            f"only {len(records)} record: a validation set needs at least two. "
            "Split the text with blank lines (or --separator), or add text"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = min(len(records) - 1, max(1, round(len(records) * val_fraction)))
    return [records[i] for i in order[n_val:]], [records[i] for i in order[:n_val]]


def hold_out(
    records: Sequence[str], *, how: str, share: float, block_chars: int = HOLDOUT_BLOCK_CHARS
) -> tuple[list[str], list[list[str]]]:
    """Split records, in order, into training records and held-out blocks (each a run of
    consecutive records), about `share` of the characters held out. No record is in both, and the
    same records give the same split (no randomness). `how`: one of HOLDOUTS."""
    if how not in HOLDOUTS:
        raise DataError(f"unknown held-out split {how!r}: choose one of {', '.join(HOLDOUTS)}")
    if len(records) < 2:
        raise DataError(
            f"only {len(records)} record: a held-out part needs at least two. "
            "Split the text with blank lines (or --separator), or add text"
        )
    total = sum(len(r) for r in records)
    if how == "tail":  # records from the end until `share` of the characters, at least one of each
        cut, held = len(records), 0
        while cut > 1 and held < share * total:
            cut -= 1
            held += len(records[cut])
        return list(records[:cut]), [list(records[cut:])]
    every = max(2, round(1 / share))
    # Short text gets shorter blocks, so that at least two are held out.
    size = min(block_chars, max(1, int(total / (2 * every))))
    blocks: dict[int, list[str]] = {}  # a record joins the block its first character falls in
    start = 0
    for record in records:
        blocks.setdefault(start // size, []).append(record)
        start += len(record)
    if len(blocks) < 2 * every:  # few long records: each record its own block
        blocks = dict(enumerate([r] for r in records))
    # The middle block of every `every`: the text's first and last blocks are trained on.
    ordered = list(blocks.values())
    held_ids = [i for i in range(len(ordered)) if i % every == every // 2] or [len(ordered) // 2]
    train = [r for i, block in enumerate(ordered) if i not in held_ids for r in block]
    return train, [ordered[i] for i in held_ids]


def excerpts(blocks: Sequence[Sequence[str]], *, max_chars: int) -> list[str]:
    """Held-out blocks to type, each one document, about `max_chars` characters in all: whole
    blocks taken at even intervals through the text (not only its start), the last one cut where
    a word ends (none shorter than MIN_EXCERPT_CHARS after the first: a few words typed into an
    empty editor measure nothing)."""
    texts = [t for t in ("\n\n".join(block) for block in blocks) if t]
    if not texts or max_chars <= 0:
        return []
    wanted = min(len(texts), math.ceil(max_chars / (sum(map(len, texts)) / len(texts))))
    spread = sorted({i * len(texts) // wanted for i in range(wanted)})
    order = spread + [i for i in range(len(texts)) if i not in spread]  # if those fall short
    chosen: list[tuple[int, str]] = []
    left = max_chars
    for i in order:
        if left <= 0 or (chosen and left < MIN_EXCERPT_CHARS):
            break
        text = texts[i]
        if len(text) > left:
            cut = text.rfind(" ", 0, left + 1)
            text = text[: cut if cut > 0 else left]
        chosen.append((i, text))
        left -= len(text)
    return [text for _, text in sorted(chosen)]


def pack(tokenizer: Any, records: Sequence[str], *, block_size: int) -> list[list[int]]:
    """Tokenise, join records with the end-of-text token, and cut into full blocks: no
    padding, so every token trained on is real text (the tail shorter than a block is dropped)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for encoded in tokenizer(list(records), add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        if eos is not None:
            ids.append(eos)
    return [ids[i : i + block_size] for i in range(0, len(ids) - block_size + 1, block_size)]


def check_sizes(train: list[list[int]], val: list[list[int]], *, block_size: int) -> None:
    """Refuse data too small to train and measure on, saying how much is missing."""
    if not train:
        raise DataError(
            f"the training split has fewer than {block_size} tokens: add text or lower --block-size"
        )
    if len(val) < MIN_VAL_BLOCKS:
        raise DataError(
            f"the validation split has {len(val)} block(s) of {block_size} tokens, "
            f"need {MIN_VAL_BLOCKS}: add text, raise --val-fraction or lower --block-size"
        )
