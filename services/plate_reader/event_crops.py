"""Best crops of vehicle events, kept in memory for `GET /v1/plate-reader/video/crops/{id}`.

    crops = EventCrops(max_bytes=32 << 20)
    crops.put(event.id, event.best_crop)     # the oldest go when the bytes are over
    crops.get(event.id)                      # JPEG bytes, or None once dropped

Bounded by bytes (settings.video_crop_store_bytes): a crop is ~10-40 KB, so the default keeps
the last ~1,000-3,000 vehicles. In memory on purpose: an event's crop is for whoever handles the
event now (a webhook receiver, the caller); flagged ones go to the review queue, which keeps them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class EventCrops:
    def __init__(self, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._crops: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # streams put from their own threads

    def put(self, key: str, jpeg: bytes) -> None:
        with self._lock:
            if key in self._crops:
                self._bytes -= len(self._crops.pop(key))
            self._crops[key] = jpeg
            self._bytes += len(jpeg)
            while self._bytes > self.max_bytes and self._crops:
                _, dropped = self._crops.popitem(last=False)
                self._bytes -= len(dropped)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._crops.get(key)

    def __len__(self) -> int:
        return len(self._crops)
