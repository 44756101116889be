"""MicroBatcher logic, with a fake model call that records the batches it gets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from services.plate_reader.batching import MicroBatcher


class FakeModel:
    """Stands in for the plate pipeline: doubles each item, remembers batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(len(items))
        time.sleep(0.01)
        return [2 * item for item in items]


def submit_together(fake: FakeModel, count: int, *, max_size: int, max_latency_ms: float) -> list[int]:
    """Submit items 0..count-1 concurrently to one batcher; their results, in order."""

    async def go() -> list[int]:
        batcher = MicroBatcher(fake, max_size=max_size, max_latency_ms=max_latency_ms)
        return await asyncio.gather(*(batcher.submit(i) for i in range(count)))

    return asyncio.run(go())


def test_concurrent_requests_share_one_call_and_get_their_own_results() -> None:
    fake = FakeModel()
    assert submit_together(fake, 8, max_size=8, max_latency_ms=200) == [2 * i for i in range(8)]
    assert fake.batches == [8]


def test_batches_never_exceed_max_size() -> None:
    fake = FakeModel()
    assert submit_together(fake, 7, max_size=3, max_latency_ms=50) == [2 * i for i in range(7)]
    assert max(fake.batches) <= 3 and sum(fake.batches) == 7


def test_a_lone_request_does_not_wait_for_company() -> None:
    fake = FakeModel()

    async def go() -> float:
        batcher = MicroBatcher(fake, max_size=8, max_latency_ms=10_000)
        started = time.perf_counter()
        await batcher.submit(1)
        await batcher.submit(2)  # sequential, like one client: each runs at once
        return time.perf_counter() - started

    assert asyncio.run(go()) < 5  # far below the 10 s it would wait for a batch to fill
    assert fake.batches == [1, 1]


def test_a_failing_batch_fails_its_requests_and_the_next_batch_still_runs() -> None:
    calls = []

    def flaky(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return list(items)

    async def go() -> tuple[str, int]:
        batcher = MicroBatcher(flaky, max_size=4, max_latency_ms=1)
        try:
            await batcher.submit(1)
        except RuntimeError as exc:
            first = str(exc)
        return first, await batcher.submit(5)

    assert asyncio.run(go()) == ("model exploded", 5)
