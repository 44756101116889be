"""The review store on both databases it supports, for real: SQLite in a folder (the default)
and a PostgreSQL server started from Debian's package; and a plate reader whose database is
down still reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from services.core.database import MIGRATIONS, database_engine
from services.plate_reader.review_store import Decision, ReviewStore
from services.plate_reader.types import BoundingBox, Candidate, PlateReading
from tests.postgres import postgres_server
from tests.scenes import plate_on_street
from tests.servers import serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def unsure(plate: str) -> PlateReading:
    return PlateReading(
        plate, 0.41, 0.9, BoundingBox(20, 20, 120, 50), (Candidate(plate, 0.8, None, 0.41),), review=True
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_store_records_lists_decides_and_purges(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'reviews.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = database_engine(url)
    assert engine.dialect.name == backend
    store = ReviewStore(engine, tmp_path / "images", audit_share=0.0)
    photo = np.full((200, 300, 3), 128, dtype=np.uint8)
    ids = store.record(
        photo,
        [unsure("AB12CDE"), unsure("XY34ZZZ")],
        camera_id=f"{backend}-cam",
        models=("plate-detector:a", "plate-ocr:b"),
    )
    items, cursor = store.list(status="pending", camera_id=f"{backend}-cam", limit=1)
    assert [i.id for i in items] == ids[:1] and cursor is not None
    rest, end = store.list(status="pending", camera_id=f"{backend}-cam", cursor=cursor)
    assert [i.id for i in rest] == ids[1:] and end is None
    assert store.decide(ids[0], Decision(plate="AB12CDE")).decision == "confirmed"
    assert store.decide(ids[1], Decision(skip=True)).status == "pending"
    assert store.stats()["decisions"]["confirmed"] >= 1
    assert all(store.image(store.get(i), "crop").exists() for i in ids)
    assert store.purge(0) >= 2 and store.get(ids[0]) is None
    assert not list((tmp_path / "images").rglob("*.jpg"))


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    # A second engine on the same database (another replica) finds the schema made already.
    database_engine(postgres_url)
    other = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    from services.core.database import upgrade

    upgrade(other)
    with other.connect() as connection:
        head = sorted(p.name for p in (MIGRATIONS / "versions").glob("0*.py"))[-1][:4]
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head


def test_a_plate_reader_on_postgresql_records_its_reviews(
    postgres_url: str, tmp_path: Path, plate_models: dict[str, Path]
) -> None:
    env = {"MODELPORT_DATABASE_URL": postgres_url, "MODELPORT_REVIEW_IMAGES_DIR": str(tmp_path / "shared")}
    with serve("services.plate_reader.service:PlateReader", env=env, log_path=tmp_path / "server.log") as url:
        hard = plate_on_street(plate_asset="plate_krw301")
        response = httpx.post(
            f"{url}/v1/plate-reader", files={"upload": hard.jpeg}, data={"camera_id": "pg-gate"}, timeout=30
        )
        [plate] = response.json()["results"]
    store = ReviewStore(database_engine(postgres_url), tmp_path / "shared")
    [item] = store.list(camera_id="pg-gate")[0]
    assert item.plate == plate["plate"] and store.image(item, "photo").exists()


def test_reading_goes_on_when_the_database_is_down(tmp_path: Path, plate_models: dict[str, Path]) -> None:
    env = {"MODELPORT_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}  # nothing listens
    with serve("services.plate_reader.service:PlateReader", env=env, log_path=tmp_path / "server.log") as url:
        hard = plate_on_street(plate_asset="plate_krw301")
        response = httpx.post(f"{url}/v1/plate-reader", files={"upload": hard.jpeg}, timeout=60)
        assert response.status_code == 200 and response.json()["results"][0]["review"] is True
        assert "modelport_review_record_failures_total 1" in httpx.get(f"{url}/metrics").text
        listing = httpx.get(f"{url}/v1/reviews")
        assert listing.status_code == 404 and "unreachable" in listing.json()["error"]["message"]
