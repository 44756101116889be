"""Probe: the plate reader's three models on OpenVINO (fp32 or bf16) instead of ONNX Runtime.

Measured at stop 39 and not shipped (services/plate_reader/README.md, "Speed against
Ultralytics"). OpenVINO is not a dependency; put it beside the venv to run this:

    pip install --target /tmp/ovlib --no-deps openvino==2026.4.1 openvino-telemetry
    PYTHONPATH=/tmp/ovlib python tests/benchmarks/probe_openvino.py calls
    PYTHONPATH=/tmp/ovlib python tests/benchmarks/probe_openvino.py reads --detector bf16 -- \\
        --fuse plate-ocr:V6,plate-ocr-tail@1.4 --only "synthetic photos,real photos"

`calls`: each model's served ONNX Runtime session against OpenVINO at fp32 and bf16, median ms of
15 calls on the shapes the reader sends, and the largest output difference. `reads`: the served
pipeline's dev-set outcomes (compare_plate_ocr.py, its arguments after `--`) with the chosen
models on OpenVINO. bf16 needs a CPU with AVX512_BF16 or AMX; elsewhere OpenVINO runs fp32.
"""

from __future__ import annotations

import argparse
import functools
import runpy
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import openvino as ov

from services.core.cli import register_model_kinds
from services.core.model_store import resolve, serving_tag
from services.plate_reader import detector, ocr, onnx_session, text_lines
from services.plate_reader.tuned_tail import graft_files
from tests.benchmarks.machine import describe_machine

CORE = ov.Core()
# The shapes the benchmark photos send (tests/benchmarks/bench_plate_reader.py, profiled)
SHAPES = {
    "recogniser + tail": [
        (1, 3, 48, 128),
        (1, 3, 48, 448),
        (2, 3, 48, 448),
        (4, 3, 48, 256),
        (8, 3, 48, 896),
    ],
    "text detector": [(1, 3, 128, 256), (2, 3, 128, 416)],
    "detector": [(1, 3, 384, 640), (1, 3, 576, 960), (1, 3, 640, 640)],
}


def compile_openvino(model: str | Path | onnx.ModelProto, precision: str) -> Any:
    config = {
        "INFERENCE_NUM_THREADS": 2,
        "INFERENCE_PRECISION_HINT": precision,
        "PERFORMANCE_HINT": "LATENCY",
    }
    if not isinstance(model, onnx.ModelProto):
        return CORE.compile_model(CORE.read_model(str(model)), "CPU", config)
    with tempfile.NamedTemporaryFile(suffix=".onnx") as file:  # the grafted recogniser: OV reads files
        onnx.save(model, file.name)
        return CORE.compile_model(CORE.read_model(file.name), "CPU", config)


class OpenVinoSession:
    """The parts of an ONNX Runtime session the reader calls, run by OpenVINO (one infer request
    per thread: two batch lanes and the tile search call the same model)."""

    def __init__(self, served: Any, model: str | Path | onnx.ModelProto, precision: str) -> None:
        self._served, self._compiled = served, compile_openvino(model, precision)
        self._names = [output.get_any_name() for output in self._compiled.outputs]
        self._requests = threading.local()

    def __getattr__(self, name: str) -> Any:  # get_inputs, get_outputs, get_modelmeta
        return getattr(self._served, name)

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._requests, "request", None) or self._compiled.create_infer_request()
        self._requests.request = request
        result = request.infer([next(iter(feeds.values()))])
        by_name = {name: np.array(result[out]) for name, out in zip(self._names, self._compiled.outputs)}
        return [by_name[name] for name in outputs or self._names]


def model_paths() -> dict[str, str | onnx.ModelProto]:
    """The served models (the recogniser with the shipped tail grafted, as the reader runs it)."""
    register_model_kinds()

    def path(kind: str, file: str = "model.onnx") -> str:
        return resolve(serving_tag(kind)).path_of(file)

    return {
        "recogniser + tail": graft_files(path("plate-ocr"), path("plate-ocr-tail", "tail.onnx")),
        "text detector": path("plate-text-detector"),
        "detector": path("plate-detector"),
    }


def median_ms(call: Any, runs: int = 15) -> float:
    call(), call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def calls() -> None:
    rng = np.random.default_rng(0)
    print("| model | input | ONNX Runtime ms | OpenVINO fp32 ms (x) | OpenVINO bf16 ms (x) | max diff |")
    print("|---|---|---|---|---|---|")
    for name, model in model_paths().items():
        served = onnx_session.onnx_session(model)
        outputs = [output.name for output in served.get_outputs()]
        feed = served.get_inputs()[0].name
        sessions = {precision: OpenVinoSession(served, model, precision) for precision in ("f32", "bf16")}
        for shape in SHAPES[name]:
            feeds = {feed: rng.uniform(-1, 1, shape).astype(np.float32)}
            reference = served.run(outputs, feeds)
            ms = {"ort": median_ms(functools.partial(served.run, outputs, feeds))}
            diff = {}
            for precision, session in sessions.items():
                got = session.run(outputs, feeds)
                diff[precision] = max(float(np.abs(a - b).max()) for a, b in zip(got, reference))
                ms[precision] = median_ms(functools.partial(session.run, outputs, feeds))
            print(
                f"| {name} | {shape} | {ms['ort']:.1f} | {ms['f32']:.1f} ({ms['ort'] / ms['f32']:.2f}x) | "
                f"{ms['bf16']:.1f} ({ms['ort'] / ms['bf16']:.2f}x) | {diff['f32']:.0e} / "
                f"{diff['bf16']:.0e} |",
                flush=True,
            )


def reads(chosen: dict[str, str], compare_args: list[str]) -> None:
    """compare_plate_ocr.py with the chosen models' sessions on OpenVINO."""
    made = onnx_session.onnx_session

    def session(kind: str) -> Any:
        def make(model: Any, providers: Any = None, *, as_exported: bool = False) -> Any:
            served = made(model, providers, as_exported=as_exported)
            precision = chosen[kind]
            return served if precision == "ort" else OpenVinoSession(served, model, precision)

        return make

    ocr.onnx_session = session("recogniser")  # type: ignore[assignment]
    text_lines.onnx_session = session("text_lines")  # type: ignore[assignment]
    detector.onnx_session = session("detector")  # type: ignore[assignment]
    sys.argv = ["compare_plate_ocr.py", *compare_args]
    runpy.run_path(str(ROOT / "tests" / "benchmarks" / "compare_plate_ocr.py"), run_name="__main__")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["calls", "reads"])
    for kind in ("detector", "text-lines", "recogniser"):
        parser.add_argument(f"--{kind}", choices=["ort", "f32", "bf16"], default="ort")
    args, rest = parser.parse_known_args()
    print(describe_machine(), f"OpenVINO {ov.__version__}", flush=True)
    if args.what == "calls":
        calls()
    else:
        chosen = {"detector": args.detector, "text_lines": args.text_lines, "recogniser": args.recogniser}
        reads(chosen, [a for a in rest if a != "--"])


if __name__ == "__main__":
    main()
