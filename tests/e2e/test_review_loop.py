"""The human loop end to end, in CI time: a real plate reader reads unsure plates, a person
corrects them through the review API, the corrections are exported, the OCR is fine-tuned on
them (2 steps: the path, not the accuracy), and the promote gate, on crops apart from the
training ones, refuses a worse version and passes a better one."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from services.core.cli import main
from services.core.model_store import import_model, resolve, serving_tag, set_serving, versions
from services.core.sources import LocalFile
from tests.assets import asset
from tests.reviews import recorded_reviews
from tests.scenes import plate_on_street

pytestmark = pytest.mark.slow
pytest.importorskip("onnx2torch", reason="pip install 'modelport[finetune]'")


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return f"exit={result.exit_code}\n{result.output}"


def test_read_review_export_finetune_promote(plate_server: str, tmp_path: Path) -> None:
    # 1. Photos read by the service: the hard plate is flagged and lands in the queue.
    for at in ((300, 700), (200, 600), (400, 650), (250, 720), (350, 620), (150, 680)):
        scene = plate_on_street(at=at, plate_asset="plate_krw301")
        response = httpx.post(
            f"{plate_server}/v1/plate-reader",
            files={"upload": scene.jpeg},
            data={"camera_id": "loop"},
            timeout=30,
        )
        assert response.json()["results"][0]["review"] is True
    # 2. A person corrects them through the API.
    items = recorded_reviews(plate_server, count=6, camera_id="loop")
    assert len(items) >= 6
    for item in items:
        decided = httpx.post(f"{plate_server}/v1/reviews/{item['id']}", json={"plate": "KRW301"})
        assert decided.status_code == 200
    # 3. Exported as training data (the CLI reads the same database as the server).
    out = tmp_path / "corrections"
    exported = run("reviews", "export", str(out))
    assert exported.startswith("exit=0"), exported
    with open(out / "ocr" / "labels.csv") as labels:
        rows = [r for r in csv.DictReader(labels) if r["plate"] == "KRW301"]
    assert len(rows) >= 6
    # Each item says what read it: the recogniser and the plate-tuned tail read with it
    versions_read = {
        p["model_version"]
        for t in json.loads((out / "label-studio.json").read_text())
        for p in t["predictions"]
    }
    assert any(v.startswith("plate-ocr:") and "+plate-ocr-tail:" in v for v in versions_read), versions_read
    base = str(resolve(serving_tag("plate-ocr")).tag)
    stored_before = {str(m.tag) for m in versions("plate-ocr")}
    held_out = held_out_crops(tmp_path / "held-out")  # evaluation: no crop of it was trained on
    try:
        # 4. The OCR fine-tuned on them: a new, checked plate-ocr version in the store.
        tuned = run("finetune", "ocr", str(out / "ocr"), "--max-steps", "2", "--batch-size", "4")
        assert tuned.startswith("exit=0"), tuned
        [new_tag] = {str(m.tag) for m in versions("plate-ocr")} - stored_before
        # 5. The promote gate. A worse version (the base with its weights scrambled) is refused
        # while the base is served ...
        worse = import_model(
            "plate-ocr",
            LocalFile(str(scrambled(resolve(base).path_of("model.onnx"), tmp_path / "worse.onnx"))),
        ).tag
        set_serving(base)
        verdict = run("models", "promote", worse, "--eval", str(held_out), "--crops")
        serving, candidate = exact_rates(verdict)
        assert candidate < serving, verdict  # it does read fewer plates ...
        assert verdict.startswith("exit=1") and "measures worse" in verdict, verdict  # ... refused
        assert str(resolve(serving_tag("plate-ocr")).tag) == base
        # ... and the fine-tuned version, which reads more plates than the worse one, passes
        # when the worse one is served.
        set_serving(worse)
        verdict = run("models", "promote", new_tag, "--eval", str(held_out), "--crops")
        serving, candidate = exact_rates(verdict)
        assert candidate > serving, verdict
        assert verdict.startswith("exit=0") and f"serving {new_tag}" in verdict, verdict
        assert str(resolve(serving_tag("plate-ocr")).tag) == new_tag
        # --force serves even a worse version.
        forced = run("models", "promote", worse, "--eval", str(held_out), "--crops", "--force")
        assert forced.startswith("exit=0") and str(resolve(serving_tag("plate-ocr")).tag) == worse, forced
    finally:
        # The session's store as it was: later tests and servers see only the base OCR.
        set_serving(base)
        for model in versions("plate-ocr"):
            if str(model.tag) not in stored_before:
                bentoml.models.delete(model.tag)


def held_out_crops(folder: Path) -> Path:
    """Plate crops the fine-tune never saw: both real crops as they ship, and at other sizes
    than the street photos' (the corrections are crops of KRW301 cut from those photos)."""
    folder.mkdir()
    rows = []
    for name, plate in (("plate_ad799kb", "AD799KB"), ("plate_krw301", "KRW301")):
        image = Image.open(asset(name)).convert("RGB")
        for scale in (1.0, 0.8, 1.5):
            resized = image.resize((round(image.width * scale), round(image.height * scale)))
            resized.save(folder / f"{name}_{scale}.png")
            rows.append((f"{name}_{scale}.png", plate))
    with open(folder / "labels.csv", "w", newline="") as labels:
        csv.writer(labels).writerows([("filename", "plate"), *rows])
    return folder


def scrambled(model: Path, out: Path) -> Path:
    """The same OCR network with noise as large as its weights added: a valid, worse model."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model))
    rng = np.random.default_rng(0)
    # PP-OCR's ONNX keeps most weights in Constant nodes, the rest as initializers.
    constants = [
        a.t
        for node in graph.graph.node
        if node.op_type == "Constant"
        for a in node.attribute
        if a.name == "value"
    ]
    tensors = [*graph.graph.initializer, *constants]
    changed = 0
    for tensor in tensors:
        weights = numpy_helper.to_array(tensor)
        if weights.dtype == np.float32 and weights.size > 64:
            noisy = weights + rng.normal(0, float(weights.std()) or 1.0, weights.shape).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(noisy, tensor.name))
            changed += 1
    assert changed, "no weights found to scramble"
    onnx.save(graph, str(out))
    return out


def exact_rates(verdict: str) -> tuple[float, float]:
    """The "exact" column (the first %) of promote's table: the serving row's, the candidate's."""
    rates = {}
    for label in ("serving", "candidate"):
        row = next(line for line in verdict.splitlines() if re.match(rf"\W*{label}\b.*%", line))
        rates[label] = float(re.findall(r"([0-9.]+)%", row)[0])
    return rates["serving"], rates["candidate"]
