"""The database behind the review queue: SQLite in the data folder by default (nothing to
install), PostgreSQL when several replicas share one (`MODELPORT_DATABASE_URL`). Tables are
created and changed only by the Alembic migrations in `migrations/`, run on first use.

    engine = database_engine()                     # MODELPORT_DATABASE_URL, else SQLite in the data folder
    with engine.begin() as connection: ...
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from services.core.local_db import data_dir

MIGRATIONS = Path(__file__).with_name("migrations")
_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def database_url(configured: str = "") -> str:
    """`configured`, else MODELPORT_DATABASE_URL, else SQLite in the data folder."""
    url = configured or os.environ.get("MODELPORT_DATABASE_URL", "")
    if url.startswith("postgresql://"):  # the usual spelling; SQLAlchemy needs the driver named
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url:
        return url
    return f"sqlite:///{data_dir(os.environ.get('MODELPORT_DATA_DIR', '')) / 'modelport.sqlite3'}"


def database_engine(url: str = "") -> sa.Engine:
    """One engine per URL and process, migrated to the newest schema on first use."""
    url = database_url(url)
    with _lock:
        if url not in _engines:
            engine = sa.create_engine(url, pool_pre_ping=True)
            if engine.dialect.name == "sqlite":
                if engine.url.database:
                    Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
                event.listen(engine, "connect", _sqlite_pragmas)
            upgrade(engine)
            _engines[url] = engine
        return _engines[url]


def upgrade(engine: sa.Engine) -> None:
    """Run the migrations not yet applied. On PostgreSQL an advisory lock makes replicas that
    start together take turns; SQLite's own file lock does the same."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7355608)"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_pragmas(connection: sqlite3.Connection, _record: object) -> None:
    # WAL: readers never wait for the writer; several workers share the file. busy_timeout:
    # a writer waits for another worker's write instead of failing at once.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
