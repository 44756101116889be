"""A photo's read as the server runs it: its batch first, then, where nothing was read surely in a
large photo, the tile search (small_plates.py) on a thread of its own.

    photos = PhotoReader(batcher, recognizer)
    readings = await photos.read(ReadRequest(photo.pixels, 0.25, whole=photo))

The tile search costs a 12 Mpx photo ~1.5 s (20 tiles), ten times its batch read. Run inside the
batch, it held back the other photo of that batch and every request queued behind it: a client
sending 1280x720 photos waited 1.7-2.8 s (p50) beside two clients sending 12 Mpx photos without a
plate, against 77 ms alone (README, "Small plates in large photos"). Here the batch answers its
photos first, and tile searches queue for one thread of their own, one at a time, so they never
take a batch lane and only each other's turn.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from services.plate_reader.types import PlateReading, ReadRequest

if TYPE_CHECKING:  # the pipeline (ONNX Runtime) is imported when the service starts, not before
    from services.plate_reader.batching import MicroBatcher
    from services.plate_reader.pipeline import PlateRecognizer


class PhotoReader:
    def __init__(
        self, batcher: MicroBatcher[ReadRequest, list[PlateReading]], recognizer: PlateRecognizer
    ) -> None:
        self.batcher = batcher
        self.recognizer = recognizer
        self._tiles = ThreadPoolExecutor(1, thread_name_prefix="tiles")

    async def read(self, request: ReadRequest) -> list[PlateReading]:
        readings = await self.batcher.submit(replace(request, tiles=False))
        if not self.recognizer.needs_tiles(request, readings):
            return readings
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tiles, self.recognizer.read_in_tiles, request, readings)
