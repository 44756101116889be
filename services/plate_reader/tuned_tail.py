"""A plate-tuned recogniser read off its base's backbone, in the base's own model call.

    tail = extract_tail(onnx.load("tuned/model.onnx"))   # the graph after the last AveragePool
    twin = graft(onnx.load("base/model.onnx"), tail)     # outputs: the base's, then TAIL_OUTPUT

`modelport finetune ocr` (backbone frozen, its default) trains only what follows the base's final
average pool: the SVTR neck and a plate-alphabet head. Such a version computes exactly the base's
backbone, so the base's graph with the tuned tail grafted on at that pool reads every line both
ways in one call, and read_fusion's vote (fuse_equals) costs the tail, not a second recogniser
and a second session's memory (plate README, "A plate-tuned recogniser, read beside the base as
its equal"). The tail is small enough to ship in the repository (models/plate-tuned-tail.onnx
here, 1.4 MB, with its model card). ONNX Runtime runs the whole graph whichever outputs a call
asks for, so a call that needs only the base's reading (a second read, a truncation check)
computes the tail too, ~2% of the call; grafting adds ~150 ms to the recogniser's start-up (67
-> 212 ms measured).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper, version_converter

from services.core.sources import sha256_of

TAIL_INPUT = "pooled"
TAIL_OUTPUT = "tuned_probabilities"
_PREFIX = "tuned/"
# Metadata keys: the base file the tail was trained on (sha256), the tail's dictionary.
BASE_SHA256, CHARACTER = "base_sha256", "character"
TUNED_CHARACTER = "tuned_character"


class TailMismatch(ValueError):
    """The tail was trained on another base: its pooled features would mean something else."""


def last_pool(model: onnx.ModelProto) -> onnx.NodeProto:
    """The backbone's final average pool (PP-LCNetV3 and PP-OCRv6 end in one)."""
    pools = [node for node in model.graph.node if node.op_type == "AveragePool"]
    if not pools:
        raise ValueError("the recogniser has no AveragePool: no backbone/neck split to graft at")
    return pools[-1]


def extract_backbone(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph from `model`'s input to its last average pool's output (finetune's frozen
    backbone: what a tail reads)."""
    inferred = onnx.shape_inference.infer_shapes(model)  # the Extractor needs the shapes
    return onnx.utils.Extractor(inferred).extract_model(
        [model.graph.input[0].name], [last_pool(inferred).output[0]]
    )


def extract_tail(model: onnx.ModelProto, base_sha256: str = "") -> onnx.ModelProto:
    """The graph from `model`'s last average pool's output to its output, input TAIL_INPUT, with
    `model`'s metadata (its dictionary) and the base's sha256 when given."""
    inferred = onnx.shape_inference.infer_shapes(model)  # the Extractor needs the shapes
    pooled = last_pool(inferred).output[0]
    tail = onnx.utils.Extractor(inferred).extract_model([pooled], [model.graph.output[0].name])
    _rename(tail.graph, {pooled: TAIL_INPUT})
    del tail.metadata_props[:]
    for prop in model.metadata_props:
        tail.metadata_props.add(key=prop.key, value=prop.value)
    if base_sha256:
        tail.metadata_props.add(key=BASE_SHA256, value=base_sha256)
    return tail


def graft(base: onnx.ModelProto, tail: onnx.ModelProto) -> onnx.ModelProto:
    """`base` with `tail` computing TAIL_OUTPUT from its last average pool's output. The base's
    outputs come first and are computed as before; the tail's dictionary is TUNED_CHARACTER."""
    opset = max(_opset(base), _opset(tail))
    # A tail exported by torch (opset 17) after a paddle2onnx base (11): one opset for the graph.
    # Converting PP-OCRv6 11 -> 17 changed its probabilities by 1e-6 and not its speed.
    twin = version_converter.convert_version(base, opset) if _opset(base) < opset else _copy(base)
    tail = version_converter.convert_version(tail, opset) if _opset(tail) < opset else _copy(tail)
    pooled = last_pool(twin).output[0]
    names = {value.name for value in [*tail.graph.initializer, *tail.graph.output]}
    names |= {name for node in tail.graph.node for name in [*node.input, *node.output] if name}
    _rename(tail.graph, {name: _PREFIX + name for name in names - {TAIL_INPUT}} | {TAIL_INPUT: pooled})
    for node in tail.graph.node:
        node.name = _PREFIX + node.name
    twin.graph.node.extend(tail.graph.node)
    twin.graph.initializer.extend(tail.graph.initializer)
    output = tail.graph.output[0]
    _rename(twin.graph, {output.name: TAIL_OUTPUT})
    twin.graph.output.append(helper.make_value_info(TAIL_OUTPUT, output.type))
    twin.metadata_props.add(key=TUNED_CHARACTER, value=_metadata(tail)[CHARACTER])
    return twin


def graft_files(base_path: str | Path, tail_path: str | Path) -> onnx.ModelProto:
    """graft() of the two files; TailMismatch when the tail was trained on another backbone."""
    tail = onnx.load(str(tail_path))
    wanted = _metadata(tail).get(BASE_SHA256)
    if wanted and wanted != backbone_sha256(base_path):
        raise TailMismatch(
            f"{tail_path} was trained on the recogniser with sha256 {wanted[:12]}..., not on "
            f"{base_path}: read without it (serve its base, MODELPORT_PLATE_OCR_MODEL, to read with it)"
        )
    if CHARACTER not in _metadata(tail):
        raise TailMismatch(f"{tail_path} has no 'character' metadata: not a plate-ocr tail")
    return graft(onnx.load(str(base_path)), tail)


def backbone_sha256(model_path: str | Path) -> str:
    """Whose backbone the recogniser at `model_path` computes: a version fine-tuned with its
    backbone frozen computes its base's, named by the tail.onnx stored beside it (a promoted
    fine-tune still reads with the tails trained on its base); any other file, its own sha256."""
    own_tail = Path(model_path).with_name("tail.onnx")
    if own_tail.exists():
        base = _metadata(onnx.load(str(own_tail))).get(BASE_SHA256)
        if base:
            return base
    return sha256_of(Path(model_path))


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _rename(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Rename tensors everywhere in `graph` (nodes, initializers, inputs, outputs)."""
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    for value in [*graph.initializer, *graph.input, *graph.output, *graph.value_info]:
        value.name = names.get(value.name, value.name)
