"""Probes a test or benchmark runs beside a real server: its peak memory, how long /livez
waits while something else is being served, and a bomb's header (`png_header`).

    with peak_rss(server.process.pid) as peak:   # MB, every serving process, exact peaks
        send_the_load()
    print(peak.total_mb, peak.per_process_mb)
    with livez_latencies(url) as waits:          # seconds, one per /livez call
        send_the_load()
    print(max(waits))
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil


def serving_pids(root_pid: int) -> list[int]:
    """`bentoml serve` (the arbiter) and every process under it (the workers)."""
    root = psutil.Process(root_pid)
    return [root.pid, *(p.pid for p in root.children(recursive=True))]


@dataclass
class PeakRss:
    per_process_mb: dict[int, float] = field(default_factory=dict)

    @property
    def total_mb(self) -> float:
        """The sum of each process's own peak: at least the peak of their sum."""
        return sum(self.per_process_mb.values())


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


@contextlib.contextmanager
def peak_rss(root_pid: int) -> Iterator[PeakRss]:
    """Each serving process's peak resident memory during the block, from the kernel's own
    high-water mark (VmHWM, reset at the start through /proc/PID/clear_refs): no peak between
    two samples is missed."""
    pids = serving_pids(root_pid)
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
    result = PeakRss()
    yield result
    result.per_process_mb.update({pid: _status_mb(pid, "VmHWM") for pid in serving_pids(root_pid)})


def rss_now_mb(root_pid: int) -> float:
    return sum(_status_mb(pid, "VmRSS") for pid in serving_pids(root_pid))


@contextlib.contextmanager
def livez_latencies(url: str, *, pause_s: float = 0.01) -> Iterator[list[float]]:
    """Calls /livez one after another during the block; how long each took (seconds)."""
    waits: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get(f"{url}/livez").raise_for_status()
                waits.append(time.perf_counter() - started)
                time.sleep(pause_s)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.2)  # polling before the load starts
    try:
        yield waits
    finally:
        time.sleep(0.2)
        stop.set()
        thread.join(30)


def png_header(width: int, height: int) -> bytes:
    """A PNG that only claims its size (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
