"""The review queue: plate readings a person should check, the photos they came from, and the
decisions people make on them. Rows live in the database (services.core.database), images as
JPEG files in a folder beside it (a shared path when several replicas serve).

    store = ReviewStore.from_settings(ReviewSettings.from_env())
    ids = store.record(photo, readings, camera_id="gate-1", models=("plate-detector:a", "plate-ocr:b"))
    items, cursor = store.list(status="pending", limit=20)
    store.decide(ids[0], Decision(plate="AB12CDE"))

A photo with any reading flagged `review` is recorded with all its readings, and so is a
share (`audit_share`) of the other photos, so that someone keeps checking what the reader
accepts on its own. Each item's `reason` says which it was (review or audit).
"""

from __future__ import annotations

import base64
import builtins
import io
import json
import os
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa
from PIL import Image

from services.core.database import database_engine
from services.core.env_settings import read_env
from services.core.local_db import data_dir
from services.plate_reader.crops import crop_plate
from services.plate_reader.types import PlateReading

Status = Literal["pending", "done"]
DecisionKind = Literal["corrected", "confirmed", "not_a_plate", "skipped"]

reviews = sa.Table(  # the schema itself is made by migrations/versions/0001_reviews.py
    "reviews",
    sa.MetaData(),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.String(16)),
    sa.Column("status", sa.String(16)),
    sa.Column("camera_id", sa.String(200)),
    sa.Column("plate", sa.String(32)),
    sa.Column("score", sa.Float),
    sa.Column("dscore", sa.Float),
    sa.Column("box", sa.JSON),
    sa.Column("candidates", sa.JSON),
    sa.Column("detector_model", sa.String(200)),
    sa.Column("ocr_model", sa.String(200)),
    sa.Column("photo_path", sa.String(500)),
    sa.Column("crop_path", sa.String(500)),
    sa.Column("decision", sa.String(16)),
    sa.Column("corrected_plate", sa.String(32)),
    sa.Column("corrected_box", sa.JSON),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("reviewer", sa.String(64)),
)


@dataclass(frozen=True)
class ReviewSettings:
    """Read from `MODELPORT_REVIEW_<FIELD>`, e.g. `MODELPORT_REVIEW_STORE=off`."""

    store: str = "on"  # "off": record nothing
    audit_share: float = 0.02  # share of auto-accepted readings recorded for audit
    retention_days: int = 90  # `modelport reviews purge` deletes older items (plates are personal data)
    images_dir: str = ""  # default: review-images/ in the data folder (MODELPORT_DATA_DIR)
    database_url: str = ""  # default: MODELPORT_DATABASE_URL, else SQLite in the data folder
    # Photos waiting to be written after their answer (review_recorder.py); a full queue drops
    # (and counts) the next. 32 photos of 1280x720: 88 MB, a few seconds of writing.
    queue_size: int = 32
    # A photo identical to one recorded from the same camera this recently is not recorded again.
    repeat_window_s: float = 300.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ReviewSettings:
        settings = cls(**read_env(cls, "MODELPORT_REVIEW_", environ))
        if settings.store not in ("on", "off"):
            raise ValueError(f"MODELPORT_REVIEW_STORE={settings.store!r}: use on or off")
        return settings

    @property
    def enabled(self) -> bool:
        return self.store == "on"


@dataclass(frozen=True)
class Decision:
    """What a reviewer said: the right text (equal to the read: confirmed), not a plate, or skip."""

    plate: str | None = None
    not_a_plate: bool = False
    skip: bool = False
    box: dict[str, int] | None = None

    @property
    def kind(self) -> DecisionKind:
        return "not_a_plate" if self.not_a_plate else "skipped" if self.skip else "corrected"


@dataclass(frozen=True)
class ReviewItem:
    id: str
    created_at: datetime
    reason: str
    status: str
    camera_id: str | None
    plate: str
    score: float
    dscore: float
    box: dict[str, int]
    candidates: list[dict[str, Any]]
    detector_model: str
    ocr_model: str
    photo_path: str
    crop_path: str
    decision: str | None = None
    corrected_plate: str | None = None
    corrected_box: dict[str, int] | None = None
    decided_at: datetime | None = None
    reviewer: str | None = None

    def to_json(self) -> dict[str, Any]:
        body = {k: v for k, v in self.__dict__.items() if k not in ("photo_path", "crop_path")}
        for key in ("created_at", "decided_at"):
            body[key] = body[key].isoformat() if body[key] else None
        return body


