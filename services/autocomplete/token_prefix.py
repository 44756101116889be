"""Which tokens may come next when a continuation must start with given text (token healing).

    prefixes = TokenPrefixes(token_bytes(tokenizer))
    prefixes.allowed(b" sho")      # ids of " sho", " shoe", " should", " sh", " s", ...
    prefixes.consumed(b" sho", id_of_sh)   # b"o": what is still to match after " sh"

A suggestion asked mid-word ("I sho") is asked from the word's start ("I") with the typed
characters as the continuation's required start (suggest.py): the prompt no longer ends in a
token the model takes as a finished word. A token agrees with what is left to match when one
of the two starts with the other. Matching is on bytes: byte-level BPE tokens may hold part of
a character.
"""

from __future__ import annotations

import bisect
import functools
import re
from typing import Any

import numpy as np

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte fallback
SENTENCEPIECE_SPACE = "\u2581"


def token_bytes(tokenizer: Any) -> list[bytes]:
    """Each token id's bytes (b"" for special tokens, which no text matches), from a Hugging Face
    tokenizer: GPT-2-style byte-level vocabularies map their characters back to bytes;
    SentencePiece ones write a space as U+2581 and a lone byte as <0xNN>."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    if _byte_level(tokenizer):
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        byte_of = {char: byte for byte, char in bytes_to_unicode().items()}

        def decode(piece: str) -> bytes:
            return bytes(byte_of[c] for c in piece) if all(c in byte_of for c in piece) else b""

    else:

        def decode(piece: str) -> bytes:
            match = _BYTE_PIECE.fullmatch(piece)
            return bytes([int(match[1], 16)]) if match else piece.replace(SENTENCEPIECE_SPACE, " ").encode()

    return [b"" if i in special or piece is None else decode(piece) for i, piece in enumerate(pieces)]


def _byte_level(tokenizer: Any) -> bool:
    decoder = getattr(tokenizer.backend_tokenizer, "decoder", None)
    return type(decoder).__name__ == "ByteLevel" or "ByteLevel" in repr(decoder)


class TokenPrefixes:
    """The vocabulary sorted by bytes, to find the tokens that agree with a required start."""

    def __init__(self, vocabulary: list[bytes]) -> None:
        self.vocabulary = vocabulary
        order = sorted((b, i) for i, b in enumerate(vocabulary) if b)
        self._sorted = [b for b, _ in order]
        self._ids = np.array([i for _, i in order], dtype=np.int64)
        self._exact: dict[bytes, list[int]] = {}
        for b, i in order:
            self._exact.setdefault(b, []).append(i)
        # This engine's own cache: the same few starts come back keystroke after keystroke.
        self.allowed = functools.lru_cache(maxsize=1024)(self._allowed)

    def _allowed(self, rest: bytes) -> np.ndarray:
        """Ids of the tokens that agree with `rest` (non-empty): those that start with all of it,
        and those that are a start of it (int64; empty when none does)."""
        start = bisect.bisect_left(self._sorted, rest)
        after = _after_all_starting(rest)
        end = len(self._sorted) if after is None else bisect.bisect_left(self._sorted, after, lo=start)
        shorter = [i for k in range(1, len(rest)) for i in self._exact.get(rest[:k], ())]
        return np.concatenate([np.array(shorter, dtype=np.int64), self._ids[start:end]])

    def agrees(self, rest: bytes, token: int) -> bool:
        piece = self.vocabulary[token]
        return bool(piece) and (rest.startswith(piece) or piece.startswith(rest))

    def consumed(self, rest: bytes, token: int) -> bytes:
        """What of `rest` is still to match once `token` (one that agrees with it) is chosen."""
        return rest[len(self.vocabulary[token]) :]


def _after_all_starting(rest: bytes) -> bytes | None:
    """The least byte string after every string that starts with `rest` (None: there is none)."""
    stripped = rest.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None
