"""Keystroke savings: how much typing the suggestions save, measured by a simulated typist.

    modelport evaluate suggest heldout/ --url http://localhost:3001   # a running service
    modelport evaluate suggest heldout/ --model smollm2-135m          # the engine, in process

    typing = await type_text(text, suggester)    # -> Typing(characters, keystrokes, ...)

The typist types held-out text as the example page's user does. Before each keystroke it asks
for suggestions for the text so far (the page asks after every key, debounced; a typist who
waits for each answer is that page at its slowest typing speed). If a suggestion is exactly
what comes next and ends where a word ends, the typist presses Tab (one keystroke) for the
longest such suggestion; otherwise it types the next character (one keystroke). An empty
editor asks nothing, as the page does not. Savings = 1 - keystrokes / characters: 0 when
nothing is ever taken, 0.25 when a quarter of the typing was saved.

`asks="word"` asks only where a word has just ended (before the space or punctuation after
it), as a phone keyboard's next-word bar: about a fifth of the requests, and a lower bound on
the savings (no completing a word midway). It is for busy machines: on 2 shared cores at load 20 a
suggestion took ~1 s, so asking before every key of 1,000 characters took 17 minutes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What the typist asks with: the text so far -> the suggested continuations, best first.
Suggester = Callable[[str], Awaitable[list[str]]]
ASKS = ("key", "word")  # ask before every keystroke, or only where a word has just ended


class SuggestFailed(RuntimeError):
    """The service refused or failed a suggestion request; the message says what it answered."""


@dataclass
class Typing:
    characters: int = 0  # characters of text typed (whether by keys or by Tab)
    keystrokes: int = 0  # keys pressed: characters typed one by one, plus one Tab per accepted suggestion
    requests: int = 0  # suggestion requests made
    accepted: int = 0  # requests that offered the next word(s) and were accepted
    latencies: list[float] = field(default_factory=list)  # seconds per request

    @property
    def savings(self) -> float:
        return 1 - self.keystrokes / self.characters if self.characters else 0.0

    def latency_ms(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "keystroke_savings": round(self.savings, 4),
            "characters": self.characters,
            "keystrokes": self.keystrokes,
            "requests": self.requests,
            "accepted_share": round(self.accepted / self.requests, 4) if self.requests else 0.0,
            "latency_p50_ms": round(self.latency_ms(0.5), 1),
            "latency_p95_ms": round(self.latency_ms(0.95), 1),
        }


def accepted(suggestions: list[str], rest: str) -> str | None:
    """The longest suggestion that is exactly how `rest` (the text still to type) goes on and
    ends where a word of it ends; None if no suggestion is. A one-character suggestion saves
    nothing (Tab costs what the key does), so it is not taken."""
    fits = [s for s in suggestions if len(s) > 1 and rest.startswith(s) and word_ends(rest, len(s))]
    return max(fits, key=len, default=None)


def word_ends(text: str, end: int) -> bool:
    """Is `end` a word boundary of `text`: not between two letters or digits?"""
    return end >= len(text) or not (text[end - 1].isalnum() and text[end].isalnum())


async def type_text(
    text: str,
    suggester: Suggester,
    typing: Typing | None = None,
    on_key: Callable[[], None] | None = None,
    *,
    asks: str = "key",
) -> Typing:
    """Type `text` to the end with `suggester`'s help; counts go into `typing` (a new one if None).
    `on_key` is called after each keystroke (progress bars). `asks`: "key" or "word" (above)."""
    if asks not in ASKS:
        raise ValueError(f"asks={asks!r}: pick one of {ASKS}")
    typing = typing if typing is not None else Typing()
    done = 0
    while done < len(text):
        taken = None
        word_ended = done < len(text) and text[done - 1].isalnum() and not text[done].isalnum()
        if text[:done].strip() and (asks == "key" or word_ended):
            started = time.perf_counter()
            offered = await suggester(text[:done])
            typing.latencies.append(time.perf_counter() - started)
            typing.requests += 1
            taken = accepted(offered, text[done:])
        step = len(taken) if taken else 1
        typing.accepted += taken is not None
        typing.keystrokes += 1
        typing.characters += step
        done += step
        if on_key is not None:
            on_key()
    return typing


def read_texts(path: Path, max_chars: int | None = None) -> list[str]:
    """The texts to type: a .txt file, or every .txt file under a folder (sorted), each one
    document typed from an empty editor. With `max_chars`, only the first that many characters
    in all, the last text cut where a word ends."""
    files = sorted(p for p in path.rglob("*.txt") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no .txt files in it")
    texts = []
    left = max_chars if max_chars is not None else math.inf
    for file in files:
        text = file.read_text(encoding="utf-8").replace("\r\n", "\n").strip()
        if left <= 0:
            break
        if len(text) > left:
            cut = text.rfind(" ", 0, int(left) + 1)
            text = text[: cut if cut > 0 else int(left)]
        if text:
            texts.append(text)
            left -= len(text)
    if not texts:
        raise ValueError(f"{path}: its .txt files hold no text")
    return texts


async def type_texts(
    texts: list[str],
    suggester: Suggester,
    on_key: Callable[[Typing], None] | None = None,
    *,
    asks: str = "key",
) -> Typing:
    """Type every text in turn, counting into one `Typing`."""
    typing = Typing()
    for text in texts:
        await type_text(
            text, suggester, typing, None if on_key is None else lambda: on_key(typing), asks=asks
        )
    return typing


def http_suggester(client: Any, *, n: int, model: str | None = None) -> Suggester:
    """Suggestions from a running service's `/v1/suggest` (`client`: an httpx.AsyncClient with
    its base URL and any Authorization header set). `model` picks the version, as a request's
    `model` does."""

    async def ask(text: str) -> list[str]:
        body: dict[str, Any] = {"text": text, "n": n}
        if model is not None:
            body["model"] = model
        response = await client.post("/v1/suggest", json=body)
        if response.status_code != 200:
            raise SuggestFailed(f"/v1/suggest answered {response.status_code}: {response.text[:500]}")
        return [s["text"] for s in response.json()["suggestions"]]

    return ask


def served_as(entry: Any) -> tuple[Path, Path | None]:
    """What the service runs for store entry `entry`: (model directory, adapter GGUF or None). A
    user version runs as its base with its adapter set (user_versions.py), never as the merged
    model a `finetune text --lora` version also stores (its greedy suggestions differ in places);
    anything else runs as itself. ValueError for a version the service would refuse to run."""
    from services.autocomplete.user_versions import adapter_of
    from services.core.model_store import resolve

    adapter, base = adapter_of(entry)
    if adapter is None:
        return Path(entry.path), None
    if base is None or not adapter.is_file():
        raise ValueError(f"{entry.tag}: a user version without its base or adapter GGUF; import it again")
    return Path(resolve(base).path), adapter


@contextmanager
def engine_suggester(
    model_dir: Path, *, n: int, settings: Any = None, adapter: Path | None = None
) -> Iterator[Suggester]:
    """Suggestions from the service's own engine and `suggest`, run in this process on the
    store entry (or transformers directory with its model.gguf) at `model_dir`; with `adapter`
    (a user version's adapter GGUF), on that base with the adapter set, as the service serves a
    version (user_versions.py)."""
    with engine_suggesters(model_dir, [adapter], n=n, settings=settings) as (ask,):
        yield ask


@contextmanager
def engine_suggesters(
    model_dir: Path, adapters: Sequence[Path | None], *, n: int, settings: Any = None
) -> Iterator[list[Suggester]]:
    """One suggester for each of `adapters` (None: the base alone), all from one engine on the
    base at `model_dir`, as one service serves many users: typists asking at once share its
    forward passes (rows of the same version share one; each version runs its own). A
    version's phrase memory beside its adapter is used as the service uses it
    (`settings.phrase_memory`). Leaves torch's thread count as it found it (the llama.cpp
    backend sets it to 1, and training after it would run on one thread)."""
    import torch

    from services.autocomplete.backends import load_backend
    from services.autocomplete.engine import Engine
    from services.autocomplete.phrase_memory import PhraseMemory
    from services.autocomplete.settings import Settings
    from services.autocomplete.suggest import suggest

    settings = settings or Settings.from_env()
    threads = torch.get_num_threads()
    engine = Engine(
        lambda: load_backend(model_dir, settings),
        max_batch_size=settings.max_batch_size,
        prefill_chunk_tokens=settings.prefill_chunk_tokens,
    )
    torch.set_num_threads(threads)

    def version_of(adapter: Path | None) -> int | None:
        def load(backend: Any) -> int:  # llama.cpp's backend (the only one with adapters)
            return int(backend.load_adapter(adapter))

        return None if adapter is None else int(engine.run_in_engine(load).result())

    def suggester(adapter: Path | None) -> Suggester:
        version = version_of(adapter)
        phrases = None
        if adapter is not None and settings.phrase_memory:
            phrases = PhraseMemory.load(adapter.parent)

        async def ask(text: str) -> list[str]:
            found = await suggest(
                engine,
                text,
                n=n,
                tokens=settings.suggest_tokens,
                timeout_s=settings.request_timeout_s,
                min_prob=settings.suggest_min_prob,
                version=version,
                phrases=phrases,
            )
            return [s.text for s in found]

        return ask

    # The engine's thread has no stop: it idles, holding its model, till the process ends.
    yield [suggester(adapter) for adapter in adapters]


def measure(
    entry: Any,
    texts: list[str],
    *,
    n: int = 1,
    asks: str = "key",
    on_key: Callable[[Typing], None] | None = None,
) -> Typing:
    """Keystroke savings of store entry `entry` as the service serves it (`served_as`: a user
    version as its base with its adapter) on `texts`, in process: `modelport evaluate suggest
    --model`, and fine-tuning's before and after, so a version's stored figures are what its
    users get. ValueError for an entry the service would refuse to run."""
    model_dir, adapter = served_as(entry)
    with engine_suggester(model_dir, n=n, adapter=adapter) as suggester:
        return asyncio.run(type_texts(texts, suggester, on_key, asks=asks))
