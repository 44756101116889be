"""`modelport finetune ocr` on the served recogniser (PP-OCRv6 small): conversion to torch, a CTC training
step, ONNX export, the ONNX-vs-torch check and the new store version, on crops drawn by the
synthetic generator (tests/data/synth_plates.py) into a temporary folder.

Two steps on a dozen crops are a pipeline check: the accuracy figures say nothing about quality.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from finetune.ocr_data import DataError, load_ocr_dataset

torch = pytest.importorskip("torch", reason="fine-tuning the OCR needs the finetune extra")
pytest.importorskip("onnx2torch", reason="fine-tuning the OCR needs the finetune extra")
pytest.importorskip("cv2", reason="the synthetic crops need opencv-python")
needs_synth = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None,
    reason="the synthetic crops use the photos in the ultralytics wheel",
)

BASE = "finetune-test-plate-ocr"  # its own store name: the plate reader's tests keep theirs


def write_labels(folder: Path, rows: list[dict[str, str]]) -> None:
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def default_ocr() -> Path:
    """The plate reader's default OCR model in the test store (not `plate_models`, which also
    exports the detector)."""
    from services.core.model_store import import_model

    return import_model("plate-ocr").path / "model.onnx"


@pytest.fixture(scope="module")
def base_ocr(default_ocr: Path) -> str:
    """The default plate OCR under a store name of its own: fine-tuning adds versions to it."""
    from services.core.model_store import import_model
    from services.core.sources import LocalFile

    return import_model(BASE, LocalFile(str(default_ocr)), kind="plate-ocr").tag


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic crops (one per format, two-row plates included), every row trainable:
    the generator's dev/test split is dropped so the job holds out its own validation rows."""
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("the synthetic crops use the photos in the ultralytics wheel")
    from tests.data import synth_plates

    target = tmp_path_factory.mktemp("synth")
    synth_plates.generate(target, seed=5, crops=12, photos=0)
    folder = target / "crops"
    with open(folder / "labels.csv", newline="") as handle:
        rows = [{"filename": r["filename"], "plate": r["plate"]} for r in csv.DictReader(handle)]
    write_labels(folder, rows)
    return folder


@pytest.fixture(scope="module")
def converted(default_ocr: Path):
    from finetune.ocr import PLATE_DICTIONARY, load_recogniser

    net, classes, metadata = load_recogniser(default_ocr)
    net.restrict_to(classes, PLATE_DICTIONARY)
    return net, metadata


# 7-12 s on 2 idle cores, up to 35 s on busy ones: the real model converted, trained, exported
@pytest.mark.slow
@needs_synth
def test_finetune_stores_a_checked_version_that_plate_ocr_reads(
    base_ocr: str, crops: Path, tmp_path: Path
) -> None:
    import onnx

    from finetune.ocr import PLATE_DICTIONARY, OcrSettings, finetune_ocr
    from services.core.model_store import import_model, resolve, serving_tag, versions
    from services.core.sources import sha256_of
    from services.plate_reader.crops import split_rows
    from services.plate_reader.ocr import PLATE_ALPHABET, PlateOCR
    from services.plate_reader.settings import Settings

    base_sha = sha256_of(Path(resolve(base_ocr).path))
    shipped = import_model("plate-ocr-tail").path / "tail.onnx"  # a default, as `make setup` has it
    settings = OcrSettings(
        base=BASE, max_steps=2, batch_size=4, val_fraction=0.25, runs_dir=tmp_path / "runs"
    )
    result = finetune_ocr(crops, settings)

    assert result.tag.startswith(f"{BASE}:") and result.tag != base_ocr
    assert str(versions(BASE)[-1].tag) == result.tag
    assert serving_tag(BASE) == base_ocr  # a new version is never served without asking
    # ... nor read beside its base unless asked (read_fusion.fuse_equals); "auto" finds it
    assert str(Settings(ocr_model=base_ocr).tuned_ocr_model()).startswith(
        "plate-ocr-tail:"
    )  # the shipped tail
    assert Settings(ocr_model=base_ocr, ocr_tuned_model="auto").tuned_ocr_model() == result.tag
    assert Settings(ocr_model=base_ocr, ocr_tuned_model="none").tuned_ocr_model() is None
    assert sha256_of(Path(resolve(base_ocr).path)) == base_sha
    meta = resolve(result.tag).info.metadata
    assert meta["kind"] == "plate-ocr" and meta["base_model"] == base_ocr
    metrics = meta["metrics"]
    assert metrics["conversion_max_abs_diff"] < 1e-3 and metrics["export_max_abs_diff"] < 1e-3
    assert metrics["exact_before"] == result.before and metrics["exact_after"] == result.after
    assert metrics["steps"] == 2 and [h["step"] for h in result.history] == [0, 1, 2]
    assert (
        0 < meta["dataset"]["val_crops"] < 12
        and meta["dataset"]["train_crops"] + meta["dataset"]["val_crops"] == 12
    )

    stored = resolve(result.tag).path_of("model.onnx")
    model = onnx.load(stored)
    assert {p.key: p.value for p in model.metadata_props}["character"] == PLATE_DICTIONARY
    # PlateOCR, unchanged, reads it: any batch size, a two-row crop, a crop wider than 320 px.
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(crops.glob("*.png"))]
    wide = np.concatenate([images[0]] * 4, axis=1)
    results = PlateOCR(stored).read([*images, wide])
    assert len(results) == 13 and any(r.text for r in results)
    assert all(set(r.text) <= set(PLATE_ALPHABET) for r in results)
    # Its neck and head (the backbone stayed frozen) are stored too, and grafted on the base
    # they read in the base's own call as the whole model does (tuned_tail.py): how "auto"
    # and the shipped plate-ocr-tail are served.
    assert metrics["tail_max_abs_diff"] < 1e-3
    tail = resolve(result.tag).path_of("tail.onnx")
    lines = [split_rows(image) for image in [*images, wide]]
    _, grafted = PlateOCR(resolve(base_ocr).path_of("model.onnx"), tail_path=tail).read_both(lines)
    whole = PlateOCR(stored).read_lines(lines)
    assert grafted is not None and [r.text for r in grafted] == [r.text for r in whole]
    np.testing.assert_allclose([r.confidence for r in grafted], [r.confidence for r in whole], atol=1e-4)
    # Promoted in its base's place, it keeps its base's backbone: the shipped tail still grafts on
    assert PlateOCR(stored, tail_path=shipped).has_tail


