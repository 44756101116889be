"""Text in three domains for keystroke savings, each one author's ("a user's"), split into what
a fine-tune may read and held-out text it never sees.

    python tests/data/suggest_corpora.py                # -> ~/.cache/modelport/suggest-corpora/
    python tests/data/suggest_corpora.py --out DIR
    modelport evaluate suggest ~/.cache/modelport/suggest-corpora/narrative/heldout

Each domain folder holds `text.txt` (the user's whole text, paragraphs blank-line separated,
which `finetune text --holdout blocks|tail` splits itself: what the keystroke benchmark
feeds it), `train.txt` and `heldout/<domain>.txt` (that text's tail split, finetune/
text_data.py's `hold_out`: the last 10% by characters, a contiguous stretch, and the rest up to
200 KB; for `modelport evaluate suggest`) and `source.json` (package, files, licence, sizes,
sha256). The text comes from pinned packages on the Python registry (no internet needed),
cleaned the way a user's own text would look in an editor: lines unwrapped into paragraphs,
code blocks and markup dropped. The same packages give the same bytes: deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Beside the packages' cache (services/core/sources.py's CACHE_DIR).
DEFAULT_OUT = (
    Path(os.environ.get("MODELPORT_CACHE_DIR", Path.home() / ".cache" / "modelport")) / "suggest-corpora"
)
MAX_TRAIN_BYTES = 200_000  # the goal: a version fine-tuned on at most 200 KB of the user's text
HELDOUT_SHARE = 0.10
BROTLI = "brotli==1.2.1"  # its sdist carries the Canterbury corpus (Project Gutenberg etexts) as test data
CLICK = "click==8.5.1"  # its sdist carries Click's documentation (Markdown)
CLICK_DOCS = tuple(
    f"docs/{name}.md"
    for name in [
        "why",
        "quickstart",
        "virtualenv",
        "setuptools",
        "entry-points",
        "click-concepts",
        "parameters",
        "parameter-types",
        "options",
        "option-decorators",
        "arguments",
        "commands-and-groups",
        "commands",
        "prompts",
        "documentation",
        "handling-files",
        "utils",
        "advanced",
        "complex",
        "extending-click",
        "testing",
        "exceptions",
        "unicode-support",
        "wincmd",
        "shell-completion",
        "support-multiple-versions",
        "standalone-apps-briefcase",
        "standalone-apps-nuitka",
        "faqs",
        "design-opinions",
        "upgrade-guides",
    ]
)


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each unwrapped to one line with single spaces."""
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    return [" ".join(b.split()) for b in blocks if b.strip()]


def prose(texts: list[str]) -> list[str]:
    """A Gutenberg etext: its hard-wrapped paragraphs unwrapped."""
    return [p for t in texts for p in _paragraphs(t)]


def play(texts: list[str]) -> list[str]:
    """A play as the Canterbury corpus sets it (`NAME<tab>line`, `<tab>line` continuing it), from
    Act I on: one paragraph per speech, `NAME: words`, and stage directions as they are."""
    paragraphs = []
    for text in texts:
        body = text[text.index("ACT I") :]
        for block in re.split(r"\n\s*\n", body):
            lines = [line for line in block.splitlines() if line.strip()]
            if not lines:
                continue
            speaker = re.match(r"^([A-Z][A-Za-z' ]+?)\s*\t+(.*)$", lines[0])
            words = " ".join(
                " ".join(line.split())
                for line in ([speaker.group(2)] if speaker else []) + (lines[1:] if speaker else lines)
            )
            paragraphs.append(f"{speaker.group(1).title()}: {words}" if speaker else words)
    return paragraphs


def markdown(texts: list[str]) -> list[str]:
    """Documentation pages: prose paragraphs and list items, without code blocks, tables,
    directives, link targets and role markup (`{ref}`text`` -> `text`)."""
    paragraphs = []
    for text in texts:
        text = re.sub(r"(?ms)^(`{3,})[^\n]*\n.*?^\1\s*$", "", text)  # fenced blocks, eval-rst ones too
        text = re.sub(r"\{\w+\}(`[^`]+`)", r"\1", text)
        text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
        for paragraph in _paragraphs(text):
            paragraph = paragraph.lstrip("#").strip()
            if paragraph and not paragraph.startswith(("|", "<", "(", ":", "..", "---")):
                paragraphs.append(paragraph)
    return paragraphs


