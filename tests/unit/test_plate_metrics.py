"""The plate reader's metrics the alert rules read: counts per camera, bounded; the oldest
pending review as a time, so its age keeps growing between writes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from services.core.bounded_labels import OTHER, BoundedLabels
from services.core.database import database_engine, database_url
from services.plate_reader import metrics
from services.plate_reader.review_store import ReviewStore, reviews
from services.plate_reader.types import BoundingBox, Candidate, PlateReading


def test_camera_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_cameras", BoundedLabels(metrics.MAX_CAMERA_LABELS))
    labels = {metrics.camera_label(f"cam-{i}") for i in range(metrics.MAX_CAMERA_LABELS + 50)}
    assert len(labels) == metrics.MAX_CAMERA_LABELS + 1 and OTHER in labels
    assert metrics.camera_label("cam-3") == "cam-3"  # a camera seen before keeps its label


def test_no_plate_and_reviews_are_counted_per_camera() -> None:
    before = {c: metrics.IMAGES_WITHOUT_PLATE.labels(camera=c)._value.get() for c in ("gate-a", "gate-b")}
    flagged = PlateReading(
        "AB12CDE", 0.5, 0.9, BoundingBox(1, 1, 50, 20), (Candidate("AB12CDE", 0.5, "uk", 0.5),), True
    )
    metrics.observe([], "gate-a")
    metrics.observe([flagged], "gate-b")
    assert metrics.IMAGES_WITHOUT_PLATE.labels(camera="gate-a")._value.get() == before["gate-a"] + 1
    assert metrics.IMAGES_WITHOUT_PLATE.labels(camera="gate-b")._value.get() == before["gate-b"]
    assert metrics.REVIEWS.labels(camera="gate-b")._value.get() >= 1
    assert metrics.REVIEWS.labels(camera="gate-a")._value.get() == 0  # exported at 0 from the first photo


def test_the_oldest_pending_review_ages_without_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.plate_reader.review_api import OLDEST_PENDING_SINCE, refresh_gauges

    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path))
    store = ReviewStore(database_engine(database_url()), tmp_path / "review-images")
    reading = PlateReading(
        "AB12CDE", 0.5, 0.9, BoundingBox(1, 1, 50, 20), (Candidate("AB12CDE", 0.5, "uk", 0.5),), True
    )
    [item] = store.record(np.zeros((40, 80, 3), np.uint8), [reading], camera_id="gate-1", models=("d", "o"))
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with store.engine.begin() as connection:
        connection.execute(reviews.update().where(reviews.c.id == item).values(created_at=an_hour_ago))
    refresh_gauges(store)  # the last write; nothing refreshes the gauge after it
    first_age = time.time() - OLDEST_PENDING_SINCE._value.get()
    time.sleep(1.1)
    second_age = time.time() - OLDEST_PENDING_SINCE._value.get()  # what the alert rule computes
    assert 3590 < first_age < 3700 and second_age >= first_age + 1