# Every weight trains: a few seconds more than the frozen backbone's two steps
@pytest.mark.slow
@needs_synth
def test_a_version_trained_whole_is_stored_and_read_as_a_second_model(
    base_ocr: str, crops: Path, plate_models: dict[str, Path], tmp_path: Path
) -> None:
    """--train-backbone: no tail can be cut (the backbone is not the base's), so the version is
    stored without one and the reader reads its whole model beside the base. (Its metadata once
    held tail_max_abs_diff = None, which the store refuses: the run trained, then failed.)"""
    from finetune.ocr import OcrSettings, finetune_ocr
    from services.core.model_store import resolve
    from services.plate_reader.pipeline import PlateRecognizer
    from services.plate_reader.settings import Settings

    settings = OcrSettings(
        base=BASE,
        max_steps=1,
        batch_size=4,
        val_fraction=0.25,
        train_backbone=True,
        runs_dir=tmp_path / "runs",
    )
    result = finetune_ocr(crops, settings)

    stored = resolve(result.tag)
    assert "tail_max_abs_diff" not in stored.info.metadata["metrics"]
    assert not (Path(stored.path) / "tail.onnx").exists()
    tag = Settings(ocr_model=base_ocr, ocr_tuned_model=result.tag).tuned_ocr_model()
    reader = PlateRecognizer.from_files(
        plate_models["plate-detector"],
        resolve(base_ocr).path_of("model.onnx"),
        review_threshold=Settings().review_threshold,
        tuned_ocr_dir=resolve(tag).path,
    )
    assert not reader.ocr.has_tail and reader.tuned_ocr is not None
    image = np.asarray(Image.open(sorted(crops.glob("*.png"))[0]).convert("RGB"))
    [reading] = reader.read_crops([image])
    assert reading.candidates  # the base and the whole tuned model read it together


def test_export_check_refuses_a_model_that_differs(converted, tmp_path: Path) -> None:
    from finetune.ocr import ExportMismatch, _check_batches, check_against_onnx, export_onnx

    net, metadata = converted
    rng = np.random.default_rng(0)
    lines = [
        [rng.integers(0, 255, (40, 160, 3), dtype=np.uint8)],
        [rng.integers(0, 255, (30, 200, 3), dtype=np.uint8)],
    ]
    batches = _check_batches(lines)
    widths = sorted(b.shape[3] for b in batches)
    assert {b.shape[0] for b in batches} == {2, 1, 3} and widths[0] == 320 < widths[1] < widths[2]
    path = tmp_path / "model.onnx"
    export_onnx(net, path, metadata)
    assert check_against_onnx(net, path, batches, 1e-3, what="the export") < 1e-3
    saved = net.head.bias.detach().clone()
    try:
        with torch.no_grad():
            net.head.bias[1:] += 3.0  # the torch model changes after the export
        with pytest.raises(ExportMismatch, match="nothing stored"):
            check_against_onnx(net, path, batches, 1e-3, what="the export")
    finally:
        with torch.no_grad():
            net.head.bias.copy_(saved)


