"""Suggestions end where a word or sentence ends; a text ending in a space is asked without it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from services.autocomplete.suggest import cut_at_boundary, suggest


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


class FakeEngine:
    """A fake engine: records the text it is asked to encode and continues every prompt with
    `continuation`, ended by the model (stop)."""

    def __init__(self, continuation: str) -> None:
        self.continuation = continuation
        self.encoded: list[str] = []

    def encode(self, text: str) -> list[int]:
        self.encoded.append(text)
        return [1, 2, 3]

    def submit(self, prompts: Any, params: Any, *, n: int = 1, **options: Any) -> Any:
        from services.autocomplete.generation import FinishReason, TokenLogprob

        choice = SimpleNamespace(
            text=self.continuation,
            finish_reason=FinishReason.STOP,
            logprobs=[TokenLogprob(self.continuation, -0.1, {}, 0)],
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
        ("Dear", " Sir", "Dear", [" Sir"]),
        ("Dear ", " Sir", "Dear", ["Sir"]),  # asked without the space; offered without it too
        ("Dear ", "est", "Dear", []),  # "Dearest" would glue onto the word: dropped
        ("Dear  ", " Sir", "Dear ", ["Sir"]),  # only the last space is taken off
    ],
)
def test_a_text_ending_in_a_space_is_asked_without_it(
    text: str, continuation: str, asked: str, offered: list[str]
) -> None:
    engine = FakeEngine(continuation)
    found = asyncio.run(suggest(engine, text, n=1, tokens=6, timeout_s=5))  # type: ignore[arg-type]
    assert engine.encoded == [asked]
    assert [s.text for s in found] == offered