@dataclass(frozen=True)
class Domain:
    package: str
    members: tuple[str, ...]
    author: str  # the "user" this domain simulates
    work: str
    licence: str
    clean: Callable[[list[str]], list[str]]


DOMAINS = {
    "narrative": Domain(
        BROTLI,
        ("tests/testdata/alice29.txt",),
        "Lewis Carroll",
        "Alice's Adventures in Wonderland (1865), Project Gutenberg etext, in the Canterbury corpus",
        "public domain (the text); the brotli package is MIT",
        prose,
    ),
    "dialogue": Domain(
        BROTLI,
        ("tests/testdata/asyoulik.txt",),
        "William Shakespeare",
        "As You Like It (1599), Project Gutenberg etext, in the Canterbury corpus",
        "public domain (the text); the brotli package is MIT",
        play,
    ),
    "technical": Domain(
        CLICK,
        CLICK_DOCS,
        "the Pallets project (Click's maintainers)",
        "Click's documentation, docs/*.md of the click sdist",
        "BSD-3-Clause (Copyright 2014 Pallets)",
        markdown,
    ),
}


def build(out: Path = DEFAULT_OUT) -> dict[str, dict[str, object]]:
    """Write every domain's split under `out`; returns each domain's source.json."""
    sys.path.insert(0, str(REPO))  # run as a file: the repository's modules
    from services.core.sources import PackageFile

    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, domain in DOMAINS.items():
            texts = [
                PackageFile(domain.package, member, sdist=True).fetch(Path(tmp)).read_text(encoding="utf-8")
                for member in domain.members
            ]
            written[name] = write_split(out / name, name, domain, domain.clean(texts))
    return written


def write_split(folder: Path, name: str, domain: Domain, paragraphs: list[str]) -> dict[str, object]:
    from finetune.text_data import hold_out  # the fine-tune's own split: one definition of "tail"

    # The held-out stretch: paragraphs from the end until a tenth of the characters.
    train, (heldout,) = hold_out(paragraphs, how="tail", share=HELDOUT_SHARE)
    train_text = ""
    for paragraph in train:  # the first 200 KB of the rest
        if len((train_text + paragraph).encode()) > MAX_TRAIN_BYTES:
            break
        train_text += paragraph + "\n\n"
    heldout_text = "\n\n".join(heldout) + "\n"
    # The user's whole text, for `finetune text --holdout blocks|tail` to split itself (the
    # benchmark's path): as much as leaves at most 200 KB to train on.
    whole_text = ""
    for paragraph in paragraphs:
        if len((whole_text + paragraph).encode()) > MAX_TRAIN_BYTES / (1 - HELDOUT_SHARE):
            break
        whole_text += paragraph + "\n\n"
    (folder / "heldout").mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train_text)
    (folder / "text.txt").write_text(whole_text)
    (folder / "heldout" / f"{name}.txt").write_text(heldout_text)
    source = {
        "domain": name,
        "package": domain.package + " (sdist)",
        "files": list(domain.members),
        "author": domain.author,
        "work": domain.work,
        "licence": domain.licence,
        "train_bytes": len(train_text.encode()),
        "heldout_bytes": len(heldout_text.encode()),
        "text_bytes": len(whole_text.encode()),
        "train_sha256": hashlib.sha256(train_text.encode()).hexdigest(),
        "heldout_sha256": hashlib.sha256(heldout_text.encode()).hexdigest(),
    }
    (folder / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    return source


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for name, source in build(args.out).items():
        print(
            f"{args.out / name}: train {source['train_bytes']:,} B, held out {source['heldout_bytes']:,} B "
            f"({source['work']}; {source['licence']})"
        )
