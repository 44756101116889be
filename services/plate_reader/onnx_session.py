"""ONNX Runtime sessions for the plate reader's models, set up to share a few CPU cores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort


def onnx_session(model_path: str | Path, providers: Sequence[str] | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # By default ORT's threads keep spinning after a run. Here two sessions (detector, OCR)
    # and numpy take turns on the same cores, and the spinning starved whoever came next:
    # the OCR's 0.3 ms output decoding took 92 ms right after a run (measured, 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The arena keeps the peak of every batch size seen; without it the serving process held
    # 314 MB instead of 433 MB after batches of 8, at the same latency (measured).
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(
        str(model_path), options, providers=list(providers or ["CPUExecutionProvider"])
    )
