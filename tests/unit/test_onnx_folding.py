"""Folding PaddleOCR's elementwise chains (onnx_folding.py): the same outputs with fewer nodes, on
the real PP-OCRv4 recogniser (the served one until PP-OCRv6; a stored version may still be one)
and text detector, the served PP-OCRv6 recogniser left as it is, and small graphs built here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from services.core.sources import PackageFile
from services.plate_reader.crops import split_rows, to_batch, trim_bands
from services.plate_reader.onnx_folding import fold_elementwise
from services.plate_reader.onnx_session import onnx_session
from tests.assets import asset


def unfolded(path: Path | bytes) -> ort.InferenceSession:
    """The graph as exported, nothing folded (onnx_session folds)."""
    return ort.InferenceSession(
        path if isinstance(path, bytes) else str(path), providers=["CPUExecutionProvider"]
    )


def crop(name: str) -> np.ndarray:
    return np.asarray(Image.open(asset(name)).convert("RGB"))


# PP-OCRv4's recogniser, from the package the served text detector comes from (already cached).
PP_OCR_V4_RECOGNISER = PackageFile(
    "rapidocr-onnxruntime==1.4.4",
    "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
)


def plate_lines() -> np.ndarray:
    return to_batch(
        [line for name in ("plate_ad799kb", "plate_krw301") for line in split_rows(trim_bands(crop(name)))]
    )


def test_recogniser_reads_real_plates_the_same_with_a_third_of_its_nodes_gone(tmp_path: Path) -> None:
    path = PP_OCR_V4_RECOGNISER.fetch(tmp_path)
    ops = Counter(n.op_type for n in fold_elementwise(onnx.load(str(path))).graph.node)
    before = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["Clip"] == 0 and ops["Div"] < before["Div"] and ops["HardSigmoid"] >= before["Clip"]
    assert sum(ops.values()) == 476 and sum(before.values()) == 860  # README: 860 -> 476
    batch = plate_lines()
    exported, folded = unfolded(path), onnx_session(path)
    expected = exported.run(None, {exported.get_inputs()[0].name: batch})[0]
    got = folded.run(None, {folded.get_inputs()[0].name: batch})[0]
    print(f"largest difference in the class probabilities: {np.abs(got - expected).max():.2e}")
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_the_served_recogniser_keeps_its_gelus_for_onnx_runtime_to_fuse(
    plate_models: dict[str, Path],
) -> None:
    # PP-OCRv6 closes each GELU with a Mul(0.5) before a 1x1 Conv: folded into the Conv, ONNX
    # Runtime no longer found the GELU to fuse and a call took 32 ms instead of 25.5.
    path = plate_models["plate-ocr"]
    before = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    ops = Counter(n.op_type for n in fold_elementwise(onnx.load(str(path))).graph.node)
    assert before["Erf"] > 0 and ops == before
    batch = plate_lines()
    exported, folded = unfolded(path), onnx_session(path)
    expected = exported.run(None, {exported.get_inputs()[0].name: batch})[0]
    got = folded.run(None, {folded.get_inputs()[0].name: batch})[0]
    np.testing.assert_array_equal(got, expected)


def test_text_detector_finds_the_same_lines_with_half_its_nodes_gone(plate_models: dict[str, Path]) -> None:
    path = plate_models["plate-text-detector"]
    ops = Counter(n.op_type for n in fold_elementwise(onnx.load(str(path))).graph.node)
    assert ops["Clip"] == 0 and sum(ops.values()) < 0.5 * len(onnx.load(str(path)).graph.node)
    image = np.asarray(Image.fromarray(crop("plate_ad799kb")).resize((416, 128)), np.float32) / 255
    batch = np.ascontiguousarray(((image - 0.5) / 0.5).transpose(2, 0, 1)[None])
    exported, folded = unfolded(path), onnx_session(path)
    expected = exported.run(None, {exported.get_inputs()[0].name: batch})[0]
    got = folded.run(None, {folded.get_inputs()[0].name: batch})[0]
    assert expected.max() > 0.5  # the line is there to be found
    assert np.abs(got - expected).max() < 1e-4


def _chain(*, pad: int, tap: bool) -> onnx.ModelProto:
    """Conv -> Mul(a) -> Add(b) -> hard-swish -> Mul(c) -> Add(d) -> Conv(3x3, `pad`), as
    paddle2onnx writes PP-LCNetV3; `tap`: the first Conv's output is a graph output too."""
    rng = np.random.default_rng(0)

    def const(name: str, value: np.ndarray | float) -> onnx.NodeProto:
        array = np.asarray(value, np.float32)
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))

    nodes = [
        const("w1", rng.normal(size=(4, 3, 1, 1))),
        const("b1", rng.normal(size=4)),
        const("a", 1.7),
        const("b", -0.3),
        const("three", 3.0),
        const("zero", 0.0),
        const("six", 6.0),
        const("c", 0.4),
        const("d", -0.2),
        const("w2", rng.normal(size=(2, 4, 3, 3))),
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"]),
        helper.make_node("Mul", ["a", "y1"], ["y2"]),
        helper.make_node("Add", ["y2", "b"], ["y3"]),
        helper.make_node("Add", ["y3", "three"], ["h1"]),
        helper.make_node("Clip", ["h1", "zero", "six"], ["h2"]),
        helper.make_node("Mul", ["y3", "h2"], ["h3"]),
        helper.make_node("Div", ["h3", "six"], ["h4"]),
        helper.make_node("Mul", ["c", "h4"], ["z1"]),
        helper.make_node("Add", ["z1", "d"], ["z2"]),
        helper.make_node("Conv", ["z2", "w2"], ["out"], pads=[pad] * 4),
    ]
    outputs = [
        helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 8 - 2 + 2 * pad, 8 - 2 + 2 * pad])
    ]
    if tap:
        outputs.append(helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 4, 8, 8]))
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], outputs
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)


