"""User versions' adapters in the engine's llama.cpp model: loaded on first use, least recently
used out when the next would pass the memory budget, never one a request is using.

    versions = LoadedVersions(engine, budget_bytes=512 * 2**20)
    version = await versions.acquire(tag, adapter_path)   # the id engine.submit(version=) takes
    versions.phrases(tag)                                  # its phrase memory, if it has one
    ...                                                    # the request runs
    versions.release(tag)

A version's phrase memory (phrase_memory.py, the text beside its adapter) is loaded and unloaded
with it and counts in the budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.autocomplete import metrics
from services.autocomplete.phrase_memory import PhraseMemory
from services.core.api_errors import ApiError

logger = logging.getLogger("modelport.autocomplete")


@dataclass
class _Loaded:
    id: int  # the backend's version id
    size: int  # bytes: the adapter's float16 tensors (what llama.cpp holds) and its phrase memory
    phrases: PhraseMemory | None = None
    users: int = 0  # requests running with it now


class LoadedVersions:
    def __init__(self, engine: Any, budget_bytes: int, *, phrases: bool = True) -> None:
        self._engine = engine
        self.budget = budget_bytes
        self._with_phrases = phrases
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()  # least recently used first
        self._loading = asyncio.Lock()  # one load (and its evictions) at a time

    @property
    def used(self) -> int:
        return sum(v.size for v in self._loaded.values())

    async def acquire(self, tag: str, adapter: Path) -> int:
        """The version's id in the backend, loading it first if it is not loaded; the caller
        must `release(tag)` when its request is done. ApiError 400 when llama.cpp refuses the
        adapter (nothing stays loaded), 429 when every loaded version is in use and no room is left."""
        loaded = self._loaded.get(tag)
        if loaded is None:
            async with self._loading:
                loaded = self._loaded.get(tag) or await self._load(tag, adapter)
        self._loaded.move_to_end(tag)
        loaded.users += 1
        return loaded.id

    def phrases(self, tag: str) -> PhraseMemory | None:
        """The phrase memory of loaded version `tag` (None: it has none, or phrases are off)."""
        loaded = self._loaded.get(tag)
        return None if loaded is None else loaded.phrases

    def release(self, tag: str) -> None:
        loaded = self._loaded.get(tag)
        if loaded is not None:
            loaded.users -= 1

    async def _load(self, tag: str, adapter: Path) -> _Loaded:
        phrases = None
        if self._with_phrases:
            phrases = await asyncio.to_thread(PhraseMemory.load, adapter.parent)
        size = adapter.stat().st_size
        if phrases is not None and size + phrases.size > self.budget:
            logger.warning("version %s served without its phrase memory: with it, over the budget", tag)
            phrases = None
        size += phrases.size if phrases is not None else 0
        if size > self.budget:
            raise ApiError(
                503,
                f"version {tag} needs {size / 2**20:.0f} MB, more than this server's whole adapter "
                f"budget ({self.budget / 2**20:.0f} MB, MODELPORT_AUTOCOMPLETE_ADAPTER_BUDGET_MB)",
                code="adapter_budget_too_small",
            )
        while self.used + size > self.budget:
            idle = next((t for t, v in self._loaded.items() if v.users == 0), None)
            if idle is None:
                raise ApiError(
                    429,
                    f"every loaded user version is in use and {tag} does not fit beside them "
                    "(MODELPORT_AUTOCOMPLETE_ADAPTER_BUDGET_MB); retry shortly",
                    code="versions_busy",
                    headers={"Retry-After": "1"},
                )
            evicted = self._loaded.pop(idle)
            await self._in_engine(lambda backend, v=evicted.id: backend.free_adapter(v))
            metrics.VERSION_EVICTIONS.inc()
            metrics.VERSIONS_LOADED.set(len(self._loaded))
            logger.info("user version %s unloaded (least recently used; adapter budget)", idle)
        started = time.perf_counter()
        try:
            version = await self._in_engine(lambda backend: backend.load_adapter(adapter))
        except ValueError as refused:
            raise ApiError(
                400, f"version {tag}: {refused}", code="adapter_does_not_fit", param="model"
            ) from None
        seconds = time.perf_counter() - started
        loaded = self._loaded[tag] = _Loaded(version, size, phrases=phrases)
        metrics.VERSION_LOADS.inc()
        metrics.VERSION_LOAD_SECONDS.observe(seconds)
        metrics.VERSIONS_LOADED.set(len(self._loaded))
        logger.info("user version %s loaded in %.0f ms (%.1f MB)", tag, seconds * 1000, size / 2**20)
        return loaded

    async def _in_engine(self, work: Any) -> Any:
        return await asyncio.wrap_future(self._engine.run_in_engine(work))
