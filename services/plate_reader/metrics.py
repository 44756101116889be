"""Plate-level Prometheus metrics, served on /metrics next to BentoML's own."""

from __future__ import annotations

from collections.abc import Sequence

import bentoml

from services.plate_reader.types import PlateReading

PLATES_READ = bentoml.metrics.Counter(
    name="modelport_plates_read", documentation="Plates read (one per detected box)")
READING_SCORE = bentoml.metrics.Histogram(
    name="modelport_plate_reading_score", documentation="Confidence of each plate reading",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0))
REVIEWS = bentoml.metrics.Counter(
    name="modelport_plate_reviews", documentation="Readings flagged for human review")
IMAGES = bentoml.metrics.Counter(
    name="modelport_plate_images", documentation="Images processed")


def observe(readings: Sequence[PlateReading]) -> None:
    IMAGES.inc()
    for reading in readings:
        PLATES_READ.inc()
        READING_SCORE.observe(reading.score)
        if reading.review:
            REVIEWS.inc()
