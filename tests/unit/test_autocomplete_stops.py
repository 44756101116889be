"""Stop strings are matched on text, across token boundaries, and never leak into the output."""

from __future__ import annotations

from services.autocomplete.stops import StoppableText

PIECES = ["Hello", " wor", "ld", ".", "\n\n", "Next", " par", "agraph"]


def decode(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids)


def run(stops: tuple[str, ...], upto: int = len(PIECES)) -> tuple[list[str], StoppableText]:
    text = StoppableText(decode, stops)
    pieces = []
    for n in range(1, upto + 1):
        pieces.append(text.push(list(range(n))))
        if text.stopped:
            break
    pieces.append(text.flush())
    return pieces, text


def test_stop_spanning_tokens_cuts_before_it() -> None:
    pieces, text = run(("world",))
    assert text.stopped and "".join(pieces) == "Hello "


def test_stop_inside_a_token() -> None:
    pieces, text = run(("\n",))
    assert text.stopped and "".join(pieces) == "Hello world."


def test_possible_stop_prefix_is_held_back_until_settled() -> None:
    text = StoppableText(decode, ("wordy",))
    assert text.push([0]) == "Hello"
    assert text.push([0, 1]) == " "  # " wor" could start "wordy": held back
    assert text.push([0, 1, 2]) == "world"  # "world" is not "wordy": released
    assert not text.stopped


def test_no_stop_releases_everything() -> None:
    pieces, text = run(())
    assert not text.stopped and "".join(pieces) == "".join(PIECES)


def test_half_a_utf8_character_is_held_back() -> None:
    text = StoppableText(lambda ids: ["caf", "caf\ufffd", "café"][len(ids) - 1])
    assert text.push([1]) == "caf"
    assert text.push([1, 2]) == ""
    assert text.push([1, 2, 3]) == "é"


def test_a_stop_is_not_matched_in_half_a_character() -> None:
    # The emoji's bytes span two tokens: after the first, the text ends in U+FFFD.
    text = StoppableText(lambda ids: ["Hi ", "Hi \ufffd", "Hi \U0001f600!"][len(ids) - 1], ("\ufffd",))
    pieces = [text.push(list(range(n))) for n in (1, 2, 3)] + [text.flush()]
    assert not text.stopped and "".join(pieces) == "Hi \U0001f600!"


def test_a_real_replacement_character_still_stops() -> None:
    text = StoppableText(lambda ids: ["a\ufffd", "a\ufffdb"][len(ids) - 1], ("\ufffd",))
    pieces = [text.push([0]), text.push([0, 1]), text.flush()]
    assert text.stopped and "".join(pieces) == "a"
