"""Model store imports: checked, idempotent, and clear when something is missing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import bentoml
import pytest

from services.core.model_store import ModelNotFound, import_model, resolve
from services.core.sources import (
    ChecksumMismatch,
    HuggingFaceRepo,
    LocalFile,
    PackageFile,
    UrlFile,
    sha256_of,
)


def test_default_import_records_source_and_checksum(plate_models: dict[str, Path]) -> None:
    model = bentoml.models.get("plate-ocr:latest")
    meta = model.info.metadata
    assert meta["source"] == "package:rapidocr==3.10.0#rapidocr/models/PP-OCRv6_rec_small.onnx"
    assert meta["source_sha256"] == sha256_of(plate_models["plate-ocr"])
    assert meta["kind"] == "plate-ocr"


def test_detector_import_exports_onnx_and_keeps_the_checkpoint(plate_models: dict[str, Path]) -> None:
    import onnxruntime as ort

    model = bentoml.models.get("plate-detector:latest")
    assert (Path(model.path) / "best.pt").is_file()
    session = ort.InferenceSession(str(plate_models["plate-detector"]))
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch: the server batches
    assert model.info.metadata["classes"] == ["License_Plate"]


def test_importing_the_same_file_twice_keeps_one_version(plate_models: dict[str, Path]) -> None:
    before = len(bentoml.models.list("plate-ocr"))
    again = import_model("plate-ocr")
    assert not again.created
    assert len(bentoml.models.list("plate-ocr")) == before


def test_a_file_whose_checksum_differs_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(ChecksumMismatch, match="refusing"):
        import_model("plate-ocr", LocalFile(str(fake), sha256="0" * 64))
    with pytest.raises(ChecksumMismatch):
        PackageFile("safelicensing==1.0.3", "safelicensing/best.pt", sha256="0" * 64).fetch(tmp_path)


def test_a_local_file_with_other_bytes_imports_as_a_new_version(
    plate_models: dict[str, Path], tmp_path: Path
) -> None:
    import onnx

    # Under a name of its own: a new plate-ocr version would be the one later servers load.
    name, original = "ocr-bytes-test", tmp_path / "ocr.onnx"
    original.write_bytes(plate_models["plate-ocr"].read_bytes())
    first = import_model(name, LocalFile(str(original)), kind="plate-ocr")
    assert first.created
    same = tmp_path / "same.onnx"
    same.write_bytes(original.read_bytes())  # same bytes, another path: the same version
    assert not import_model(name, LocalFile(str(same)), kind="plate-ocr").created
    # The same model with one more metadata entry: other bytes (e.g. fine-tuned), a new version.
    model = onnx.load(str(original))
    onnx.helper.set_model_props(model, {"note": "re-exported"})
    changed = tmp_path / "changed.onnx"
    onnx.save(model, str(changed))
    second = import_model(name, LocalFile(str(changed)), kind="plate-ocr")
    assert second.created and second.tag != first.tag
    assert [str(m.tag) for m in bentoml.models.list(name)].count(second.tag) == 1
    assert len(bentoml.models.list(name)) == 2
    assert bentoml.models.get(second.tag).info.metadata["source_sha256"] == sha256_of(changed)


def test_a_file_stored_by_an_older_preparer_is_prepared_again(
    plate_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # E.g. causal-lm entries made before they kept a GGUF: importing again must add one.
    from services.core import model_store as models

    copy = tmp_path / "ocr.onnx"
    copy.write_bytes(plate_models["plate-ocr"].read_bytes())
    first = import_model("ocr-preparer-test", LocalFile(str(copy)), kind="plate-ocr")
    kind = models.KINDS["plate-ocr"]
    monkeypatch.setitem(models.KINDS, "plate-ocr", dataclasses.replace(kind, version=kind.version + 1))
    again = import_model("ocr-preparer-test", LocalFile(str(copy)), kind="plate-ocr")
    assert again.created and again.tag != first.tag
    assert bentoml.models.get(again.tag).info.metadata["prepared_by"] == models.KINDS["plate-ocr"].version
    assert not import_model("ocr-preparer-test", LocalFile(str(copy)), kind="plate-ocr").created


def test_unpinned_package_is_refused() -> None:
    with pytest.raises(ValueError, match="pin the package version"):
        PackageFile("safelicensing", "safelicensing/best.pt")


def test_missing_model_error_says_how_to_import_it() -> None:
    with pytest.raises(ModelNotFound, match="modelport models import plate-detector"):
        resolve("plate-detector:doesnotexist")


def test_cli_lists_and_refuses_bad_checksums(plate_models: dict[str, Path], tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "services.core.cli", "models", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "plate-detector" in listed.stdout and "plate-ocr" in listed.stdout
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"x")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.core.cli",
            "models",
            "import",
            "plate-ocr",
            "--from-path",
            str(bad),
            "--sha256",
            "1" * 64,
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert f"expected {'1' * 64}" in refused.stderr and "refusing" in refused.stderr


@pytest.mark.network
def test_url_source_downloads_and_checks(tmp_path: Path) -> None:
    url = "https://raw.githubusercontent.com/ultralytics/ultralytics/main/ultralytics/assets/bus.jpg"
    path = UrlFile(url).fetch(tmp_path)
    assert path.stat().st_size > 100_000


@pytest.mark.network
def test_hugging_face_source_downloads_a_repo(tmp_path: Path) -> None:
    path = HuggingFaceRepo("openai-community/gpt2", allow_patterns=("config.json",)).fetch(tmp_path)
    assert (path / "config.json").is_file()
