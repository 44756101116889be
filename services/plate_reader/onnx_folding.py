"""Fold PaddleOCR's exported elementwise chains into fewer ONNX nodes, same function.

    folded = fold_elementwise(onnx.load("ch_PP-OCRv4_rec_infer.onnx"))   # -> onnx.ModelProto

PP-OCRv4's recogniser and text detector (PP-LCNetV3) follow most convolutions with a
"learnable affine block" and hard-swish, exported by paddle2onnx as six scalar nodes:
`Mul(a) Add(b)` after the Conv, then `Add(3) Clip(0, 6) Mul(x) Div(6)`, then `Mul(c) Add(d)`.
ONNX Runtime fuses none of them, and on 2 CPU cores these passes over the activations took
46% of a recogniser call, more than the convolutions (35%). Three rewrites, each exact in real
arithmetic (float rounding aside):
1. `Conv -> Mul(a) -> Add(b)`: a scales the Conv's weights and bias, b joins the bias.
2. `Add(3) -> Clip(0, 6) -> Mul(x) -> Div(6)` is `x * HardSigmoid(x, 1/6, 1/2)`: two nodes (ONNX
   defines HardSwish as exactly this, from opset 14; these files are opset 12).
3. `Mul(c) -> Add(d) -> Conv` where that Conv pads nothing: c scales its weights and d·ΣW joins
   its bias. With padding the border would differ (the padded zeros are not shifted by d).
Only float32 chains whose inner outputs feed nothing else are folded, and nothing in a graph
with subgraphs (If, Loop: their reads are not tracked here). The outputs differ by float
rounding: at most ~1e-5 in the recogniser's class probabilities on real plate crops
(tests/unit/test_onnx_folding.py); on 1,129 dev images the reader read the same plates with
the same flags, 3 scores moving in the fourth decimal.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper


class _Graph:
    """The model's nodes, its constants and who consumes each value. `nodes` holds the node
    objects the rewrites see and return (by `id`), alive for the whole pass."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.nodes = list(self.graph.node)
        # Constants as tensors, read as arrays only when a rewrite asks: initializers the caller
        # cannot override (one that is also a graph input can be fed) and Constant nodes' values.
        fed = {i.name for i in self.graph.input}
        self.tensors = {i.name: i for i in self.graph.initializer if i.name not in fed}
        self.tensors.update(
            (n.output[0], n.attribute[0].t)
            for n in self.nodes
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
        )
        self.outputs = {o.name for o in self.graph.output}
        self.producer = {name: node for node in self.nodes for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)

    def value(self, name: str) -> np.ndarray | None:
        """`name`'s array if it is a constant, else None."""
        tensor = self.tensors.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def scalar_value(self, name: str) -> float | None:
        """The float32 scalar constant `name` holds, of rank 0 or 1 (a higher rank could
        broadcast what it meets to a new shape); None for anything else."""
        v = self.value(name)
        if v is None or v.size != 1 or v.ndim > 1 or v.dtype != np.float32:
            return None
        return float(v.reshape(()))

    def scalar(self, node: onnx.NodeProto) -> tuple[float, str] | None:
        """(the constant, the other input) of a binary node whose one input is a scalar_value."""
        if len(node.input) != 2:
            return None
        for k in (0, 1):
            constant = self.scalar_value(node.input[k])
            if constant is not None and node.input[1 - k] not in self.tensors:
                return constant, node.input[1 - k]
        return None

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The node that makes `name`, if it is an `op_type`."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def closes_gelu(self, mul: onnx.NodeProto, x: str) -> bool:
        """`mul` (by 0.5, of `x`) is the last node of an exported GELU, `x * (1 + Erf(.))`
        then `* 0.5`: ONNX Runtime fuses the whole pattern into one Gelu node, which it no longer
        finds once the 0.5 is folded away (PP-OCRv6's recogniser: 25.5 -> 32 ms a call)."""
        inner = self.made_by(x, "Mul")
        return inner is not None and any(
            (add := self.made_by(name, "Add")) is not None
            and any(self.made_by(i, "Erf") is not None for i in add.input)
            for name in inner.input
        )

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node reading `name`, if exactly one does and it is no graph output."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def conv_arrays(self, conv: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
        """A float32 Conv's constant weight and bias (zeros where it has none), else None."""
        weight = self.value(conv.input[1])
        if weight is None or weight.dtype != np.float32:
            return None
        if len(conv.input) < 3 or not conv.input[2]:
            return weight, np.zeros(weight.shape[0], np.float32)
        bias = self.value(conv.input[2])
        return None if bias is None else (weight, bias)

    def set_conv(self, conv: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray) -> None:
        """`conv` reads new initializers holding `weight` and `bias`."""
        names = [conv.input[0]]
        for base, array in ((conv.input[1], weight), (conv.name or "b", bias)):
            name = f"{base}_folded{len(self.graph.initializer)}"  # the count only grows: unique
            self.graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), name))
            names.append(name)
        del conv.input[:]
        conv.input.extend(names)


