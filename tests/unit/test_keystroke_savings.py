"""The simulated typist of `modelport evaluate suggest`, on fake suggesters (named as fakes):
exact keystrokes on small strings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.autocomplete.keystroke_savings import Typing, accepted, read_texts, type_text


def fake_suggester(table: dict[str, list[str]]):  # returns a Suggester
    """A fake that offers `table[text so far]`, nothing for any other text, and records the asks."""
    asked: list[str] = []

    async def suggest(text: str) -> list[str]:
        asked.append(text)
        return table.get(text, [])

    suggest.asked = asked  # type: ignore[attr-defined]
    return suggest


def typed(text: str, table: dict[str, list[str]]) -> tuple[Typing, list[str]]:
    suggester = fake_suggester(table)
    return asyncio.run(type_text(text, suggester)), suggester.asked  # type: ignore[attr-defined]


def test_without_suggestions_every_character_is_a_keystroke() -> None:
    typing, asked = typed("Hi there", {})
    assert (typing.characters, typing.keystrokes, typing.savings) == (8, 8, 0.0)
    # Asked before every key but the first (an empty editor asks nothing).
    assert asked == ["H", "Hi", "Hi ", "Hi t", "Hi th", "Hi the", "Hi ther"]
    assert (typing.requests, typing.accepted) == (7, 0)


def test_a_right_suggestion_costs_one_keystroke() -> None:
    # "Dear" typed (4 keys), " Sir" taken with Tab (1), "," typed (1): 6 keys for 9 characters.
    typing, asked = typed("Dear Sir,", {"Dear": [" Sir"]})
    assert (typing.characters, typing.keystrokes) == (9, 6)
    assert typing.savings == pytest.approx(1 - 6 / 9)
    assert (typing.requests, typing.accepted) == (5, 1)
    assert asked[-1] == "Dear Sir"  # after Tab it asks again, as the page does


def test_the_longest_fitting_suggestion_wins_and_wrong_ones_cost_nothing() -> None:
    table = {"The": [" cat", " quick", " quick brown fox", " quick brown fix"]}
    typing, _ = typed("The quick brown fox.", table)
    # "The" (3) + Tab for " quick brown fox" (1) + "." (1) = 5 keys for 20 characters.
    assert (typing.characters, typing.keystrokes, typing.accepted) == (20, 5, 1)


def test_a_suggestion_that_stops_inside_a_word_is_not_taken() -> None:
    # " qu" is a prefix of " quick" but ends mid-word: a user would not take it as the word.
    typing, _ = typed("A quick", {"A": [" qu"]})
    assert (typing.keystrokes, typing.accepted) == (7, 0)


def test_finishing_the_word_being_typed_counts() -> None:
    typing, _ = typed("Hello world", {"Hel": ["lo world"]})
    assert (typing.characters, typing.keystrokes) == (11, 4)


def test_asking_where_words_end_asks_once_a_word() -> None:
    suggester = fake_suggester({"Dear": [" Sir"]})
    typing = asyncio.run(type_text("Dear Sir, hi", suggester, asks="word"))
    assert suggester.asked == ["Dear", "Dear Sir"]  # type: ignore[attr-defined]
    # "Dear" (4) + Tab (1) + ", hi" (4)
    assert (typing.characters, typing.keystrokes, typing.requests) == (12, 9, 2)


def test_one_character_suggestions_are_not_taken() -> None:
    typing, _ = typed("ab.", {"ab": ["."]})
    assert (typing.keystrokes, typing.accepted) == (3, 0)


def test_accepted_picks_the_longest_match_ending_at_a_word_boundary() -> None:
    rest = " brown fox jumps"
    assert accepted([" brown", " brown fox", " brown fo"], rest) == " brown fox"
    assert accepted([" red"], rest) is None
    assert accepted([" brown fox jumps"], rest) == " brown fox jumps"  # to the end of the text


def test_latency_percentiles_and_summary() -> None:
    typing = Typing(characters=10, keystrokes=4, requests=4, accepted=1, latencies=[0.01, 0.02, 0.03, 0.5])
    summary = typing.summary()
    assert summary["keystroke_savings"] == 0.6 and summary["accepted_share"] == 0.25
    assert (summary["latency_p50_ms"], summary["latency_p95_ms"]) == (20.0, 500.0)


def test_read_texts_types_files_in_order_up_to_max_chars(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one two three\r\n")
    (tmp_path / "b.txt").write_text("four five six")
    assert read_texts(tmp_path) == ["one two three", "four five six"]
    assert read_texts(tmp_path, max_chars=18) == ["one two three", "four"]  # cut where a word ends
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no \.txt files"):
        read_texts(tmp_path / "empty")
