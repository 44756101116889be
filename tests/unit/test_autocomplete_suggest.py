"""Suggestions end where a word or sentence ends, and after the last word the model is sure of; a
text ending in a space or mid-word is asked from before it, the typed part the required start."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace
from typing import Any

import pytest

from services.autocomplete.codec import TokenizerCodec
from services.autocomplete.generation import TokenLogprob
from services.autocomplete.suggest import cut_at_boundary, cut_where_unsure, heal, suggest
from tests.autocomplete_fixtures import gpt2_tokenizer


@pytest.mark.parametrize(
    ("text", "complete", "expected"),
    [
        (" brown fox jum", False, " brown fox"),  # the token limit cut "jumps"
        (" brown fox ", False, " brown fox"),  # ends on a space: the last word is whole
        ("ck brown", False, "ck"),  # the first piece completes the word being typed
        (" fox", False, " fox"),  # a single word stays
        (" is sunny. Tomorrow it", False, " is sunny."),  # first sentence only
        (" is 3.5 degrees", True, " is 3.5 degrees"),  # a decimal point is no sentence end
        (" the end", True, " the end"),  # the model ended it: nothing was cut
    ],
)
def test_cut_at_boundary(text: str, complete: bool, expected: str) -> None:
    assert cut_at_boundary(text, complete=complete) == expected


def _tokens(*pieces: tuple[str, float]) -> tuple[str, list[TokenLogprob]]:
    """A continuation and its tokens' entries from (token text, probability) pairs."""
    entries, offset = [], 0
    for token, prob in pieces:
        entries.append(TokenLogprob(token, math.log(prob), {}, offset))
        offset += len(token)
    return "".join(t for t, _ in pieces), entries


@pytest.mark.parametrize(
    ("pieces", "min_prob", "expected"),
    [
        ([(" the", 0.9), (" Queen", 0.8), (" said", 0.3)], 0.5, " the Queen"),  # 0.72, then 0.22
        ([(" the", 0.2), (" Queen", 0.9)], 0.5, " the"),  # the first word stays, however unsure
        ([(" Mad", 0.9), ("ame", 0.9), (" said", 0.9)], 0.5, " Madame said"),  # words of 2 tokens
        ([(" Mad", 0.9), ("ame", 0.5), (" said", 0.9)], 0.5, " Mad" + "ame"),  # never mid-word
        ([(" the", 0.9), (",", 0.9), (" she", 0.4)], 0.5, " the,"),  # punctuation goes with its word
        ([(" the", 0.1), (" Queen", 0.1)], 0.0, " the Queen"),  # 0: the whole suggestion
    ],
)
def test_cut_where_unsure(pieces: list[tuple[str, float]], min_prob: float, expected: str) -> None:
    text, entries = _tokens(*pieces)
    assert cut_where_unsure(text, entries, min_prob) == expected


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> TokenizerCodec:
    """The real GPT-2 tokenizer: where token boundaries fall is what `heal` works with."""
    return TokenizerCodec(gpt2_tokenizer(tmp_path_factory.mktemp("gpt2")))


class FakeEngine:
    """A fake engine with the real GPT-2 tokenizer: records each prompt (as text) and required
    start it is asked with, and continues every prompt with `continuation`, ended by the model
    (stop). A real engine's continuation starts with the required start (test_autocomplete_engine.py)."""

    def __init__(self, codec: TokenizerCodec, continuation: str, logprobs: list[Any] | None = None) -> None:
        self.codec = codec
        self.continuation = continuation
        self.logprobs = logprobs
        self.asked: list[tuple[str, str]] = []

    def encode(self, text: str) -> list[int]:
        return self.codec.encode(text)

    def decode(self, ids: Any) -> str:
        return self.codec.decode(ids)

    def submit(self, prompts: Any, params: Any, *, n: int = 1, **options: Any) -> Any:
        from services.autocomplete.generation import FinishReason

        self.asked.append((self.decode(prompts[0]), params.prefix))
        choice = SimpleNamespace(
            text=self.continuation,
            finish_reason=FinishReason.STOP,
            logprobs=self.logprobs or [TokenLogprob(self.continuation, -0.1, {}, 0)],
        )

        class Stream:
            async def collect(self) -> dict[int, Any]:
                return {i: choice for i in range(n)}

            def cancel(self) -> None:
                pass

        return Stream()


@pytest.mark.parametrize(
    ("text", "continuation", "asked", "offered"),
    [
        ("Dear", " Sir", ("Dear", ""), [" Sir"]),  # a first word has nothing before it to ask from
        ("Dear ", " Sir", ("Dear", " "), ["Sir"]),  # asked without the space; offered without it too
        ("Dear  ", " Sir", ("Dear ", " "), ["Sir"]),  # only the last space is taken off
        ("I sho", " should go", ("I", " sho"), ["uld go"]),  # mid-word: asked from the word's start
        ("I should", " should go", ("I", " should"), [" go"]),  # a whole word too: it may go on
        ("Hi,\nthan", "thanks", ("Hi,\n", "than"), ["ks"]),  # a word with no space before it
        ("Hello,", " world", ("Hello,", ""), [" world"]),  # after punctuation: asked as is
        ("Best regards\n", "Anna", ("Best regards\n", ""), ["Anna"]),  # a new line: as is
    ],
)
def test_a_suggestion_is_asked_from_the_start_of_the_word_being_typed(
    codec: TokenizerCodec, text: str, continuation: str, asked: tuple[str, str], offered: list[str]
) -> None:
    engine = FakeEngine(codec, continuation)
    found = asyncio.run(suggest(engine, text, n=1, tokens=6, timeout_s=5))
    assert engine.asked == [asked]
    assert [s.text for s in found] == offered


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I sho", "I"),
        ("It was wonderf", "It was"),  # a word of several tokens: all of them
        ("naïve caf", "naïve"),
        ("Dear ", "Dear"),
        ("Dear", "Dear"),  # nothing would be left to ask from
        ("end.", "end."),
        ("Hi John\n", "Hi John\n"),  # a new line: nothing typed of the next word yet
        ("see " + "a1b2" * 500, "see " + "a1b2" * 500),  # a "word" of hundreds of tokens: as is
        ("Dear Sir" + "\n" * 40 + "Than", "Dear Sir" + "\n" * 40),
    ],
)
def test_heal_keeps_the_tokens_before_the_word_being_typed(
    codec: TokenizerCodec, text: str, expected: str
) -> None:
    ids = codec.encode(text)
    kept, typed = heal(ids, text, codec.decode)
    assert (codec.decode(ids[:kept]), typed) == (expected, text[len(expected) :])


def test_a_suggestion_ends_after_the_words_the_model_is_sure_of(codec: TokenizerCodec) -> None:
    text, entries = _tokens((" Sir", 0.9), (" Walter", 0.3))
    sure = asyncio.run(
        suggest(FakeEngine(codec, text, entries), "Dear", n=1, tokens=6, timeout_s=5, min_prob=0.5)
    )
    whole = asyncio.run(suggest(FakeEngine(codec, text, entries), "Dear", n=1, tokens=6, timeout_s=5))
    assert [s.text for s in sure] == [" Sir"]
    assert [s.text for s in whole] == [" Sir Walter"]