def test_a_two_row_crop_is_one_ctc_sequence_of_both_rows(converted) -> None:
    from finetune.ocr import ctc_loss

    net, _ = converted
    trainable = net.set_trainable(backbone=False)
    assert 0 < trainable < sum(p.numel() for p in net.parameters()) / 2  # the backbone is frozen
    rng = np.random.default_rng(1)
    top, bottom = (
        rng.integers(0, 255, (24, 80, 3), dtype=np.uint8),
        rng.integers(0, 255, (24, 80, 3), dtype=np.uint8),
    )
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    loss = ctc_loss(net, [top, bottom], [2], ["29A12345"], ctc)
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert any(p.grad is not None for p in net.head.parameters())
    # A label longer than one line's 40 frames fits only because both rows' frames are joined.
    long_label = "AB" * 25
    assert torch.isfinite(ctc_loss(net, [top, bottom], [2], [long_label], torch.nn.CTCLoss(blank=0)))


def test_cut_lines_train_stretched_as_the_first_read_and_plain_as_the_second() -> None:
    """With the reader's cut lines, a crop's lines are stretched together (read_fusion's first
    read) in the given share of draws and left at their own width otherwise."""
    from finetune.ocr import _training_batches
    from finetune.ocr_data import OcrSample
    from services.plate_reader.read_fusion import STRETCH

    samples = [OcrSample(f"c{i}.png", Path(f"c{i}.png"), f"AB{i}", f"c{i}") for i in range(40)]
    cut = [[np.zeros((48, 100 + i, 3), np.uint8)] * (1 + i % 2) for i in range(40)]

    def widths(share: float) -> list[tuple[int, ...]]:
        lines, spans, plates = next(
            _training_batches(samples, 40, np.random.default_rng(0), False, cut, share)
        )
        assert sum(spans) == len(lines) and sorted(plates) == sorted(s.plate for s in samples)
        groups, at = [], 0
        for span in spans:
            groups.append(tuple(line.shape[1] for line in lines[at : at + span]))
            at += span
        return groups

    plain, stretched = widths(0.0), widths(1.0)
    assert all(w in {100 + i for i in range(40)} for group in plain for w in group)
    assert all(w in {round(STRETCH * (100 + i)) for i in range(40)} for group in stretched for w in group)
    mixed = widths(0.5)
    wide = [all(w >= 200 for w in group) for group in mixed]
    assert all(all(w >= 200 for w in g) or all(w < 200 for w in g) for g in mixed)  # a crop's lines together
    assert 5 < sum(wide) < 35


def test_a_time_budget_sizes_the_run_to_end_within_it() -> None:
    from finetune.ocr import _steps_within

    assert _steps_within(2000, 20, 60.0, 2400) == 800  # 3 s a step: 800 steps in 40 minutes
    assert _steps_within(2000, 20, 10.0, 2400) == 2000  # fast enough: never more than planned
    assert _steps_within(2000, 500, 3000.0, 2400) == 500  # already over: stops where it is


def test_split_convention(tmp_path: Path) -> None:
    for i in range(8):
        Image.new("RGB", (60, 20)).save(tmp_path / f"c{i}.png")
    rows = [
        ("c0.png", "AB12 CDE", "train", "p1"),
        ("c1.png", "AB12CDF", "val", "p2"),
        ("c2.png", "X1", "test", "p3"),
        ("c3.png", "", "train", "p4"),
        ("c4.png", "ab-12", "dev", "p5"),
        ("c5.png", "ZZ9", "", "p6"),
    ]
    write_labels(tmp_path, [dict(zip(("filename", "plate", "split", "photo"), r)) for r in rows])
    data = load_ocr_dataset(tmp_path)
    assert [s.plate for s in data.train] == ["AB12CDE", "AB12", "ZZ9"]  # normalised; empty and test left out
    assert [s.filename for s in data.val] == ["c1.png"] and not data.held_out_by_hash
    assert (data.test_rows, data.empty_rows) == (1, 1)

    # No split=val rows: whole photos are held out, the same ones on every run.
    rows = [{"filename": f"c{i}.png", "plate": f"AB{i}", "photo": f"p{i // 2}"} for i in range(8)]
    write_labels(tmp_path, rows)
    data = load_ocr_dataset(tmp_path, val_fraction=0.5)
    assert data.held_out_by_hash and data.train and data.val
    assert not {s.group for s in data.train} & {s.group for s in data.val}
    assert [s.filename for s in load_ocr_dataset(tmp_path, val_fraction=0.5).val] == [
        s.filename for s in data.val
    ]

    write_labels(tmp_path, [{"filename": "c0.png", "plate": "AB1", "split": "holdout"}])
    with pytest.raises(DataError, match="none of train, dev, val, test"):
        load_ocr_dataset(tmp_path)
    write_labels(tmp_path, [{"filename": "missing.png", "plate": "AB1"}])
    with pytest.raises(DataError, match="not found"):
        load_ocr_dataset(tmp_path)


