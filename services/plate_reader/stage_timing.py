"""Where a plate read spends its time: seconds per batch in each stage, on /metrics.

    with timed("detect"):
        ...

`modelport_plate_stage_seconds{stage}` (a histogram) is observed once per call of a stage:
- detect: the YOLO detector (each pass, the larger retry included);
- crop: cutting the plates out (a large photo kept at the detector's size is decoded again);
- text_lines: the PP-OCR text detector on the crops;
- recognise: each recogniser call (the first read, the tuned one when asked, the second read);
- batch: a whole `PlateRecognizer.read_batch`; what it holds beyond the stages above is the
  plate-text rules and bookkeeping.
Decoding happens before the batch, in the decode thread, and is not here.
tests/benchmarks/bench_plate_reader.py reads these sums to print milliseconds per stage per
photo; in production they show which stage a slow camera or a new model made slower.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import bentoml

STAGES = ("detect", "crop", "text_lines", "recognise", "batch")

STAGE_SECONDS = bentoml.metrics.Histogram(
    name="modelport_plate_stage_seconds",
    documentation="Seconds per call spent in each stage of a plate read (batch: the whole read)",
    labelnames=["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage=stage).observe(time.perf_counter() - start)
