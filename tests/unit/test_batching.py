"""MicroBatcher logic, with a fake model call that records the batches it gets."""

from __future__ import annotations

import asyncio
import threading
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


def submit_together(fake: FakeModel, count: int, *, max_size: int) -> list[int]:
    """Submit items 0..count-1 concurrently to one batcher; their results, in order."""

    async def go() -> list[int]:
        batcher = MicroBatcher(fake, max_size=max_size)
        return await asyncio.gather(*(batcher.submit(i) for i in range(count)))

    return asyncio.run(go())


def test_concurrent_requests_share_one_call_and_get_their_own_results() -> None:
    fake = FakeModel()
    assert submit_together(fake, 8, max_size=8) == [2 * i for i in range(8)]
    assert fake.batches == [8]


def test_batches_never_exceed_max_size() -> None:
    fake = FakeModel()
    assert submit_together(fake, 7, max_size=3) == [2 * i for i in range(7)]
    assert max(fake.batches) <= 3 and sum(fake.batches) == 7


def test_a_lone_request_does_not_wait_for_company() -> None:
    fake = FakeModel()

    async def go() -> None:
        batcher = MicroBatcher(fake, max_size=8)
        await batcher.submit(1)
        await batcher.submit(2)  # sequential, like one client: each runs at once, alone

    asyncio.run(go())
    assert fake.batches == [1, 1]


def test_a_failing_batch_fails_its_requests_and_the_next_batch_still_runs() -> None:
    calls = []

    def flaky(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return list(items)

    async def go() -> tuple[str, int]:
        batcher = MicroBatcher(flaky, max_size=4)
        try:
            await batcher.submit(1)
        except RuntimeError as exc:
            first = str(exc)
        return first, await batcher.submit(5)

    assert asyncio.run(go()) == ("model exploded", 5)


class OverlapRecorder:
    """A fake model call that records how many batches ran at once and in which threads. Each
    batch waits (up to 2 s) for a second one to be running beside it, so that with two lanes the
    overlap is seen however the threads are scheduled; with one lane it waits in vain."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()
        self.two_running = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
            if self.running == 2:
                self.two_running.set()
        self.two_running.wait(2)
        with self.lock:
            self.running -= 1
        return list(items)


def run_lanes(fake: OverlapRecorder, lanes: int, count: int) -> list[int]:
    async def go() -> list[int]:
        batcher = MicroBatcher(fake, max_size=1, lanes=lanes)
        return await asyncio.gather(*(batcher.submit(i) for i in range(count)))

    return asyncio.run(go())


def test_two_lanes_run_two_batches_at_once_each_in_its_own_thread() -> None:
    fake = OverlapRecorder()
    assert run_lanes(fake, lanes=2, count=6) == list(range(6))
    assert fake.most == 2
    assert len(fake.threads) == 2  # the same two threads for all six batches


def test_one_lane_runs_one_batch_at_a_time() -> None:
    fake = OverlapRecorder()
    fake.two_running.set()  # nothing to wait for: one lane never has a second batch beside it
    assert run_lanes(fake, lanes=1, count=4) == list(range(4))
    assert fake.most == 1 and len(fake.threads) == 1


def test_requests_that_come_while_the_lane_is_busy_go_together_next() -> None:
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def held(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        started.set()
        release.wait(5)
        return list(items)

    async def go() -> list[int]:
        batcher = MicroBatcher(held, max_size=3)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 5)]
        await asyncio.sleep(0)  # all four queued behind the running batch
        release.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(go()) == [0, 1, 2, 3, 4]
    assert batches == [[0], [1, 2, 3], [4]]