@pytest.mark.parametrize(
    ("pad", "tap", "left"),
    [
        (0, False, {"Conv": 2, "HardSigmoid": 1, "Mul": 1}),  # all three folds
        (1, False, {"Conv": 2, "HardSigmoid": 1, "Mul": 2, "Add": 1}),  # c, d stay before a padded Conv
        (0, True, {"Conv": 2, "Mul": 2, "Add": 1, "HardSigmoid": 1}),  # the Conv's output is read elsewhere
    ],
)
def test_small_chains_fold_only_where_the_function_stays_the_same(
    pad: int, tap: bool, left: dict[str, int]
) -> None:
    model = _chain(pad=pad, tap=tap)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32) * 3
    expected = unfolded(model.SerializeToString()).run(None, {"x": x})
    folded = fold_elementwise(_chain(pad=pad, tap=tap))
    onnx.checker.check_model(folded)
    ops = Counter(n.op_type for n in folded.graph.node if n.op_type != "Constant")
    assert dict(ops) == left
    got = unfolded(folded.SerializeToString()).run(None, {"x": x})
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_a_one_dimensional_conv_folds_too() -> None:
    """Mul(c) -> Add(d) -> Conv1d: the bias sums the weights over every axis but the output's."""
    rng = np.random.default_rng(2)
    weight = numpy_helper.from_array(rng.normal(size=(2, 3, 1)).astype(np.float32), "w")
    c = numpy_helper.from_array(np.asarray(0.5, np.float32), "c")
    d = numpy_helper.from_array(np.asarray(-1.5, np.float32), "d")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "c"], ["m"]),
            helper.make_node("Add", ["m", "d"], ["a"]),
            helper.make_node("Conv", ["a", "w"], ["out"]),
        ],
        "conv1d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 5])],
        [weight, c, d],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)
    x = rng.normal(size=(1, 3, 5)).astype(np.float32)
    [expected] = unfolded(model.SerializeToString()).run(None, {"x": x})
    folded = fold_elementwise(model)
    assert [n.op_type for n in folded.graph.node] == ["Conv"]
    [got] = unfolded(folded.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_the_half_closing_a_gelu_is_not_folded_into_the_conv_after_it() -> None:
    """x * (1 + Erf(x / sqrt 2)) * 0.5 -> Conv: the 0.5 stays (ONNX Runtime fuses the GELU)."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(size=(2, 3, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(np.asarray(1.4142135, np.float32), "root2"),
        numpy_helper.from_array(np.asarray(1.0, np.float32), "one"),
        numpy_helper.from_array(np.asarray(0.5, np.float32), "half"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Div", ["x", "root2"], ["s"]),
            helper.make_node("Erf", ["s"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["p"]),
            helper.make_node("Mul", ["x", "p"], ["q"]),
            helper.make_node("Mul", ["q", "half"], ["g"]),
            helper.make_node("Conv", ["g", "w"], ["out"]),
        ],
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)
    ops = [n.op_type for n in fold_elementwise(model).graph.node]
    assert ops == ["Div", "Erf", "Add", "Mul", "Mul", "Conv"]
