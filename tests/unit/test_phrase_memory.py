"""Phrase memory: what the user wrote after the words just typed, recalled from their own text."""

from __future__ import annotations

from pathlib import Path

from services.autocomplete.http_schema import Suggestion
from services.autocomplete.phrase_memory import PHRASES_NAME, PhraseMemory, put_first

TEXT = """Use @click.option to add an option to a command.
Then pass the value to @click.option and the command reads it.
The weather today is grey. It rained, and the weather today is grey.
Rosalind said the forest of Arden was green.
I saw them in the park. I saw them at the gate. I saw a bird."""


def test_a_context_seen_twice_recalls_what_followed_it() -> None:
    memory = PhraseMemory(TEXT)
    recalled = memory.recall("Later the weather today ")
    assert recalled is not None
    assert (recalled.text, recalled.count, recalled.share) == ("is grey.", 2, 1.0)  # to the sentence end


def test_the_word_being_typed_is_completed() -> None:
    recalled = PhraseMemory(TEXT).recall("and the weather tod")
    assert recalled is not None and recalled.text == "ay is grey."


def test_occurrences_that_disagree_give_only_the_words_they_share() -> None:
    recalled = PhraseMemory(TEXT).recall("Yesterday I saw")
    # "them in", "them at", "a bird": 2 of 3 (at least SHARE, 0.6) agree on " them", then they part.
    assert recalled is not None and recalled.text == " them"
    assert PhraseMemory(TEXT.replace("I saw them at", "I saw two cats at")).recall("Yesterday I saw") is None


def test_one_occurrence_of_a_short_context_is_not_enough_but_of_a_long_one_is() -> None:
    memory = PhraseMemory(TEXT)
    assert memory.recall("Then Rosalind said") is None  # "Rosalind said" seen once: chance
    recalled = memory.recall("She said the forest of Arden")  # five words seen once: the user's own
    assert recalled is not None and recalled.text == " was green."


def test_recall_neither_starts_mid_word_nor_crosses_a_line() -> None:
    memory = PhraseMemory("xthe cat sat\nxthe cat sat\nthe cat ran off.\nthe cat ran off.\n")
    recalled = memory.recall("look, the cat")
    assert recalled is not None and recalled.text == " ran off."  # "xthe cat" is not "the cat"
    assert PhraseMemory("a b c\nd e\na b c\nd e\n").recall("a b c\nd") is None
    twice = PhraseMemory("alpha beta gamma\ndelta\nalpha beta gamma\ndelta\n")
    recalled = twice.recall("so alpha beta ")
    assert recalled is not None and recalled.text == "gamma"  # not "gamma" then the next line


def test_tabs_and_other_spaces_match_and_stay_spaces() -> None:
    memory = PhraseMemory("I said\u00a0hello world.\r\nThen I said\thello world.\r\n")
    for typed in ("So I said ", "So I said\t", "So I said\u00a0"):
        recalled = memory.recall(typed)
        assert recalled is not None and recalled.text == "hello world.", typed
    recalled = memory.recall("So I said hello")
    assert recalled is not None and recalled.text == " world."  # the no-break space kept as a space


def test_the_latest_occurrences_decide_and_only_the_typed_texts_end_is_read() -> None:
    memory = PhraseMemory("so we go home today. " * 300 + "so we go away today. " * 300)
    recalled = memory.recall("Now we go")  # 600 occurrences: the latest 256 are all "away"
    assert recalled is not None and recalled.text == " away today."
    pasted = "x" * 100_000 + " and the weather today "  # one 100 KB "word" pasted before
    recalled = PhraseMemory(TEXT).recall(pasted)
    assert recalled is not None and recalled.text == "is grey."


def test_a_single_character_is_not_offered() -> None:
    memory = PhraseMemory("the end.\nthe end.\n")
    assert memory.recall("at the end") is None  # "." alone: Tab would save nothing


def test_nothing_recalled_for_text_never_seen() -> None:
    assert PhraseMemory(TEXT).recall("Quantum chromodynamics") is None
    assert PhraseMemory(TEXT).recall("") is None


def test_the_recalled_phrase_goes_first_and_the_model_keeps_the_rest() -> None:
    memory = PhraseMemory(TEXT)
    model = [Suggestion(text="is sunny", score=0.7), Suggestion(text="was", score=0.2)]
    mixed = put_first(memory.recall("the weather today "), model, n=2)
    assert [s.text for s in mixed] == ["is grey.", "is sunny"]
    assert mixed[0].score == 1.0
    assert put_first(memory.recall("Quantum chromodynamics"), model, n=1) == model[:1]
    same = put_first(memory.recall("the weather today "), [Suggestion(text="is grey.", score=0.4)], n=3)
    assert [s.text for s in same] == ["is grey."]  # offered once


def test_load_reads_the_versions_phrases_and_none_without_them(tmp_path: Path) -> None:
    assert PhraseMemory.load(tmp_path) is None
    (tmp_path / PHRASES_NAME).write_bytes(b"\xff\xfe not UTF-8\n" + TEXT.encode())  # copied in from elsewhere
    loaded = PhraseMemory.load(tmp_path)
    assert loaded is not None and loaded.size >= len(TEXT)
    recalled = loaded.recall("the weather today ")
    assert recalled is not None and recalled.text == "is grey."
