"""The human loop end to end, in CI time: a real plate reader reads unsure plates, a person
corrects them through the review API, the corrections are exported, the OCR is fine-tuned on
them (2 steps: the path, not the accuracy) and the new version is promoted only by evaluation."""

from __future__ import annotations

import csv
from pathlib import Path

import bentoml
import httpx
import pytest
from click.testing import CliRunner

from services.core.cli import main
from services.core.model_store import resolve, serving_tag, set_serving, versions
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
        response = httpx.post(f"{plate_server}/v1/plate-reader", files={"upload": scene.jpeg},
                              data={"camera_id": "loop"}, timeout=30)
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
    base = str(resolve(serving_tag("plate-ocr")).tag)
    stored_before = {str(m.tag) for m in versions("plate-ocr")}
    try:
        # 4. The OCR fine-tuned on them: a new, checked plate-ocr version in the store.
        tuned = run("finetune", "ocr", str(out / "ocr"), "--max-steps", "2", "--batch-size", "4")
        assert tuned.startswith("exit=0"), tuned
        [new_tag] = {str(m.tag) for m in versions("plate-ocr")} - stored_before
        # 5. Promoted only if the evaluation says it is not worse; --force overrides.
        verdict = run("models", "promote", new_tag, "--eval", str(out / "ocr"), "--crops")
        assert "serving" in verdict and "candidate" in verdict  # both measured, side by side
        if verdict.startswith("exit=0"):
            assert f"serving {new_tag}" in verdict
        else:
            assert "measures worse" in verdict and "not promoted" in verdict
            assert run("models", "promote", new_tag, "--eval", str(out / "ocr"), "--crops", "--force").startswith("exit=0")
        assert str(resolve(serving_tag("plate-ocr")).tag) == new_tag
    finally:
        # The session's store as it was: later tests and servers see only the base OCR.
        set_serving(base)
        for model in versions("plate-ocr"):
            if str(model.tag) not in stored_before:
                bentoml.models.delete(model.tag)
