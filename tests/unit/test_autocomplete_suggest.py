"""Suggestions end where a word or sentence ends."""

from __future__ import annotations

import pytest

from services.autocomplete.suggest import cut_at_boundary


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
