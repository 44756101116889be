"""Handing freed heap memory back to the OS.

glibc's malloc keeps the pages of freed blocks for reuse, so a server's RSS stays at the peak
of its busiest moment (the KV cache of 16 streams, a batch of 8 photos' activations) long after.
"""

from __future__ import annotations

import contextlib
import ctypes

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def return_freed_memory() -> None:
    """malloc_trim(0): free pages go back to the OS. A few ms; call it when going idle."""
    with contextlib.suppress(AttributeError, OSError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


def map_large_blocks(threshold_bytes: int) -> None:
    """Every block of `threshold_bytes` or more gets a memory map of its own, unmapped when freed.

    glibc's default starts at 128 KB but raises the threshold to the size of each mapped block
    freed (up to 32 MB): after Pillow frees its first 16 MB decode block, later ones are carved
    from the heap, between the decoded photos still held, and a freed block there stays resident.
    How much stays then hangs on the order threads happened to allocate in (CPU load changes it).
    Setting the threshold also stops glibc moving it. 0: glibc's default.
    """
    if threshold_bytes <= 0:
        return
    with contextlib.suppress(AttributeError, OSError):  # not glibc: nothing to do
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, threshold_bytes)
