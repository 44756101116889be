"""Suggestions for as-you-type UIs: a few short continuations of the text so far, ranked.

    suggestions = await suggest(engine, "The weather today is", n=3, tokens=6)
    # [Suggestion(text=" sunny and warm.", score=0.41), ...]

Cheap by construction, as on a CPU each row of the batch costs about as much as another
continuation: n rows for n suggestions, no samples drawn to find distinct ones. The best is
the greedy continuation, `tokens` long; the others are the greedy continuations of the next
likeliest first tokens, half as long (alternatives of a word or two, as a keyboard's bar
shows). The prompt's KV cells come from the prefix cache, as the text grows a few characters
per request, and the two requests share the prompt's prefill. Each suggestion is cut where a
word or sentence ends, then after the last word the model is still sure of (`min_prob`: the
whole suggestion's probability; its first word always stays), and ranked by the model's mean
token probability. A keyboard's bar does the same: the next word when only it is likely, a few
when they are; a wrong tail would cost the whole suggestion, as Tab takes all of it or nothing.
tests/benchmarks/bench_typing.py measures the trade (services/autocomplete/README.md). A text
that ends mid-word or in a space is asked from before the word or space, the typed characters
the continuation's required start (`heal`): the rest of the word, or the next one. A user
version's `phrases` (phrase_memory.py) put what the user wrote after the same words first; with
`n` 1 that phrase is the whole answer, and the model is not asked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import weakref
from collections.abc import Callable, Sequence

from services.autocomplete.completions import tokenising
from services.autocomplete.engine import Engine
from services.autocomplete.generation import FinishReason, TokenLogprob
from services.autocomplete.http_schema import Suggestion
from services.autocomplete.phrase_memory import PhraseMemory, put_first
from services.autocomplete.sampling import SamplingParams

CONTEXT_TOKENS = 256  # only the end of a long text matters for the next few words ...
CONTEXT_STEP = 64  # ... and its start moves in steps this long, so the cached prefix survives keystrokes
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
# Suggestions decode their own way, whatever a completions request defaults to: greedy, each
# ending at a newline; the alternatives from the 2nd, 3rd, ... likeliest first token.
BEST = SamplingParams(temperature=0.0, logprobs=0, stop=("\n",))
# What a suggestion is asked from before of (`heal`): the word being typed with the space in
# front of it, or a last space; looked for in the text's last HEAL_CHARS characters, and taken
# off as at most HEAL_TOKENS tokens (a longer "word", pasted base64 or an unspaced sentence, is
# asked as is: its healing would cost a token of output each, and the search time grows with it).
_TYPED_PART = re.compile(r"(?: ?\w+| )\Z")
HEAL_CHARS, HEAL_TOKENS = 48, 8


async def suggest(
    engine: Engine,
    text: str,
    *,
    n: int,
    tokens: int,
    timeout_s: float,
    min_prob: float = 0.0,
    version: int | None = None,
    phrases: PhraseMemory | None = None,
) -> list[Suggestion]:
    recalled = phrases.recall(text) if phrases is not None else None
    if recalled is not None and n == 1:  # the phrase is the answer: the model's would go unread
        return put_first(recalled, [], n)
    ids = await tokenising(len(text), engine.encode, text)
    kept, typed = heal(ids, text, engine.decode)
    prompt = context(ids[:kept])
    # The tokens taken off are written again, mostly as one: " sho" as " should". One token more
    # than that (+1 per token taken off) made a suggestion 11-23% slower and no better.
    redo = max(len(ids) - kept - 1, 0)
    short = max(1, tokens // 2)  # the alternatives' length
    best_params = dataclasses.replace(BEST, max_tokens=tokens + redo, prefix=typed)
    streams = []
    try:  # (a second submit refused as busy must not leave the first one running)
        streams.append(engine.submit([prompt], best_params, timeout_s=timeout_s, version=version))
        if n > 1:
            streams.append(
                engine.submit(
                    [prompt],
                    dataclasses.replace(best_params, first_token_rank=2, max_tokens=short + redo),
                    n=n - 1,
                    timeout_s=timeout_s,
                    version=version,
                )
            )
        runs = await asyncio.gather(*(stream.collect() for stream in streams))
    finally:
        for stream in streams:
            stream.cancel()
    best: dict[str, float] = {}
    ended = (FinishReason.STOP, FinishReason.LENGTH)
    for choice in (c for run in runs for c in run.values() if c.finish_reason in ended):
        if not choice.text.startswith(typed):
            continue  # ended before it had written the typed text again
        rest = choice.text[len(typed) :]
        entries = [
            dataclasses.replace(e, offset=e.offset - len(typed))
            for e in choice.logprobs
            if e.offset + len(e.token) > len(typed)
        ]
        cut = cut_at_boundary(rest, complete=choice.finish_reason is FinishReason.STOP)
        cut = cut_where_unsure(cut, entries, min_prob)
        if cut.strip():
            best[cut] = max(best.get(cut, 0.0), _score(entries, len(cut)))
    ranked = [Suggestion(text=t, score=s) for t, s in sorted(best.items(), key=lambda item: -item[1])]
    return put_first(recalled, ranked, n)


def heal(ids: list[int], text: str, decode: Callable[[Sequence[int]], str]) -> tuple[int, str]:
    """How many of `text`'s token `ids` the prompt keeps, and the typed text the suggestion must
    then start with (token healing, as in Microsoft's guidance): the word being typed, with its
    space, is taken off the prompt, from the last token boundary at or before its start.

    BPE tokenizers join a word's leading space to the word, so a prompt ending mid-word ("I sho")
    ends in a token the model takes as a finished word: it went on "I sho" with "'n't" or "!",
    and on a held-out dialogue text no suggestion asked mid-word held the rest of the word (0 of
    228). Asked as "I" with " sho" the required start, it can be " should". A text ending in a
    space ("Dear ") is asked as "Dear", the continuation starting " ", which the model writes
    joined to the word: " Sir". With nothing before the word to ask from, a character cut in
    two at the boundary, or a word of more than HEAL_TOKENS tokens, the text is asked as is.
    """
    tail = text[-HEAL_CHARS:]
    match = _TYPED_PART.search(tail)
    if match is None or (match.start() == 0 and len(tail) < len(text)):  # none, or longer than the tail
        return len(ids), ""
    need = len(tail) - match.start()
    for kept in range(len(ids) - 1, max(len(ids) - HEAL_TOKENS, 1) - 1, -1):
        typed = _text_after(ids, kept, decode)
        if typed is None:
            break
        if len(typed) >= need:
            return (kept, typed) if text.endswith(typed) else (len(ids), "")
    return len(ids), ""


def _text_after(ids: list[int], kept: int, decode: Callable[[Sequence[int]], str]) -> str | None:
    """The text of ids[kept:], decoded after the token before it: SentencePiece drops a text's
    first leading space, so ids[kept:] alone may lose its own (None: no clean cut there)."""
    before, both = decode(ids[kept - 1 : kept]), decode(ids[kept - 1 :])
    return both[len(before) :] if both.startswith(before) and "\ufffd" not in both else None


def context(ids: list[int]) -> list[int]:
    """The end of a long text, CONTEXT_TOKENS - CONTEXT_STEP to CONTEXT_TOKENS tokens of it, cut
    at a multiple of CONTEXT_STEP: while the user types on, the cut stays put and the prompt's
    start (and its KV cells in the prefix cache) with it, where a sliding window would change
    the whole prompt on every keystroke."""
    over = len(ids) - CONTEXT_TOKENS
    if over <= 0:
        return ids
    return ids[math.ceil(over / CONTEXT_STEP) * CONTEXT_STEP :]


class Sessions:
    """The suggestion running for each editor (a `session` of the request): a newer request of
    the same session cancels the older one, whose rows then leave the batch at once. The user
    has typed on; its answer would come too late to show."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[object]] = {}
        self._superseded: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()

    def start(self, session: str | None) -> None:
        """Call from the request's task, before its work: it becomes the session's latest."""
        task = asyncio.current_task()
        if session is None or task is None:
            return
        older = self._running.get(session)
        if older is not None and not older.done():
            older.cancel("superseded")
            self._superseded.add(older)
        self._running[session] = task
        task.add_done_callback(lambda done: self._forget(session, done))

    def superseded(self, task: asyncio.Task[object]) -> bool:
        """Was `task` cancelled because a newer request of its session came?"""
        return task in self._superseded

    def _forget(self, session: str, task: asyncio.Task[object]) -> None:
        if self._running.get(session) is task:
            del self._running[session]


def cut_at_boundary(text: str, *, complete: bool) -> str:
    """`text` up to the end of its first sentence, else up to its last whole word.

    `complete`: the model ended the text itself (end of text, newline), so its last word is
    whole; otherwise generation stopped at the token limit, maybe mid-word.
    """
    sentence = _SENTENCE_END.search(text)
    if sentence:
        return text[: sentence.end()]
    if not complete and not text[-1:].isspace():
        # Drop the word the token limit may have cut: " brown fox ju" -> " brown fox". The first
        # word stays even when unfinished: it may complete the word the user is typing.
        last_space = text.rfind(" ", 1)
        if last_space > 0:
            text = text[:last_space]
    return text.rstrip()


def cut_where_unsure(text: str, entries: list[TokenLogprob], min_prob: float) -> str:
    """`text` up to its last word end where the model's probability of all of it so far (the
    product of its tokens' probabilities, `entries`) is still at least `min_prob`; its first
    word stays whatever its probability (0 keeps the whole text)."""
    ends = [m.start() for m in re.finditer(r"(?<=\S)\s", text)] + [len(text)]
    kept = ends[0]
    for end in ends[1:]:
        logprob = sum(e.logprob for e in entries if e.offset < end and e.logprob is not None)
        if math.exp(logprob) < min_prob:
            break
        kept = end
    return text[:kept]


def _score(entries: list[TokenLogprob], length: int) -> float:
    """Mean probability of the tokens that make up the first `length` characters (0-1)."""
    kept = [e.logprob for e in entries if e.offset < length and e.logprob is not None]
    return math.exp(sum(kept) / len(kept)) if kept else 0.0
