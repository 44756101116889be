"""Batch concurrent requests into one model call (adaptive batching, asyncio style).

    batcher = MicroBatcher(run_batch, max_size=8, max_latency_ms=5)
    result = await batcher.submit(item)

A request waits at most `max_latency_ms` for others to join it, and only while other requests
are in flight (a lone request runs at once); the batch runs in a worker thread so the event
loop keeps accepting (and refusing) requests meanwhile. It is always the same thread (a pool's
several threads each grow a malloc arena of their own), and freed memory goes back to the OS
once no request has come for IDLE_TRIM_S.
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
        self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], *, max_size: int, max_latency_ms: float
    ) -> None:
        self.run_batch = run_batch
        self.max_size = max_size
        self.max_latency = max_latency_ms / 1000
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._in_flight = 0  # submitted and not yet taken out of a finished batch
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="batch")
        self._trim: asyncio.TimerHandle | None = None

    async def submit(self, item: Item) -> Result:
        if self._queue is None:  # created lazily: it belongs to the server's event loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._in_flight += 1
        await self._queue.put((item, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self._trim is not None:
                self._trim.cancel()
            deadline = loop.time() + self.max_latency
            # Waiting only pays when others are in flight (their next request is coming).
            while len(batch) < self.max_size and self._in_flight > len(batch):
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            self._in_flight -= len(batch)
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._thread, self.run_batch, [item for item, _ in live])
            except Exception as exc:  # one bad batch fails its requests, not the worker
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)
            if self._queue.empty():  # in the batch thread, off the loop, if still idle then
                self._trim = loop.call_later(IDLE_TRIM_S, self._thread.submit, return_freed_memory)