@dataclass
class ReviewStore:
    engine: sa.Engine
    images_dir: Path
    audit_share: float = 0.02
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_settings(cls, settings: ReviewSettings) -> ReviewStore:
        images = (
            Path(settings.images_dir)
            if settings.images_dir
            else data_dir(os.environ.get("MODELPORT_DATA_DIR", "")) / "review-images"
        )
        return cls(database_engine(settings.database_url), images, settings.audit_share)

    def to_record(self, readings: Sequence[PlateReading]) -> list[PlateReading]:
        """A photo's readings worth a person's look: all of them when any is flagged or the
        photo is drawn for audit (so every box of a recorded photo is known, as training a
        detector on it needs), else none."""
        if any(r.review for r in readings) or (readings and self.rng.random() < self.audit_share):
            return list(readings)
        return []

    def record(
        self,
        photo: np.ndarray | None,
        readings: Sequence[PlateReading],
        *,
        camera_id: str | None,
        models: tuple[str, str],
    ) -> list[str]:
        """Store ``readings`` (all from ``photo``) with the photo and each crop; their ids.
        Images are written first, then the rows in one transaction: a row never points at a
        missing file. ``photo`` None (MODELPORT_PLATE_STORE_IMAGES=off): text only, no image paths."""
        if not readings:
            return []
        now = datetime.now(UTC)
        folder = now.strftime("%Y-%m-%d")
        photo_path = ""
        if photo is not None:
            (self.images_dir / folder).mkdir(parents=True, exist_ok=True)
            photo_path = f"{folder}/{uuid.uuid4().hex}-photo.jpg"
            _save_jpeg(photo, self.images_dir / photo_path)
        rows = []
        for index, reading in enumerate(readings):
            item_id = _new_id(now, index)
            box = reading.box
            crop_path = ""
            if photo is not None:
                crop_path = f"{folder}/{item_id}-crop.jpg"
                _save_jpeg(
                    crop_plate(photo, (box.xmin, box.ymin, box.xmax, box.ymax)), self.images_dir / crop_path
                )
            rows.append(
                dict(
                    id=item_id,
                    created_at=now,
                    reason="review" if reading.review else "audit",
                    status="pending",
                    camera_id=camera_id,
                    plate=reading.plate,
                    score=reading.score,
                    dscore=reading.dscore,
                    box=_box(box),
                    candidates=[
                        {"plate": c.plate, "score": round(c.confidence, 4)} for c in reading.candidates
                    ],
                    detector_model=models[0],
                    ocr_model=models[1],
                    photo_path=photo_path,
                    crop_path=crop_path,
                )
            )
        with self.engine.begin() as connection:
            connection.execute(reviews.insert(), rows)
        return [str(row["id"]) for row in rows]

    def list(
        self,
        *,
        status: Status | None = None,
        camera_id: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[list[ReviewItem], str | None]:
        """Items oldest first, and the cursor for the next page (None: this was the last)."""
        query = sa.select(reviews).order_by(reviews.c.created_at, reviews.c.id).limit(limit + 1)
        if status:
            query = query.where(reviews.c.status == status)
        if camera_id:
            query = query.where(reviews.c.camera_id == camera_id)
        if cursor:
            after_time, after_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    reviews.c.created_at > after_time,
                    sa.and_(reviews.c.created_at == after_time, reviews.c.id > after_id),
                )
            )
        with self.engine.connect() as connection:
            items = [_item(row) for row in connection.execute(query)]
        if len(items) <= limit:
            return items, None
        last = items[limit - 1]
        return items[:limit], _encode_cursor(last.created_at, last.id)

    def get(self, item_id: str) -> ReviewItem | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(reviews).where(reviews.c.id == item_id)).first()
        return _item(row) if row else None

    def image(self, item: ReviewItem, which: Literal["photo", "crop"]) -> Path:
        return self.images_dir / (item.photo_path if which == "photo" else item.crop_path)

    def decide(self, item_id: str, decision: Decision, *, reviewer: str | None = None) -> ReviewItem | None:
        """Record a decision (a later one on the same item replaces it); None: no such item."""
        item = self.get(item_id)
        if item is None:
            return None
        kind = decision.kind
        if kind == "corrected" and decision.plate == item.plate:
            kind = "confirmed"
        # A skipped item stays pending: it is left for someone else, not decided.
        values = dict(
            status="pending" if kind == "skipped" else "done",
            decision=kind,
            corrected_plate=decision.plate if kind in ("corrected", "confirmed") else None,
            corrected_box=decision.box,
            decided_at=datetime.now(UTC),
            reviewer=reviewer,
        )
        with self.engine.begin() as connection:
            connection.execute(reviews.update().where(reviews.c.id == item_id).values(**values))
        return self.get(item_id)

    def stats(self) -> dict[str, Any]:
        """Pending count, the oldest pending item's age in seconds, decisions by kind."""
        with self.engine.connect() as connection:
            pending, oldest = connection.execute(
                sa.select(sa.func.count(), sa.func.min(reviews.c.created_at)).where(
                    reviews.c.status == "pending"
                )
            ).one()
            decided: dict[str, int] = dict(
                connection.execute(
                    sa.select(reviews.c.decision, sa.func.count())
                    .where(reviews.c.decision.is_not(None))
                    .group_by(reviews.c.decision)
                ).all()
            )
        oldest = _utc(oldest)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        return {"pending": pending, "oldest_pending_seconds": age, "decisions": decided}

    def purge(self, older_than_days: int) -> int:
        """Delete items (and their images) recorded more than ``older_than_days`` days ago."""
        cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
        with self.engine.begin() as connection:
            old = connection.execute(
                sa.select(reviews.c.id, reviews.c.photo_path, reviews.c.crop_path).where(
                    reviews.c.created_at < cutoff
                )
            ).all()
            connection.execute(reviews.delete().where(reviews.c.created_at < cutoff))
            # A photo is shared by the plates read in it: keep it while any newer row uses it.
            kept = {p for (p,) in connection.execute(sa.select(reviews.c.photo_path))}
        for _, photo, crop in old:
            (self.images_dir / crop).unlink(missing_ok=True)
            if photo not in kept:
                (self.images_dir / photo).unlink(missing_ok=True)
        return len(old)

    def decided(
        self, *, camera_id: str | None = None, since: datetime | None = None
    ) -> builtins.list[ReviewItem]:
        """Every item with a decision other than skipped, oldest first: the training data (of
        one camera, and recorded at or after `since`, when given)."""
        query = (
            sa.select(reviews)
            .where(reviews.c.decision.in_(("corrected", "confirmed", "not_a_plate")))
            .order_by(reviews.c.created_at, reviews.c.id)
        )
        if camera_id:
            query = query.where(reviews.c.camera_id == camera_id)
        if since is not None:
            query = query.where(reviews.c.created_at >= since)
        with self.engine.connect() as connection:
            return [_item(row) for row in connection.execute(query)]


def _new_id(now: datetime, index: int) -> str:
    """32 hex characters that sort by time, then by plate within a photo: ties on created_at
    keep the order plates were read in, on every database."""
    return f"{int(now.timestamp() * 1_000_000):014x}{index:02x}{uuid.uuid4().hex[:16]}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a cursor this store did not make."""
    try:
        created, item_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(item_id)
    except Exception as exc:
        raise ValueError("not a cursor from a previous page") from exc


def _encode_cursor(created_at: datetime, item_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), item_id]).encode()).decode()


def _item(row: Any) -> ReviewItem:
    values = dict(row._mapping)
    for key in ("created_at", "decided_at"):
        values[key] = _utc(values[key])
    return ReviewItem(**values)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for what was stored as UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _box(box: Any) -> dict[str, int]:
    return {"xmin": box.xmin, "ymin": box.ymin, "xmax": box.xmax, "ymax": box.ymax}


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
