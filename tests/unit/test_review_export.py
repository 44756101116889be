"""`modelport reviews export` on a real SQLite review store with real image files."""

from __future__ import annotations

import csv
import json
from datetime import UTC
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from services.core.cli import main
from services.core.database import database_engine, database_url
from services.plate_reader.review_store import Decision, ReviewStore
from services.plate_reader.types import BoundingBox, Candidate, PlateReading


def reading(plate: str, x: int) -> PlateReading:
    return PlateReading(
        plate, 0.5, 0.9, BoundingBox(x, 40, x + 100, 70), (Candidate(plate, 0.9, "uk", 0.5),), True
    )


def test_export_writes_ocr_detector_and_label_studio_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "data"))
    store = ReviewStore(database_engine(database_url()), tmp_path / "data" / "review-images")
    photos = [np.full((200, 400, 3), 60 + 20 * i, dtype=np.uint8) for i in range(6)]
    ids = [
        store.record(
            photo,
            [reading("AB12CDE", 20), reading("STOP", 200)],
            camera_id="c",
            models=("plate-detector:a", "plate-ocr:b"),
        )
        for photo in photos
    ]
    for plate_id, sign_id in ids[:5]:
        store.decide(plate_id, Decision(plate="AB12CDF"))
        store.decide(sign_id, Decision(not_a_plate=True))
    store.decide(ids[5][0], Decision(skip=True))  # skipped: not training data

    result = CliRunner().invoke(main, ["reviews", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out" / "ocr" / "labels.csv") as labels:
        rows = list(csv.DictReader(labels))
    assert [r["plate"] for r in rows] == ["AB12CDF"] * 5  # corrections only; signs have no text
    assert all((tmp_path / "out" / "ocr" / r["filename"]).exists() for r in rows)
    splits_by_photo: dict[str, set[str]] = {}
    for r in rows:
        splits_by_photo.setdefault(r["photo"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_by_photo.values())  # no photo in both splits
    labels_txt = list((tmp_path / "out" / "detector" / "dataset" / "labels").rglob("*.txt"))
    assert len(labels_txt) == 5 and all(
        len(p.read_text().splitlines()) == 1 for p in labels_txt
    )  # sign left out
    tasks = json.loads((tmp_path / "out" / "label-studio.json").read_text())
    assert len(tasks) == 12 and tasks[0]["predictions"][0]["result"][1]["value"]["text"] == ["AB12CDE"]


def test_purge_deletes_old_items(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "data"))
    store = ReviewStore(database_engine(database_url()), tmp_path / "data" / "review-images")
    store.record(
        np.zeros((100, 200, 3), np.uint8), [reading("AB12CDE", 10)], camera_id=None, models=("d", "o")
    )
    kept = CliRunner().invoke(main, ["reviews", "purge", "--days", "1"])
    assert "deleted 0" in kept.output
    gone = CliRunner().invoke(main, ["reviews", "purge", "--days", "0"])
    assert "deleted 1" in gone.output and store.list()[0] == []


def test_export_of_one_camera_since_a_time(tmp_path: Path, monkeypatch) -> None:
    """The drift runbook's export: --camera-id and --since keep that camera's recent items only."""
    from datetime import datetime, timedelta

    from services.plate_reader.review_store import reviews

    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "data"))
    store = ReviewStore(database_engine(database_url()), tmp_path / "data" / "review-images")
    recorded = {}
    for i, (camera, days_ago) in enumerate([("gate-1", 10), ("gate-1", 1), ("gate-2", 1), ("gate-1", 0)]):
        [item_id] = store.record(
            np.full((200, 400, 3), 40 * i, np.uint8),
            [reading("AB12CDE", 20)],
            camera_id=camera,
            models=("d", "o"),
        )
        store.decide(item_id, Decision(plate=f"AB12CD{i}"))
        with store.engine.begin() as connection:
            connection.execute(
                reviews.update()
                .where(reviews.c.id == item_id)
                .values(created_at=datetime.now(UTC) - timedelta(days=days_ago, minutes=1))
            )
        recorded[item_id] = f"AB12CD{i}"

    def exported(*options: str) -> list[str]:
        out = tmp_path / "-".join(options)
        result = CliRunner().invoke(main, ["reviews", "export", str(out), *options])
        assert result.exit_code == 0, result.output
        with open(out / "ocr" / "labels.csv") as labels:
            plates = sorted(row["plate"] for row in csv.DictReader(labels))
        assert len(json.loads((out / "label-studio.json").read_text())) == len(plates)
        return plates

    assert exported() == ["AB12CD0", "AB12CD1", "AB12CD2", "AB12CD3"]
    assert exported("--camera-id", "gate-1") == ["AB12CD0", "AB12CD1", "AB12CD3"]
    assert exported("--camera-id", "gate-1", "--since", "7d") == ["AB12CD1", "AB12CD3"]
    assert exported("--since", "36h") == ["AB12CD1", "AB12CD2", "AB12CD3"]
    day = (datetime.now(UTC) - timedelta(days=5)).date().isoformat()
    assert exported("--camera-id", "gate-1", "--since", day) == ["AB12CD1", "AB12CD3"]
    bad = CliRunner().invoke(main, ["reviews", "export", str(tmp_path / "x"), "--since", "last week"])
    assert bad.exit_code == 2 and "give 7d, 36h or a date" in bad.output
