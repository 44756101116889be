"""Plate-level Prometheus metrics, served on /metrics next to BentoML's own.

Counts carry the request's `camera` (its camera_id; "" when none), so the alert rules in
deploy/monitoring/ can compare each camera's review rate and no-plate share with its own
7-day baseline: a dirty lens or a re-aimed camera shows on that camera alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import bentoml

from services.core.bounded_labels import BoundedLabels
from services.plate_reader.types import PlateReading

# camera_id is client text: after this many distinct ones a process counts the rest as
# "other", so a client sending a new id per request cannot grow /metrics without bound.
MAX_CAMERA_LABELS = 200

PLATES_READ = bentoml.metrics.Counter(
    name="modelport_plates_read", documentation="Plates read (one per detected box)", labelnames=["camera"]
)
READING_SCORE = bentoml.metrics.Histogram(
    name="modelport_plate_reading_score",
    documentation="Confidence of each plate reading",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0),
)
REVIEWS = bentoml.metrics.Counter(
    name="modelport_plate_reviews", documentation="Readings flagged for human review", labelnames=["camera"]
)
IMAGES = bentoml.metrics.Counter(
    name="modelport_plate_images", documentation="Images processed", labelnames=["camera"]
)
IMAGES_WITHOUT_PLATE = bentoml.metrics.Counter(
    name="modelport_plate_images_without_plate",
    documentation="Images in which no plate was found",
    labelnames=["camera"],
)


def _start_camera_at_zero(camera: str) -> None:
    # Every count of a new camera starts at 0, so its review share has a value (and rate()
    # sees the first review) from its first photo.
    for counter in (PLATES_READ, REVIEWS, IMAGES, IMAGES_WITHOUT_PLATE):
        counter.labels(camera=camera)


_cameras = BoundedLabels(MAX_CAMERA_LABELS, _start_camera_at_zero)


def camera_label(camera_id: str | None) -> str:
    return _cameras(camera_id or "")


def observe(readings: Sequence[PlateReading], camera_id: str | None = None) -> None:
    camera = camera_label(camera_id)
    IMAGES.labels(camera=camera).inc()
    if not readings:
        IMAGES_WITHOUT_PLATE.labels(camera=camera).inc()
    for reading in readings:
        PLATES_READ.labels(camera=camera).inc()
        READING_SCORE.observe(reading.score)
        if reading.review:
            REVIEWS.labels(camera=camera).inc()
