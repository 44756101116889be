"""Text <-> token ids with a Hugging Face tokenizer: what both engine backends tokenise with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.autocomplete.token_prefix import token_bytes


class TokenizerCodec:
    """`encode`/`decode` for a backend, safe to call from the event loop and the engine thread.

    It calls the Rust tokenizer itself: the Python wrapper mutates padding state on each
    call, which fails when the event loop encodes while the engine's thread decodes.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._codec = tokenizer.backend_tokenizer

    def encode(self, text: str) -> list[int]:
        # encode_batch lets go of the GIL while it works, encode does not: with encode, a 500 KB
        # prompt in a worker thread still held the event loop for its whole second.
        [encoding] = self._codec.encode_batch([text], add_special_tokens=False)
        return list(encoding.ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._codec.decode(list(ids), skip_special_tokens=False))

    def token_bytes(self) -> list[bytes]:
        return token_bytes(self.tokenizer)
