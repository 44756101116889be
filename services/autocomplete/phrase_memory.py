"""Phrase memory: a user version's own text, searched for what the user wrote after the words
just typed, offered as the suggestion (a phone keyboard's personal dictionary, for phrases).

    memory = PhraseMemory.load(adapter_dir)            # its phrases.txt; None when it has none
    memory.recall("Rosalind, I pray thee, tell")       # Recall(text=" me", share=1.0, count=3, words=4)
    suggestions = put_first(memory.recall(typed), suggestions, n=1)

`finetune text --lora` stores the text it trained on (never the held-out part) beside the
version's adapter as `phrases.txt`. A fine-tuned 135M model learns the user's names and style
but still misses the phrases they repeat word for word (the sixth `@click.option(` of a doc,
a character's full name). On dev text (each corpus' training part split again, the test
blocks untouched; every-key typist, 2,000 characters), first in line before the model's
suggestion it raised keystroke savings from 36.1% to 37.6% (narrative version) and 38.8% to
42.0% (technical version), against 32.8% and 35.3% for the base alone
(services/autocomplete/README.md, "Phrase memory").

How it recalls: the last MAX_WORDS words typed (with the part of a word being typed) are looked
up in the text, then fewer, until a context occurs MIN_COUNT times at a word start (or once,
when it is at least LONG_CONTEXT whole words: a phrase that long is the user's own). What followed
each occurrence is compared word by word: the suggestion is as many words as at least SHARE
of the occurrences agree on, to a sentence's end or the line's. Measured on the dev text:
MIN_COUNT 1 cost 4-5 points (one earlier occurrence of a 1-2 word context is mostly chance),
and so did leaving out one-word contexts (0.6-2.4 points); SHARE 0.5-0.8 and MAX_WORDS 3-10
moved savings within 0.7 points.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from services.autocomplete.http_schema import Suggestion

PHRASES_NAME = "phrases.txt"  # beside a version's adapter GGUF
# The text's last 1 MB (a user's text is 20-500 KB): a lookup scans it once per context length
# tried, on the event loop (README, "Phrase memory": its cost per request).
MAX_CHARS = 1_000_000
MAX_WORDS = 6  # the longest context looked up
TYPED_CHARS = 400  # of the typed text's end, where those words are
MIN_COUNT = 2  # occurrences a context needs, unless it is LONG_CONTEXT whole words or more
LONG_CONTEXT = 4
SHARE = 0.6  # of the occurrences that must agree on each word of the suggestion
MAX_UNITS = 8  # words and punctuation marks a suggestion holds at most
# Occurrences compared at most, the latest first (the user's current usage): enough to tell the
# shares apart, and a common short context ("of the") stops the scan early.
MAX_OCCURRENCES = 256
_UNIT = re.compile(r"[ \t]*(?:\w+|[^\w\s])")  # a word or punctuation mark with its spaces
_WORD_TAIL = re.compile(r"\w+\Z")
_NON_WORD = re.compile(r"\W")
_WORDS = re.compile(r"\S+\s*")
_ENDS_SENTENCE = (".", "!", "?")
_OTHER_SPACE = re.compile(r"[^\S\n]")


@dataclass(frozen=True)
class Recall:
    text: str  # what to append to the text typed
    share: float  # of the context's occurrences that went on this way (the suggestion's score)
    count: int  # occurrences that went on this way


class PhraseMemory:
    def __init__(self, text: str) -> None:
        # Every word start after a space, lines' first words too: one `str.rfind` of " " + the
        # context finds exactly the occurrences that start a word.
        self.text = " " + _spaced(text[-MAX_CHARS:]).replace("\n", "\n ")

    @classmethod
    def load(cls, folder: Path) -> PhraseMemory | None:
        """The memory in `folder`'s phrases.txt, its last MAX_CHARS characters (bytes that are
        not UTF-8 read as U+FFFD: a file copied in from elsewhere never fails a request)."""
        path = folder / PHRASES_NAME
        if not path.is_file():
            return None
        with path.open("rb") as file:
            file.seek(max(0, path.stat().st_size - 4 * MAX_CHARS))  # at most 4 bytes a character
            return cls(file.read().decode("utf-8", errors="replace"))

    @property
    def size(self) -> int:
        """Bytes held (1-4 a character, as Python stores the text)."""
        return sys.getsizeof(self.text)

    def recall(self, typed: str) -> Recall | None:
        """How the user's text went on after the end of `typed`, if it says so clearly. Only
        its end is read (a pasted megabyte costs nothing more); at least one whole word must
        come before the word being typed."""
        typed = _spaced(typed[-TYPED_CHARS:])
        partial = _WORD_TAIL.search(typed)
        before = typed[: partial.start()] if partial else typed
        words = [m.start() for m in _WORDS.finditer(before)]
        for k in range(min(MAX_WORDS, len(words)), 0, -1):
            context = typed[words[-k] :]
            if "\n" in context:
                continue  # a suggestion is one line; so is what it follows on from
            follows = self._follows(context)
            if len(follows) < MIN_COUNT and not (k >= LONG_CONTEXT and follows):
                continue
            return _agreed(follows)
        return None

    def _follows(self, context: str) -> list[list[str]]:
        """What came after each occurrence of `context` that starts a word, the latest first:
        the rest of the word, then units up to the line's end. A regex look-behind for the word
        start made the engine try every position (40 ms a lookup on 350 KB, against ~1 ms)."""
        found: list[list[str]] = []
        needle = " " + context
        at = self.text.rfind(needle)
        while at >= 0 and len(found) < MAX_OCCURRENCES:
            found.append(self._after(at + len(needle)))
            at = self.text.rfind(needle, 0, at + len(needle) - 1)
        return found

    def _after(self, end: int) -> list[str]:
        after = self.text[end : end + 160].split("\n", 1)[0]
        rest = _NON_WORD.split(after, maxsplit=1)[0]  # the rest of the word the context ends in
        return [rest, *_UNIT.findall(after, len(rest))[:MAX_UNITS]]


def put_first(recalled: Recall | None, suggestions: list[Suggestion], n: int) -> list[Suggestion]:
    """`suggestions` (the model's, best first) with the `recalled` phrase first, `n` at most.
    First, not ranked by score: on the dev text, letting the model's suggestion win where the
    two differed saved 0.1-1.4 points less, and where the model's went on past the phrase,
    0.9-1.3 points less (its longer tail was wrong more often)."""
    if recalled is None:
        return suggestions[:n]
    rest = [s for s in suggestions if s.text != recalled.text]
    return [Suggestion(text=recalled.text, score=round(recalled.share, 4)), *rest][:n]


def _spaced(text: str) -> str:
    """Lines end in "\n" and every other space is " " (a tab, a no-break space): text typed and
    text stored compare alike, and no space of a recalled phrase is lost."""
    return _OTHER_SPACE.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))


def _agreed(follows: list[list[str]]) -> Recall | None:
    """The longest run of units at least SHARE of `follows` begin with, to a sentence's end;
    None when that is under two characters (Tab would save nothing) or only spaces."""
    best = None
    for j in range(1, MAX_UNITS + 2):
        counts = Counter(tuple(units[:j]) for units in follows if len(units) >= j)
        if not counts:
            break
        units, count = counts.most_common(1)[0]
        if count / len(follows) < SHARE:
            break
        best = Recall("".join(units), count / len(follows), count)
        if units[-1].strip() in _ENDS_SENTENCE:
            break
    return best if best is not None and len(best.text) > 1 and best.text.strip() else None