def fold_elementwise(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with the chains above folded (in place; also returned), unused constants dropped."""
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in model.graph.node
        for a in n.attribute
    ):
        return model
    for op_type, rewrite in (
        ("Conv", _fold_affine_after),
        ("Add", _hard_swish),
        ("Mul", _fold_affine_before),
    ):
        g = _Graph(model)
        gone: set[int] = set()
        placed: dict[int, list[onnx.NodeProto]] = {}  # a removed node's id -> what takes its place
        for node in g.nodes:
            if node.op_type == op_type and id(node) not in gone:
                removed, new = rewrite(g, node)
                gone |= removed
                if new:
                    placed[id(node)] = new
        nodes = [new for n in g.nodes for new in placed.get(id(n), [] if id(n) in gone else [n])]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    _drop_unused(model)
    return model


Rewrite = tuple[set[int], list[onnx.NodeProto]]  # nodes removed; the new ones, in the first's place


def _fold_affine_after(g: _Graph, conv: onnx.NodeProto) -> Rewrite:
    mul = g.only_consumer(conv.output[0])
    a = g.scalar(mul) if mul is not None and mul.op_type == "Mul" else None
    arrays = g.conv_arrays(conv)
    if mul is None or a is None or arrays is None:
        return set(), []
    add = g.only_consumer(mul.output[0])
    b = g.scalar(add) if add is not None and add.op_type == "Add" else None
    weight, bias = arrays
    shift = b[0] if b is not None else 0.0
    g.set_conv(conv, weight * a[0], bias * a[0] + shift)
    last = add if add is not None and b is not None else mul
    conv.output[0] = last.output[0]
    return {id(mul), id(last)}, []


def _hard_swish(g: _Graph, add: onnx.NodeProto) -> Rewrite:
    three = g.scalar(add)
    if three is None or three[0] != 3.0:
        return set(), []
    x = three[1]
    clip = g.only_consumer(add.output[0])
    if clip is None or clip.op_type != "Clip" or len(clip.input) < 3:
        return set(), []
    if g.scalar_value(clip.input[1]) != 0.0 or g.scalar_value(clip.input[2]) != 6.0:
        return set(), []
    mul = g.only_consumer(clip.output[0])
    if mul is None or mul.op_type != "Mul" or sorted(mul.input) != sorted([x, clip.output[0]]):
        return set(), []
    div = g.only_consumer(mul.output[0])
    if div is None or div.op_type != "Div" or div.input[0] != mul.output[0]:
        return set(), []
    if g.scalar_value(div.input[1]) != 6.0:
        return set(), []
    gate = helper.make_node("HardSigmoid", [x], [add.output[0]], alpha=1 / 6, beta=0.5)
    product = helper.make_node("Mul", [x, add.output[0]], [div.output[0]])
    return {id(add), id(clip), id(mul), id(div)}, [gate, product]


def _fold_affine_before(g: _Graph, mul: onnx.NodeProto) -> Rewrite:
    c = g.scalar(mul)
    if c is None or (c[0] == 0.5 and g.closes_gelu(mul, c[1])):
        return set(), []
    add = g.only_consumer(mul.output[0])
    d = g.scalar(add) if add is not None and add.op_type == "Add" else None
    last = add if d is not None and add is not None else mul
    conv = g.only_consumer(last.output[0])
    if conv is None or conv.op_type != "Conv" or conv.input[0] != last.output[0] or _pads(conv):
        return set(), []
    arrays = g.conv_arrays(conv)
    if arrays is None:
        return set(), []
    weight, bias = arrays
    shift = d[0] if d is not None else 0.0
    g.set_conv(conv, weight * c[0], bias + shift * weight.sum(axis=tuple(range(1, weight.ndim))))
    conv.input[0] = c[1]
    return {id(mul), id(last)}, []


def _pads(conv: onnx.NodeProto) -> bool:
    for attribute in conv.attribute:
        if attribute.name == "pads" and any(helper.get_attribute_value(attribute)):
            return True
        if attribute.name == "auto_pad" and helper.get_attribute_value(attribute) not in (
            b"NOTSET",
            b"VALID",
        ):
            return True
    return False


def _drop_unused(model: onnx.ModelProto) -> None:
    """Constants no node reads any more (the folded weights' originals); an initializer that is
    also a graph input stays (the caller may feed it)."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    used |= {i.name for i in graph.input}
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
