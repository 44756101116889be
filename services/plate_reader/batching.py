"""Batch concurrent requests into one model call (adaptive batching, asyncio style).

    batcher = MicroBatcher(run_batch, max_size=8, max_latency_ms=5)
    result = await batcher.submit(item)

A request waits at most `max_latency_ms` for others to join it, and only while other requests
are in flight (a lone request runs at once); the batch runs in a worker thread so the event
loop keeps accepting (and refusing) requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], *,
                 max_size: int, max_latency_ms: float) -> None:
        self.run_batch = run_batch
        self.max_size = max_size
        self.max_latency = max_latency_ms / 1000
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._in_flight = 0  # submitted and not yet taken out of a finished batch

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
                results = await asyncio.to_thread(self.run_batch, [item for item, _ in live])
            except Exception as exc:  # one bad batch fails its requests, not the worker
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)