def test_cli_registers_the_command_and_reports_data_errors(tmp_path: Path) -> None:
    from finetune.cli import finetune

    help_text = CliRunner().invoke(finetune, ["ocr", "--help"]).output
    assert "DATA_DIR" in help_text and "--max-steps" in help_text and "--train-backbone" in help_text
    assert "--lines" in help_text and "--max-minutes" in help_text
    result = CliRunner().invoke(finetune, ["ocr", str(tmp_path)])
    assert result.exit_code == 1 and "labels.csv" in result.output


def test_the_restricted_head_still_flags_a_symbol_no_plate_has(converted, tmp_path: Path) -> None:
    """PlateOCR's sign check needs a class for symbols no plate has: the restricted, exported
    model must still read the "%" of "SALE 50%" as foreign (a head of plate characters only
    cannot)."""
    from PIL import ImageDraw, ImageFont

    from finetune.ocr import PLATE_DICTIONARY, export_onnx
    from services.plate_reader.ocr import PlateOCR

    net, metadata = converted
    path = tmp_path / "model.onnx"
    export_onnx(net, path, {**metadata, "character": PLATE_DICTIONARY})
    font = ImageFont.load_default(size=60)
    signs = []
    for text in ("SALE 50%", "SALE 50"):
        sign = Image.new("RGB", (420, 100), "white")
        ImageDraw.Draw(sign).text((20, 18), text, fill="black", font=font)
        signs.append(np.asarray(sign))
    symbol, plain = PlateOCR(path).read(signs)
    assert symbol.foreign >= 0.95 and plain.foreign < 0.95, (symbol, plain)


def test_the_sign_symbols_rows_do_not_train(default_ocr: Path) -> None:
    from finetune.ocr import CLASSES, PLATE_DICTIONARY, SIGN_SYMBOLS, ctc_loss, load_recogniser

    net, classes, _ = load_recogniser(default_ocr)
    net.restrict_to(classes, PLATE_DICTIONARY)
    net.set_trainable(backbone=False, frozen_classes=SIGN_SYMBOLS)
    rng = np.random.default_rng(2)
    line = rng.integers(0, 255, (32, 160, 3), dtype=np.uint8)
    ctc_loss(net, [line], [1], ["AB12CD"], torch.nn.CTCLoss(blank=0, zero_infinity=True)).backward()
    rows = [CLASSES.index(c) for c in SIGN_SYMBOLS]
    others = [i for i in range(len(CLASSES)) if i not in rows]
    assert net.head.weight.grad[rows].abs().max() == 0 and net.head.bias.grad[rows].abs().max() == 0
    assert net.head.weight.grad[others].abs().max() > 0


def _padded_graph(op: str, auto_pad: str, after_relu: bool) -> object:
    """x -> [Relu] -> op (2x2, stride 1, `auto_pad`): a hand-built graph."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(2, 3, 2, 2)).astype(np.float32), "w"
    )
    source = "r" if after_relu else "x"
    node = (
        helper.make_node("Conv", [source, "w"], ["y"], kernel_shape=[2, 2], auto_pad=auto_pad)
        if op == "Conv"
        else helper.make_node("MaxPool", [source], ["y"], kernel_shape=[2, 2], auto_pad=auto_pad)
    )
    nodes = [helper.make_node("Relu", ["x"], ["r"])] if after_relu else []
    channels = 2 if op == "Conv" else 3
    graph = helper.make_graph(
        [*nodes, node],
        "padded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 5, 6])],
        [weight] if op == "Conv" else [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


@pytest.mark.parametrize(
    ("op", "auto_pad", "after_relu"),
    [("Conv", "SAME_UPPER", False), ("Conv", "SAME_LOWER", False), ("MaxPool", "SAME_UPPER", True)],
)
def test_same_padding_is_written_out_as_the_same_explicit_pads(
    op: str, auto_pad: str, after_relu: bool
) -> None:
    import onnxruntime as ort

    from finetune.ocr import _explicit_same_pads

    model = _padded_graph(op, auto_pad, after_relu)
    x = np.random.default_rng(1).normal(size=(1, 3, 5, 6)).astype(np.float32)
    [expected] = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})  # type: ignore[attr-defined]
    _explicit_same_pads(model)
    attributes = {a.name for a in model.graph.node[-1].attribute}  # type: ignore[attr-defined]
    assert "auto_pad" not in attributes and "pads" in attributes
    [got] = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})  # type: ignore[attr-defined]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_same_padding_a_zero_pad_would_change_is_refused() -> None:
    # onnx2torch pads with zeros: a MaxPool over values below zero would take them for values.
    from finetune.ocr import _explicit_same_pads

    with pytest.raises(RuntimeError, match="not supported"):
        _explicit_same_pads(_padded_graph("MaxPool", "SAME_UPPER", after_relu=False))
