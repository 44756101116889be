"""Batch concurrent requests into one model call, up to `lanes` calls at once (asyncio style).

    batcher = MicroBatcher(run_batch, max_size=2, lanes=2)
    result = await batcher.submit(item)

A free lane takes the oldest request and whatever else is queued then, up to `max_size`; it
waits for no one (a lone request runs at once, and requests that come while every lane is busy
queue up and go together next). Each lane runs its batch in a thread of its own, always the same
one (a pool's changing threads each grow a malloc arena), so the event loop keeps accepting (and
refusing) requests meanwhile. Two lanes on 2 cores: one batch leaves a core idle through much of
its small model calls and its numpy and Python steps, and the second batch fills it (README,
"Speed against Ultralytics"). Freed memory goes back to the OS once every lane has been idle for
IDLE_TRIM_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from services.core.memory import return_freed_memory

IDLE_TRIM_S = 2.0  # not after every batch: trimming then cost the next request ~35 ms (measured)
Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], *, max_size: int, lanes: int = 1
    ) -> None:
        if max_size < 1 or lanes < 1:
            raise ValueError(f"max_size and lanes must be at least 1, got {max_size} and {lanes}")
        self.run_batch = run_batch
        self.max_size = max_size
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._lanes: list[asyncio.Task[None]] = []
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix=f"batch-{n}") for n in range(lanes)]
        self._running = 0  # batches running now, across lanes
        self._trim: asyncio.TimerHandle | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if self._queue is None:  # created lazily: it belongs to the server's event loop
            self._queue = asyncio.Queue()
            self._lanes = [loop.create_task(self._lane(thread)) for thread in self._threads]
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _lane(self, thread: ThreadPoolExecutor) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            if self._trim is not None:
                self._trim.cancel()
                self._trim = None
            self._running += 1
            try:
                results = await loop.run_in_executor(thread, self.run_batch, [item for item, _ in live])
            except Exception as exc:  # one bad batch fails its requests, not the lane
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self._running -= 1
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)
            if not self._running and self._queue.empty():  # every lane idle: trim later, off the loop
                self._trim = loop.call_later(IDLE_TRIM_S, thread.submit, return_freed_memory)
