"""Generated text, released piece by piece, cut exactly at stop strings.

Stop strings are matched on the decoded text, not on tokens, so a stop that spans several
tokens (or sits inside one) still ends the text right before it. Text that could be the
start of a stop string, or half a UTF-8 character, is held back until the next token
settles it, so a streamed piece never has to be taken back.

    text = StoppableText(tokenizer.decode, stops=("\\n\\n", "END"))
    piece = text.push(token_ids)   # new text safe to send; text.stopped once a stop is seen
    rest = text.flush()            # at the end: whatever was held back
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

PARTIAL_CHARACTER = "\ufffd"  # what a decoder gives for a UTF-8 sequence cut between tokens


class StoppableText:
    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self.text = ""  # the text so far (after a stop: cut before it)
        self.released = 0  # characters of `text` already handed out
        self.stopped = False

    def push(self, token_ids: Sequence[int]) -> str:
        """Decode all tokens generated so far; return the newly releasable text."""
        self.text = self._decode(token_ids)
        search_from = max(0, self.released - self._longest)
        # Not in a trailing partial character: the next token may complete it (stop "\ufffd"
        # must not cut an emoji whose bytes span two tokens).
        settled = self.text.rstrip(PARTIAL_CHARACTER)
        hits = [i for i in (settled.find(s, search_from) for s in self._stops) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            return self._release(len(self.text))
        return self._release(len(self.text) - self._held_back())

    def flush(self) -> str:
        """All remaining text, held-back parts included (the sequence is over)."""
        return self._release(len(self.text))

    def _held_back(self) -> int:
        held = len(self.text) - len(self.text.rstrip(PARTIAL_CHARACTER))
        unsettled = self.text[: len(self.text) - held]
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(unsettled)), 0, -1):
                if unsettled.endswith(stop[:size]):
                    held = max(held, len(self.text) - len(unsettled) + size)
                    break
        return held

    def _release(self, end: int) -> str:
        end = max(end, self.released)
        piece, self.released = self.text[self.released : end], end
        return piece
