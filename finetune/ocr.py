"""Fine-tune the plate OCR recogniser on labelled plate crops; store it as a new `plate-ocr` version.

    modelport reviews export reviews/                     # corrected crops -> reviews/ocr/labels.csv
    modelport finetune ocr reviews/ocr --epochs 10        # convert, train, export, check, store
    modelport models serve plate-ocr:<new version>        # the plate reader loads it next start

The recogniser is a PaddleOCR text-line model as ONNX (the store's `plate-ocr`: PP-OCRv6 small
since 2026-12-06; PP-OCRv4 versions convert the same way). The job:

1. Brings it into torch with onnx2torch and checks the torch model against ONNX Runtime on
   validation crops. onnx2torch 1.5.15 needs two repairs to convert it (PaddleOCR's export
   keeps weights in Constant nodes, not initializers; ONNX shape inference loses the rank of
   a few Conv outputs, which onnx2torch's BatchNorm needs) and two more for the result to
   export with a dynamic width (its opset-11 Softmax and its Reshapes, fed by shapes computed
   in the graph, froze the traced input's size into the exported model). PP-OCRv6 needs two
   more: its SAME_UPPER padded Conv and MaxPool written as explicit pads, and the Identity
   nodes its export puts between the head's MatMul, Add and Softmax looked through.
2. Restricts the output to the plate alphabet: the dictionary head (18,710 classes in
   PP-OCRv6, 6,625 in PP-OCRv4) becomes blank + the 39 characters of `PLATE_ALPHABET`
   (services/plate_reader/ocr.py) + a dozen `SIGN_SYMBOLS`
   (%, @, ...: what no plate has; PlateOCR's foreign check needs them to flag signs), each row
   initialised from the base's row for that exact character; the symbols' rows do not train.
   The exported model's `character` metadata lists them in PaddleOCR's layout (blank, one line
   per character, then the space), so `PlateOCR` reads it unchanged.
3. Trains with CTC loss on the lines the reader gives the recogniser (`lines="cut"`, the
   default): the number's row(s) cut by the text-line finder (text_lines.py, the store's
   `plate-text-detector`, run once over every crop before training), stretched as
   read_fusion's first read stretches them in 70% of draws and at their own width (its second
   read) in the rest, after light augmentation without warps (finetune/ocr_data.py); a crop
   where no line is found is used whole, trimmed and split, as the reader reads it.
   `lines="whole"` trains on the crops trimmed and split (`trim_bands`, `split_rows`), after
   augmentation with warps: the reader with its line cut off. Two-row plates: the labels
   hold the whole plate and nothing says where the rows break, so the frames of a crop's lines
   (top row's, then bottom row's) are joined into one sequence and CTC aligns the whole label
   to it; it sums over every place the label can break between rows. One-row crops are one line.
   By default the backbone (up to its final average pool) is frozen and runs on
   ONNX Runtime (cut out of the base ONNX, checked against torch): a step then costs ~1 s for
   32 crops on 2 CPU cores, against ~9 s with the backbone training in torch. The SVTR neck
   and the head train (`train_backbone=True` trains all, for GPUs). BatchNorm keeps the base's
   statistics. Training lines are padded as PaddleOCR trained the base (320 px, or a wide
   line's own width; the neck's attention sees the padding). The reader pads only to a batch's
   widest line, which read the dev sets as precisely (crops.to_batch).
4. Validates once an epoch (or every `validate_every` steps); with `max_minutes` the step
   count is sized, after 20 steps and at each validation, to end within that budget (the
   learning rate decays to its end inside it). Each new best state is saved (best.pt in the
   run folder), so a run stopped early keeps it.
   Keeps the state with the best exact-plate accuracy on the validation crops, exports it to
   ONNX (dynamic batch and width), checks that ONNX Runtime's output matches torch's (refuses
   to store otherwise), measures exact plates before -> after with `PlateOCR` itself, and adds
   the model to the store with those figures in its metadata. The served version stays pinned.

Before -> after is raw OCR text (normalised to A-Z0-9, no plate-format rules), one crop per
call, on the validation crops' lines as training sees them (cut: the first read's stretched
cut). The "after" model is chosen on the same validation crops, so its figure leans
optimistic; measure held-out data with `modelport evaluate`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx2torch import convert

from finetune.ocr_data import OcrDataset, OcrSample, augment, load_ocr_dataset
from finetune.store import add_version, base_model, hyperparameters
from services.core.sources import sha256_of
from services.plate_reader.crops import LINE_HEIGHT, split_rows, to_batch, trim_bands
from services.plate_reader.ocr import PLATE_ALPHABET, PlateOCR
from services.plate_reader.onnx_session import onnx_session
from services.plate_reader.plate_text import normalise
from services.plate_reader.read_fusion import stretch
from services.plate_reader.text_lines import TextLineFinder
from services.plate_reader.tuned_tail import TAIL_OUTPUT, extract_backbone, extract_tail, graft

INSTALL_HINT = "pip install 'modelport[finetune]'"
# Symbols no plate carries but signs, shop fronts and timestamps do. The restricted head keeps
# their classes (each from the base's own row), so the tuned model can still say "this is no
# plate": PlateOCR folds them into its foreign column, which flags a reading ("SALE 50%")
# for review. They are never training targets; their rows stay the base's (frozen).
SIGN_SYMBOLS = "%@&€$#+!?*:/"
# The restricted head's dictionary, in the layout PlateOCR reads: one character per line; the
# space is the class PaddleOCR appends after the dictionary.
PLATE_DICTIONARY = "\n".join([*(c for c in PLATE_ALPHABET if c != " "), *SIGN_SYMBOLS])
# The restricted head's classes: the CTC blank, the dictionary, the space.
CLASSES = ["", *PLATE_DICTIONARY.splitlines(), " "]
# The exported model may differ from the torch one by float rounding (~1e-5 measured on
# probabilities); anything near this means a wrong export (a shape baked in, an op lost).
EXPORT_TOLERANCE = 1e-3
# The same for the converted model against ONNX Runtime on the base model.
CONVERSION_TOLERANCE = 1e-3
# Crops per text-line finder call when cutting the training lines (the reader's batch size).
FINDER_BATCH = 8
# Training pads lines to at least PaddleOCR's own training width (48 x 320): batches of one
# width train 2x faster than batches padded to their widest line. The reader pads only to the
# batch's widest line (crops.to_batch).
TRAIN_LINE_WIDTH = 320
# With a time budget, the pace is first measured over this many steps.
CALIBRATION_STEPS = 20


@dataclass(frozen=True)
class OcrSettings:
    base: str = "plate-ocr"  # store name (its serving version) or name:version to start from
    # Upper bound on passes over the training crops; the best epoch on validation is kept.
    epochs: float = 10.0
    max_steps: int | None = None  # optimizer steps at most (for quick runs)
    batch_size: int = 32  # crops per step
    # AdamW; a small step keeps what PP-OCR learned from millions of text lines.
    learning_rate: float = 5e-4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05  # linear warm-up, then cosine decay to 10%
    train_backbone: bool = False  # True: every weight (several times slower per step on CPU)
    augment: bool = True
    # What the model trains and is measured on. "cut": the number's line(s) as the plate reader
    # cuts them (text_lines.py, with the store's plate-text-detector) and reads them
    # (read_fusion.py: stretched STRETCH times first, at their own width when unsure). "whole":
    # the crop, bands trimmed and split at a row gap (the reader with MODELPORT_PLATE_TEXT_LINES=0).
    lines: str = "cut"
    stretched_share: float = 0.7  # "cut": the share of training lines stretched (the first read)
    text_detector: str = "plate-text-detector"  # "cut": store name (or name:version) of the finder
    # Training time budget: after the first steps (and at each validation) the run's step count
    # is sized to end within it, so the learning rate still decays to its end; None: no budget.
    max_minutes: float | None = None
    validate_every: int | None = None  # steps between validations [default: once an epoch]
    val_fraction: float = 0.1  # held out by photo when labels.csv marks no split=val rows
    seed: int = 0
    runs_dir: Path = Path("runs/finetune-ocr")  # run folders: the exported model, history


@dataclass(frozen=True)
class OcrResult:
    tag: str
    before: float  # exact-plate accuracy of the base on the validation crops
    after: float
    val_crops: int
    seconds: float
    images_per_second: float  # training crops through forward + backward
    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> str:
        name = self.tag.split(":", 1)[0]
        return (
            f"exact plates (raw OCR) on {self.val_crops} validation crops {self.before:.1%} -> "
            f"{self.after:.1%} in {self.seconds / 60:.1f} min "
            f"({self.images_per_second:.1f} training crops/s); new "
            f"version {self.tag}. Serve it: `modelport models serve {self.tag}`, back: "
            f"`modelport models rollback {name}`"
        )


class ExportMismatch(RuntimeError):
    """The exported ONNX model does not compute what the torch model does."""


def finetune_ocr(data_dir: str | Path, settings: OcrSettings = OcrSettings()) -> OcrResult:
    """The whole job: check the data, convert the base, measure, train, export, check, store."""
    data = load_ocr_dataset(data_dir, val_fraction=settings.val_fraction)  # data errors first
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from services.core.console import console

    started = time.monotonic()
    torch.manual_seed(settings.seed)
    base = base_model(settings.base)
    base_path = Path(base.path) / "model.onnx"
    run_dir = (settings.runs_dir / f"{base.tag.name}-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"{data.describe()}; base {base.tag}")

    if settings.lines not in ("cut", "whole"):
        raise ValueError(f"lines must be 'cut' or 'whole', not {settings.lines!r}")
    finder = None
    if settings.lines == "cut":
        finder = TextLineFinder(Path(base_model(settings.text_detector).path) / "model.onnx")
    val_lines = reader_lines(finder, data.val)
    if finder is not None:  # measured as the reader's first read sees them
        val_lines = [[stretch(line) for line in lines] for lines in val_lines]
    before = line_accuracy(PlateOCR(base_path), val_lines, data.val)
    net, classes, metadata = load_recogniser(base_path)
    check_batches = _check_batches(val_lines)
    conversion_diff = check_against_onnx(
        net, base_path, check_batches, CONVERSION_TOLERANCE, what="the converted torch model"
    )
    net.restrict_to(classes, PLATE_DICTIONARY)
    trainable = net.set_trainable(backbone=settings.train_backbone, frozen_classes=SIGN_SYMBOLS)
    backbone = frozen_backbone(net, base_path, run_dir, check_batches)
    untrained = torch_accuracy(net, val_lines, data.val, backbone)
    console.print(
        f"exact plates on the validation crops: {before:.1%} (base), {untrained:.1%} with the "
        f"output restricted to plate characters, before training; {trainable:,} weights train"
        + ("; the frozen backbone runs on ONNX Runtime" if backbone else "")
    )

    train_lines = None
    if finder is not None:
        tick = time.monotonic()
        train_lines = reader_lines(finder, data.train)
        console.print(f"lines cut from {len(data.train)} training crops in {time.monotonic() - tick:.0f} s")
    history: list[dict[str, float]] = [{"step": 0, "epoch": 0.0, "val_exact": untrained}]
    steps_per_epoch = math.ceil(len(data.train) / settings.batch_size)
    steps = math.ceil(settings.epochs * steps_per_epoch)
    steps = max(1, min(steps, settings.max_steps) if settings.max_steps else steps)
    validate_every = settings.validate_every or steps_per_epoch
    plan = {"steps": steps}  # the schedule reads it: a time budget may shorten the run
    optimizer = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad],
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    warmup = max(1, round(steps * settings.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * (
                0.1
                + 0.9
                * 0.5
                * (1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, plan["steps"] - warmup))))
            )
        ),
    )
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    best, best_state = untrained, net.trainable_state()
    rng = np.random.default_rng(settings.seed)
    batches = _training_batches(
        data.train, settings.batch_size, rng, settings.augment, train_lines, settings.stretched_share
    )
    train_seconds, seen = 0.0, 0
    loop_started = time.monotonic()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("fine-tuning OCR", total=steps, status="")
        step = 0
        while step < plan["steps"]:
            step += 1
            lines, spans, targets = next(batches)
            tick = time.perf_counter()
            loss = ctc_loss(net, lines, spans, targets, ctc, backbone)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], 5.0)
            optimizer.step()
            schedule.step()
            train_seconds += time.perf_counter() - tick
            seen += len(spans)
            record = {"step": step, "epoch": round(step / steps_per_epoch, 3), "loss": round(loss.item(), 4)}
            if settings.max_minutes and (step == CALIBRATION_STEPS or step % validate_every == 0):
                plan["steps"] = _steps_within(
                    plan["steps"], step, time.monotonic() - loop_started, settings.max_minutes * 60
                )
                progress.update(task, total=plan["steps"])
            if step % validate_every == 0 or step == plan["steps"]:
                accuracy = torch_accuracy(net, val_lines, data.val, backbone)
                record["val_exact"] = accuracy
                if accuracy > best:
                    best, best_state = accuracy, net.trainable_state()
                    torch.save(best_state, run_dir / "best.pt")  # a run cut short keeps its best
                progress.console.print(
                    f"step {step}/{plan['steps']} (epoch {record['epoch']:.2f}): loss "
                    f"{record['loss']:.3f}, exact plates on validation {accuracy:.1%}"
                )
                (run_dir / "history.json").write_text(json.dumps([*history, record], indent=1))
            history.append(record)
            progress.update(task, advance=1, status=f"loss {record['loss']:.3f}")
    steps = step
    net.load_trainable_state(best_state)
    best_epoch = min((h for h in history if h.get("val_exact") == best), key=lambda h: h["step"])["epoch"]
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))

    version = run_dir / "version"  # what the store gets: model.onnx, tail.onnx when one is written
    version.mkdir()
    exported = version / "model.onnx"
    export_onnx(net, exported, {**metadata, "character": PLATE_DICTIONARY})
    export_diff = check_against_onnx(
        net, exported, check_batches, EXPORT_TOLERANCE, what="the exported ONNX model"
    )
    tail_diff = None if settings.train_backbone else write_tail(exported, base_path, version, check_batches)
    after = line_accuracy(PlateOCR(exported), val_lines, data.val)
    seconds = time.monotonic() - started
    speed = seen / train_seconds if train_seconds else 0.0
    tag = add_version(
        base.tag.name,
        version,
        kind="plate-ocr",
        metadata={
            "base_model": str(base.tag),
            "dataset": {
                "path": str(data.folder.resolve()),
                "train_crops": len(data.train),
                "val_crops": len(data.val),
                "val_held_out_by_hash": data.held_out_by_hash,
                "lines": settings.lines,
            },
            "hyperparameters": hyperparameters(settings),
            "alphabet": PLATE_ALPHABET,
            "metrics": {
                "exact_before": round(before, 4),
                "exact_after": round(after, 4),
                "exact_restricted_untrained": round(untrained, 4),
                "conversion_max_abs_diff": conversion_diff,
                "export_max_abs_diff": export_diff,
                "tail_max_abs_diff": tail_diff,  # None (left out): no tail.onnx, read as a whole model
                "steps": steps,
                "best_epoch": best_epoch,
                "train_images_per_second": round(speed, 2),
                "train_minutes": round(seconds / 60, 2),
            },
        },
    )
    return OcrResult(tag, before, after, len(data.val), seconds, speed, run_dir, history)


# --- the model in torch ------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnx2torch's Slice indexes with a list (a torch UserWarning on every call) and the ONNX
    exporter warns about the shapes it traces and the strided Slices it leaves unfolded
    (PP-OCRv6's); none is ours to fix, and the export check catches what a traced shape would
    break."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1 can be constant folded")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def load_recogniser(onnx_path: str | Path) -> tuple[RecogniserNet, list[str], dict[str, str]]:
    """(torch model with the base's full head, its classes, the ONNX metadata) for a PaddleOCR
    CTC recogniser: `classes` is ["", dictionary lines..., " "]."""
    model = onnx.load(str(onnx_path))
    metadata = {p.key: p.value for p in model.metadata_props}
    if "character" not in metadata:
        raise RuntimeError(f"{onnx_path} has no 'character' metadata: not a PaddleOCR recogniser")
    classes = ["", *metadata["character"].splitlines(), " "]
    _constants_to_initializers(model)
    _explicit_same_pads(model)
    _declare_conv_ranks(model)
    with _quiet():
        graph = convert(model).eval()  # before any forward pass: BatchNorm keeps the base's statistics
    _replace_softmaxes(graph)
    _static_reshapes(graph)
    features, weight, bias = _cut_head(graph, len(classes))
    return RecogniserNet(features, weight, bias), classes, metadata


def _constants_to_initializers(model: Any) -> None:
    """PaddleOCR's ONNX export keeps every weight in a Constant node; onnx2torch's Conv and
    BatchNorm converters only look for initializers."""
    kept = []
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)


def _explicit_same_pads(model: Any) -> None:
    """PP-OCRv6's recogniser has two 2x2 stride-1 Convs and a MaxPool with auto_pad SAME_UPPER,
    which onnx2torch does not convert. At stride 1 the padding does not depend on the input's size:
    k - 1 per axis, the odd one at the end, written out as explicit pads. onnx2torch pads those
    with zeros, which a MaxPool would take for values: only one that reads a Relu (nothing
    below zero) is rewritten."""
    made_by = {name: node for node in model.graph.node for name in node.output}
    for node in model.graph.node:
        attributes = {a.name: a for a in node.attribute}
        auto_pad = attributes.get("auto_pad")
        if node.op_type not in ("Conv", "MaxPool") or auto_pad is None:
            continue
        if auto_pad.s not in (b"SAME_UPPER", b"SAME_LOWER"):
            continue
        kernel = list(attributes["kernel_shape"].ints) if "kernel_shape" in attributes else []
        ones = [1] * len(kernel)
        strides = list(attributes["strides"].ints) if "strides" in attributes else ones
        dilations = list(attributes["dilations"].ints) if "dilations" in attributes else ones
        source = made_by.get(node.input[0])
        # Dilated SAME padding is refused by ONNX Runtime itself: nothing to check it against.
        if (
            not kernel
            or strides != ones
            or dilations != ones
            or (node.op_type == "MaxPool" and (source is None or source.op_type != "Relu"))
        ):
            raise RuntimeError(f"{node.name}: {node.op_type} with {auto_pad.s.decode()} is not supported")
        total = [k - 1 for k in kernel]
        small, large = [t // 2 for t in total], [t - t // 2 for t in total]
        begin, end = (small, large) if auto_pad.s == b"SAME_UPPER" else (large, small)
        node.attribute.remove(auto_pad)
        node.attribute.append(onnx.helper.make_attribute("pads", begin + end))


def _declare_conv_ranks(model: Any) -> None:
    """ONNX shape inference loses the rank after PP-OCR's dynamic Reshapes, and onnx2torch picks
    its BatchNorm class by the input's rank: a 2D Conv's output always has rank 4."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name for v in inferred.graph.value_info if v.type.tensor_type.HasField("shape")}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.output[0] not in known:
            model.graph.value_info.append(
                onnx.helper.make_tensor_value_info(
                    node.output[0], onnx.TensorProto.FLOAT, ["n", "c", "h", "w"]
                )
            )


def _replace_softmaxes(graph: Any) -> None:
    """onnx2torch's opset-11 Softmax flattens and reshapes back to the traced shape, which the
    ONNX export then bakes in; over the last axis (every Softmax in PP-OCR) it is a plain softmax."""

    class LastAxisSoftmax(torch.nn.Module):
        def __init__(self, original: Any) -> None:  # onnx2torch's Softmax module (untyped)
            super().__init__()
            self.original, self.axis = original, original.axis

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.axis % x.dim() == x.dim() - 1 and not self.original.is_log:
                return torch.softmax(x, dim=-1)
            return self.original(x)

    for node in graph.graph.nodes:
        if node.op == "call_module" and type(graph.get_submodule(node.target)).__name__ == "OnnxSoftmaxV1V11":
            original = graph.get_submodule(node.target)
            graph.delete_submodule(node.target)
            graph.add_submodule(node.target, LastAxisSoftmax(original))
    graph.recompile()


class _TemplateReshape(torch.nn.Module):
    """A Reshape whose target shape is known up to the input's own sizes: each entry a fixed
    size, ("dim", j) = the input's size j, or -1 (at most one). Exported as a Reshape to a
    constant shape in ONNX's terms (0 = the input's size there, one -1 = the rest), so the
    exported model takes any batch and width whatever sizes the exporter traced."""

    def __init__(self, template: list[int | tuple[str, int]]) -> None:
        super().__init__()
        self.template = template
        onnx_shape = [0 if t == ("dim", k) else t for k, t in enumerate(template)]
        unknown = [k for k, t in enumerate(onnx_shape) if isinstance(t, tuple) or t == -1]
        if not unknown and 0 in onnx_shape:  # torch's exporter asserts on a 0 without a -1
            unknown = [max(k for k, t in enumerate(onnx_shape) if t == 0)]
        self.onnx_shape = (
            None if len(unknown) > 1 else [-1 if k in unknown else t for k, t in enumerate(onnx_shape)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() and self.onnx_shape is not None:
            return _OnnxReshape.apply(x, tuple(self.onnx_shape))
        return torch.reshape(x, [x.shape[t[1]] if isinstance(t, tuple) else t for t in self.template])


class _OnnxReshape(torch.autograd.Function):
    """torch.reshape with ONNX's 0 = "keep this size", exported as one Reshape to a constant."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.reshape(x, [x.shape[k] if size == 0 else size for k, size in enumerate(shape)])

    @staticmethod
    def symbolic(g: Any, x: Any, shape: tuple[int, ...]) -> Any:
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))


# Inputs (batch, width) that tell fixed sizes from ones following the batch or the width:
# no two share a batch size or a frame count (width / 8).
_PROBES = ((2, 320), (3, 456), (1, 592))


def _static_reshapes(graph: Any) -> None:
    """PP-OCR computes its reshapes' target shapes in the graph (Shape, Slice, Cast, Concat).
    onnx2torch runs them as tensors, and the ONNX exporter then freezes them at the traced
    input's size: an exported model that only reads 320-pixel-wide lines. Probing the graph at
    several batch sizes and widths tells which target sizes are fixed and which follow an
    input size; each such reshape becomes a plain torch.reshape of those, which the exporter
    keeps dynamic. A reshape that fits no template stays as it is (the export check fails it)."""
    reshapes = {
        n.target: n
        for n in graph.graph.nodes
        if n.op == "call_module" and type(graph.get_submodule(n.target)).__name__ == "OnnxReshape"
    }
    seen: dict[str, list[tuple[tuple[int, ...], list[int]]]] = {name: [] for name in reshapes}
    hooks = [
        graph.get_submodule(name).register_forward_hook(
            lambda module, args, output, name=name: seen[name].append(
                (tuple(args[0].shape), args[1].tolist())
            )
        )
        for name in reshapes
    ]
    try:
        with torch.no_grad(), _quiet():
            for batch, width in _PROBES:
                graph(torch.zeros(batch, 3, LINE_HEIGHT, width))
    finally:
        for hook in hooks:
            hook.remove()
    for name, node in reshapes.items():
        template = _reshape_template(seen[name])
        if template is None:
            continue
        graph.delete_submodule(name)
        graph.add_submodule(name, _TemplateReshape(template))
        node.args = node.args[:1]
    graph.graph.eliminate_dead_code()
    graph.recompile()


def _reshape_template(calls: list[tuple[tuple[int, ...], list[int]]]) -> list[int | tuple[str, int]] | None:
    """The template (see _TemplateReshape) that gives every observed (input shape, target)."""
    if len(calls) != len(_PROBES) or len({len(target) for _, target in calls}) != 1:
        return None
    template: list[int | tuple[str, int]] = []
    for k in range(len(calls[0][1])):
        values = [target[k] for _, target in calls]
        if all(v == 0 for v in values):  # ONNX: 0 copies the input's size at this position
            template.append(("dim", k))
        elif len(set(values)) == 1 and values[0] != -1:
            template.append(values[0])
        else:
            same = [
                j
                for j in range(len(calls[0][0]))
                if all(len(shape) > j and shape[j] == v for (shape, _), v in zip(calls, values))
            ]
            template.append(("dim", same[0]) if same else -1)
    return template if template.count(-1) <= 1 else None


def _cut_head(graph: Any, classes: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Remove the final `softmax(features @ W + b)` from the graph: (graph -> features, W, b)."""

    def module_name(node: Any) -> str:
        return type(graph.get_submodule(node.target)).__name__ if node.op == "call_module" else ""

    def split(node: Any) -> tuple[Any, torch.Tensor]:
        """(the computed input, the constant one) of a binary node."""
        consts = [a for a in node.args if getattr(a, "op", "") == "get_attr"]
        others = [a for a in node.args if getattr(a, "op", "") != "get_attr"]
        if len(consts) != 1 or len(others) != 1:
            raise ValueError
        return others[0], graph.get_parameter(consts[0].target) if consts[0].target in dict(
            graph.named_parameters()
        ) else graph.get_buffer(consts[0].target)

    def through_copies(node: Any) -> Any:
        """PP-OCRv6's export puts Identity nodes between the head's MatMul, Add and Softmax."""
        while module_name(node) == "OnnxCopyIdentity":
            node = node.args[0]
        return node

    output = next(n for n in graph.graph.nodes if n.op == "output")
    try:
        node = through_copies(output.args[0])
        if "Softmax" in module_name(node):
            node = through_copies(node.args[0])
        if (
            module_name(node) != "OnnxBinaryMathOperation"
            or graph.get_submodule(node.target).math_op_function is not torch.add
        ):
            raise ValueError
        product, bias = split(node)
        product = through_copies(product)
        if module_name(product) != "OnnxMatMul":
            raise ValueError
        features, weight = split(product)
        if weight.dim() != 2 or weight.shape[1] != classes or bias.shape != (classes,):
            raise ValueError
    except (ValueError, IndexError, AttributeError) as exc:
        raise RuntimeError(
            "the base model does not end in a CTC head (softmax(features @ W + b) over "
            f"{classes} classes) that this job knows how to retrain"
        ) from exc
    weight, bias = weight.detach().clone(), bias.detach().clone()
    output.args = (features,)
    graph.graph.eliminate_dead_code()
    for name, _ in list(graph.named_buffers()):
        owner, _, attr = name.rpartition(".")
        if owner == "initializers" and not any(
            n.op == "get_attr" and n.target == name for n in graph.graph.nodes
        ):
            delattr(graph.get_submodule(owner), attr)
    graph.recompile()
    return graph, weight, bias


class RecogniserNet(torch.nn.Module):
    """The converted recogniser: `features` (the ONNX graph up to the head) and a linear head.
    forward(x: N x 3 x 48 x W) -> logits N x W/8 x classes."""

    def __init__(self, features: Any, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.features = features
        self.head = torch.nn.Linear(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(weight.T)
            self.head.bias.copy_(bias)
        self.eval()  # always: BatchNorm keeps the base's statistics; there is no dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _quiet():
            return self.head(self.features(x))

    def train(self, mode: bool = True) -> RecogniserNet:
        return super().train(False)

    def restrict_to(self, classes: Sequence[str], dictionary: str) -> None:
        """Replace the head by one over ["", *dictionary lines, " "], each row the base's row
        for that character (exact, else its NFKC-uppercase look-alike, else the blank's bias
        minus 10 and zero weights: never chosen until trained)."""
        wanted = ["", *dictionary.splitlines(), " "]
        exact = {c: i for i, c in reversed(list(enumerate(classes)))}
        folded: dict[str, int] = {}
        for i, c in enumerate(classes[1:], start=1):
            folded.setdefault(unicodedata.normalize("NFKC", c).upper(), i)
        old = self.head
        head = torch.nn.Linear(old.in_features, len(wanted))
        with torch.no_grad():
            for row, character in enumerate(wanted):
                source = 0 if row == 0 else exact.get(character, folded.get(character))
                if source is None:
                    head.weight[row].zero_()
                    head.bias[row] = old.bias[0] - 10.0
                else:
                    head.weight[row].copy_(old.weight[source])
                    head.bias[row] = old.bias[source]
        self.head = head

    def set_trainable(self, *, backbone: bool, frozen_classes: str = "") -> int:
        """Choose what trains: the head and everything after the backbone's final average pool
        (the SVTR neck), or (backbone=True) everything. The neck's matrices and LayerNorm
        weights are ONNX initializers (buffers in onnx2torch): they become parameters. With
        the backbone frozen, `self.neck` (the graph from the pool's output on, sharing these
        weights) serves `from_pooled`. The head's rows for `frozen_classes` (characters of
        CLASSES) get no gradient: never targets, CTC would only push them down. Returns how
        many weights train."""
        graph = self.features
        nodes = list(graph.graph.nodes)
        pool = None if backbone else _last_pool(graph)
        start = 0 if pool is None else nodes.index(pool)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for node in nodes[start:]:
            if node.op == "call_module":
                for parameter in graph.get_submodule(node.target).parameters():
                    parameter.requires_grad_(True)
            for used in [node, *node.all_input_nodes]:
                if used.op == "get_attr" and used.target.startswith("initializers."):
                    owner, _, name = used.target.rpartition(".")
                    container = graph.get_submodule(owner)
                    tensor = getattr(container, name)
                    if tensor.is_floating_point() and tensor.numel() > 1:
                        if name in container._buffers:
                            del container._buffers[name]
                            container.register_parameter(name, torch.nn.Parameter(tensor.detach().clone()))
                        getattr(container, name).requires_grad_(True)
        self.head.requires_grad_(True)
        rows = [CLASSES.index(c) for c in frozen_classes]
        if rows:
            if self.head.out_features != len(CLASSES):
                raise ValueError("frozen_classes needs the head restricted to CLASSES first")
            keep = torch.ones(len(CLASSES), 1)
            keep[rows] = 0.0
            self.head.weight.register_hook(lambda grad: grad * keep)
            self.head.bias.register_hook(lambda grad: grad * keep[:, 0])
        self.neck = None if pool is None else _graph_after(graph, pool)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits from the backbone's output (set_trainable(backbone=False) first)."""
        if self.neck is None:
            raise RuntimeError("from_pooled needs set_trainable(backbone=False) first")
        with _quiet():
            return self.head(self.neck(pooled))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().clone() for k, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        parameters = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                parameters[name].copy_(value)


def _last_pool(graph: Any) -> Any:
    """The backbone's final average pool (PPLCNetV3 ends in one), or None."""
    pools = [
        n
        for n in graph.graph.nodes
        if n.op == "call_module" and isinstance(graph.get_submodule(n.target), torch.nn.AvgPool2d)
    ]
    return pools[-1] if pools else None


def _graph_after(graph: Any, pool: Any) -> Any:
    """A GraphModule computing `graph`'s output from `pool`'s output; it shares the weights.
    None when a later node reads anything computed before the pool except the pool itself."""
    new = torch.fx.Graph()
    values = {pool: new.placeholder("pooled")}
    after = False
    for node in graph.graph.nodes:
        if node is pool:
            after = True
        elif node.op == "get_attr" or (after and node.op != "placeholder"):
            if any(n not in values for n in node.all_input_nodes):
                return None
            values[node] = new.node_copy(node, lambda n: values[n])
    neck = torch.fx.GraphModule(graph, new)
    neck.graph.eliminate_dead_code()
    neck.recompile()
    return neck.eval()


class FrozenBackbone:
    """The base's backbone (input to its final average pool) on ONNX Runtime: with the
    backbone frozen, a training step needs only its output, and ONNX Runtime computed the
    whole model ~4x faster than the converted torch graph on 2 CPU cores (0.8 s vs 3.5 s for
    38 lines)."""

    def __init__(self, onnx_path: Path, folder: Path) -> None:
        path = folder / "backbone.onnx"
        onnx.save(extract_backbone(onnx.load(str(onnx_path))), str(path))
        self.session = onnx_session(path)

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.session.get_inputs()[0].name: batch})[0])


def frozen_backbone(
    net: RecogniserNet, onnx_path: Path, folder: Path, batches: list[np.ndarray]
) -> FrozenBackbone | None:
    """The base's backbone on ONNX Runtime when its output, fed to `net.from_pooled`, gives
    what `net` gives (within CONVERSION_TOLERANCE on `batches`); else None (train in torch)."""
    if getattr(net, "neck", None) is None:
        return None
    try:
        backbone = FrozenBackbone(onnx_path, folder)
        with torch.no_grad():
            worst = max(
                float(
                    (
                        torch.softmax(net.from_pooled(backbone(b)), -1)
                        - torch.softmax(net(torch.from_numpy(b)), -1)
                    )
                    .abs()
                    .max()
                )
                for b in batches
            )
    except Exception:  # an extraction ONNX cannot do, a graph split the pool does not match: torch it is
        return None
    return backbone if worst <= CONVERSION_TOLERANCE else None


# --- training ------------------------------------------------------------------------------------


def reader_lines(finder: TextLineFinder | None, samples: Sequence[OcrSample]) -> list[list[np.ndarray]]:
    """Each crop's lines as the reader gives them to the recogniser: with a finder, the
    number's row(s) it cuts (the whole crop, trimmed and split, where it finds none), in
    batches as the reader runs it; without, the crop trimmed and split."""
    found: list[list[np.ndarray]] = []
    for start in range(0, len(samples), FINDER_BATCH):
        crops = [s.image() for s in samples[start : start + FINDER_BATCH]]
        found += finder.rows(crops) if finder else [split_rows(trim_bands(crop)) for crop in crops]
    return found


def _steps_within(planned: int, done: int, seconds: float, budget: float) -> int:
    """The run's step count so that it ends within `budget` seconds at the pace so far
    (validations included), never more than planned nor fewer than done."""
    return max(done, min(planned, math.floor(budget / (seconds / done))))


def _training_batches(
    samples: list[OcrSample],
    batch_size: int,
    rng: np.random.Generator,
    augmented: bool,
    cut_lines: list[list[np.ndarray]] | None = None,
    stretched_share: float = 0.0,
) -> Iterator[tuple[list[np.ndarray], list[int], list[str]]]:
    """Endless (lines, lines per crop, plates) batches, a fresh shuffle each epoch. With
    `cut_lines` (each sample's lines as the reader cuts them): each line augmented, and a
    crop's lines stretched as the reader's first read stretches them in `stretched_share` of
    draws (no affine warp: the cut's margin is tight, a shift would cut a character).
    Without: each crop augmented, then trimmed and split as the reader does."""
    while True:
        order = rng.permutation(len(samples))
        for start in range(0, len(order), batch_size):
            lines, spans, plates = [], [], []
            for index in order[start : start + batch_size]:
                if cut_lines is not None:
                    crop_lines = [
                        augment(line, rng, geometry=False) if augmented else line for line in cut_lines[index]
                    ]
                    if rng.random() < stretched_share:
                        crop_lines = [stretch(line) for line in crop_lines]
                else:
                    crop = samples[index].image()
                    if augmented:
                        crop = augment(crop, rng)
                    crop_lines = split_rows(trim_bands(crop))
                lines += crop_lines
                spans.append(len(crop_lines))
                plates.append(samples[index].plate)
            yield lines, spans, plates


def ctc_loss(
    net: RecogniserNet,
    lines: list[np.ndarray],
    spans: list[int],
    plates: list[str],
    ctc: Any,
    backbone: FrozenBackbone | None = None,
) -> torch.Tensor:
    """CTC loss of a batch: each crop's lines (top row first) joined into one frame sequence,
    aligned to its whole plate. Lines go through the model padded to TRAIN_LINE_WIDTH: the
    usual ones (up to 320 px wide at 48 px high) together at 320 px, the few wider ones in a
    batch of their own (one wide line padding all to its width made steps 2x slower)."""
    widths = [_padded_width([line]) for line in lines]
    per_line: list[torch.Tensor | None] = [None] * len(lines)
    for group in (
        [i for i, w in enumerate(widths) if w == TRAIN_LINE_WIDTH],
        [i for i, w in enumerate(widths) if w > TRAIN_LINE_WIDTH],
    ):
        if group:
            log_probs = torch.log_softmax(
                _logits(net, to_batch([lines[i] for i in group], min_width=TRAIN_LINE_WIDTH), backbone),
                dim=-1,
            )
            for row, i in enumerate(group):
                per_line[i] = log_probs[row]  # T x C
    sequences, start = [], 0
    for count in spans:
        sequences.append(torch.cat(per_line[start : start + count]))  # type: ignore[arg-type]  # no None left: the loop above filled every line
        start += count
    lengths = torch.tensor([len(s) for s in sequences])
    padded = torch.nn.utils.rnn.pad_sequence(sequences)  # T_max x crops x C
    targets = torch.tensor([CLASSES.index(c) for plate in plates for c in plate])
    return ctc(padded, targets, lengths, torch.tensor([len(p) for p in plates]))


def _logits(net: RecogniserNet, batch: np.ndarray, backbone: FrozenBackbone | None) -> torch.Tensor:
    return net(torch.from_numpy(batch)) if backbone is None else net.from_pooled(backbone(batch))


def _padded_width(lines: list[np.ndarray]) -> int:
    """The width training pads these lines to."""
    return max(TRAIN_LINE_WIDTH, *(math.ceil(LINE_HEIGHT * line.shape[1] / line.shape[0]) for line in lines))


def _greedy(probabilities: np.ndarray) -> str:
    best = probabilities.argmax(axis=-1)
    return "".join(CLASSES[b] for i, b in enumerate(best) if b and (i == 0 or best[i - 1] != b))


def _same_width_groups(line_sets: list[list[np.ndarray]]) -> dict[int, list[int]]:
    """Crops grouped by the width training pads their lines to when read alone: a batch of
    them computes what one-crop calls do (the neck's attention sees the padding)."""
    groups: dict[int, list[int]] = {}
    for index, lines in enumerate(line_sets):
        groups.setdefault(_padded_width(lines), []).append(index)
    return groups


def torch_accuracy(
    net: RecogniserNet,
    line_sets: list[list[np.ndarray]],
    samples: list[OcrSample],
    backbone: FrozenBackbone | None = None,
    batch_size: int = 32,
) -> float:
    """Exact plates (greedy CTC, normalised text) of the torch model with the restricted head."""
    right = 0
    with torch.no_grad():
        for indices in _same_width_groups(line_sets).values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                lines = [line for i in chunk for line in line_sets[i]]
                probabilities = torch.softmax(
                    _logits(net, to_batch(lines, min_width=TRAIN_LINE_WIDTH), backbone), dim=-1
                ).numpy()
                position = 0
                for i in chunk:
                    count = len(line_sets[i])
                    text = "".join(_greedy(p) for p in probabilities[position : position + count])
                    position += count
                    right += normalise(text) == samples[i].plate
    return right / len(samples)


def plate_accuracy(ocr: PlateOCR, crops: Sequence[np.ndarray], samples: Sequence[OcrSample]) -> float:
    """Exact plates read by the serving OCR code, one crop per call (as `evaluate plates --crops`)."""
    return line_accuracy(ocr, [split_rows(trim_bands(crop)) for crop in crops], samples)


def line_accuracy(
    ocr: PlateOCR, line_sets: Sequence[Sequence[np.ndarray]], samples: Sequence[OcrSample]
) -> float:
    """Exact plates read by the serving OCR code from each crop's lines, one crop per call."""
    right = sum(
        normalise(ocr.read_lines([lines])[0].text) == sample.plate
        for lines, sample in zip(line_sets, samples)
    )
    return right / len(samples)


# --- export and checks ---------------------------------------------------------------------------


class _Probabilities(torch.nn.Module):
    """What PlateOCR runs: class probabilities (N x T x classes)."""

    def __init__(self, net: RecogniserNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def export_onnx(net: RecogniserNet, path: Path, metadata: dict[str, str]) -> None:
    """Write `net` (softmax included) as ONNX with dynamic batch and width and `metadata`."""
    sample = torch.zeros(2, 3, LINE_HEIGHT, TRAIN_LINE_WIDTH)
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            _Probabilities(net),
            (sample,),
            str(path),
            input_names=["x"],
            output_names=["probabilities"],
            dynamic_axes={"x": {0: "batch", 3: "width"}, "probabilities": {0: "batch", 1: "time"}},
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def write_tail(exported: Path, base_path: Path, folder: Path, batches: list[np.ndarray]) -> float | None:
    """Save the exported model's neck and head as folder/tail.onnx (tuned_tail.py: served grafted
    on the base, in its calls) when, grafted on the base, they give the exported model's
    probabilities within EXPORT_TOLERANCE on `batches`: the worst difference, else None."""
    try:
        tail = extract_tail(onnx.load(str(exported)), sha256_of(base_path))
        twin = onnx_session(graft(onnx.load(str(base_path)), tail), ["CPUExecutionProvider"])
    except Exception as exc:  # a graph with no pool to cut at: served as a whole model, as before
        warnings.warn(f"no tail.onnx stored (read as a whole second model): {exc}", stacklevel=2)
        return None
    whole = onnx_session(exported, ["CPUExecutionProvider"])
    name = whole.get_inputs()[0].name
    worst = max(
        float(np.abs(twin.run([TAIL_OUTPUT], {name: b})[0] - whole.run(None, {name: b})[0]).max())
        for b in batches
    )
    if not worst <= EXPORT_TOLERANCE:
        warnings.warn(f"no tail.onnx stored: grafted, it differs by {worst:.2e}", stacklevel=2)
        return None
    onnx.save(tail, str(folder / "tail.onnx"))
    return float(f"{worst:.3g}")


def _check_batches(line_sets: list[list[np.ndarray]], count: int = 8) -> list[np.ndarray]:
    """Model inputs from validation lines at several batch sizes and widths (the exported
    model must not have frozen either): the lines of up to `count` crops (320 px wide unless
    one is longer), one line tiled past 640 px, and three lines padded to ~450 px."""
    lines = [line for lines in line_sets[:count] for line in lines]

    def tiled(line: np.ndarray, width: int) -> np.ndarray:  # repeated until `width` px at 48 px high
        scaled = LINE_HEIGHT * line.shape[1] / line.shape[0]
        return np.concatenate([line] * max(1, math.ceil(width / scaled)), axis=1)

    return [
        to_batch(lines),
        to_batch([tiled(lines[0], 2 * TRAIN_LINE_WIDTH + 20)]),
        to_batch([tiled(lines[-1], TRAIN_LINE_WIDTH + 130), lines[0], lines[-1]]),
    ]


def check_against_onnx(
    net: RecogniserNet, onnx_path: Path, batches: list[np.ndarray], tolerance: float, *, what: str
) -> float:
    """Max |torch - ONNX Runtime| over the class probabilities of `batches` (rounded to 3
    digits); raises ExportMismatch beyond `tolerance`."""
    session = onnx_session(onnx_path, ["CPUExecutionProvider"])
    worst = 0.0
    for batch in batches:
        try:
            expected = session.run(None, {session.get_inputs()[0].name: batch})[0]
        except Exception as exc:  # onnxruntime's Fail, InvalidArgument, ...: a shape frozen at export
            raise ExportMismatch(
                f"ONNX Runtime cannot run {what} on a batch of shape {batch.shape}: "
                f"{str(exc).splitlines()[0][:300]}; nothing stored"
            ) from exc
        with torch.no_grad():
            got = torch.softmax(net(torch.from_numpy(batch)), dim=-1).numpy()
        if got.shape != expected.shape:
            raise ExportMismatch(f"{what} gives shape {got.shape}, ONNX Runtime {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= tolerance:
        raise ExportMismatch(
            f"{what} differs from ONNX Runtime by up to {worst:.2e} in a probability "
            f"(tolerance {tolerance:.0e}); nothing stored"
        )
    return float(f"{worst:.3g}")


__all__ = [
    "SIGN_SYMBOLS",
    "ExportMismatch",
    "OcrDataset",
    "OcrResult",
    "OcrSettings",
    "RecogniserNet",
    "check_against_onnx",
    "export_onnx",
    "finetune_ocr",
    "load_recogniser",
]
