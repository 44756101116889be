"""ONNX Runtime sessions for the plate reader's models, set up to share a few CPU cores."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import onnx
import onnxruntime as ort

from services.core.memory import return_freed_memory
from services.plate_reader.onnx_folding import fold_elementwise

Shape = TypeVar("Shape", bound=Hashable)
log = logging.getLogger(__name__)


def indices_by_shape(shapes: Iterable[Shape]) -> dict[Shape, list[int]]:
    """Item indices grouped by the input shape each item is run at, one model call per group:
    padded to a larger item's shape, an item's output would depend on the rest of its batch."""
    groups: dict[Shape, list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(index)
    return groups


def onnx_session(
    model_path: str | Path | onnx.ModelProto,
    providers: Sequence[str] | None = None,
    *,
    as_exported: bool = False,
) -> ort.InferenceSession:
    """A session on the model at `model_path` (or a parsed graph: tuned_tail's twin), PaddleOCR's
    elementwise chains folded (onnx_folding.py); `as_exported`: the graph as it is (the speed
    benchmark's baseline)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # By default ORT's threads keep spinning after a run. Here two sessions (detector, OCR)
    # and numpy take turns on the same cores, and the spinning starved whoever came next:
    # the OCR's 0.3 ms output decoding took 92 ms right after a run (measured, 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ORT's arena keeps its activations for the next run. Off, each run's were malloc'd afresh:
    # with large blocks mapped on their own (settings.malloc_mmap_threshold) every run
    # faulted them in again, 3 requests of 8 large photos cost 35 s of CPU instead of 23 s;
    # with the arena, 26 s. Its price is idle memory, not peak: after 40 requests of 2 street
    # photos the server idled at 482 MB instead of 369-390 MB, at the same peak (567 vs
    # 555-616 MB) and CPU. (Off was chosen at batches of 8: 433 MB vs 314 MB; now at most 2.)
    options.enable_cpu_mem_arena = True
    providers = list(providers or ["CPUExecutionProvider"])
    parsed = model_path if isinstance(model_path, onnx.ModelProto) else None
    if as_exported:
        exported = parsed.SerializeToString() if parsed is not None else str(model_path)
        return ort.InferenceSession(exported, options, providers=providers)
    # PaddleOCR's recogniser and text detector spend more time in scalar Mul/Add/Clip/Div chains
    # than in their convolutions; folded, the same function runs in ~2/3 of the time. Folding
    # costs ~40 ms at start-up (the recogniser; 12 ms the text detector), where a folded copy in
    # the store would need its own kind: `finetune ocr` converts the graph paddle2onnx wrote.
    model = parsed if parsed is not None else onnx.load(str(model_path))
    nodes = len(model.graph.node)
    # ONNX Runtime reads a file itself unless something was folded; a parsed graph is serialised
    # before folding, so that a fold that fails half-way leaves it as it was
    source: str | bytes = model.SerializeToString() if parsed is not None else str(model_path)
    try:
        fold_elementwise(model)
        if len(model.graph.node) < nodes:  # nothing to fold (PP-OCRv6, the YOLO detector): as is
            source = model.SerializeToString()
    except Exception:  # a graph the rewrites did not foresee: served as exported, never refused
        what = model.graph.name if parsed is not None else model_path
        log.warning("%s: could not fold its elementwise chains; loaded as exported", what, exc_info=True)
    del model  # the parsed graph (tens of MB): its pages go back now, not at the first idle batch
    session = ort.InferenceSession(source, options, providers=providers)
    del source
    return_freed_memory()
    return session
