"""modelport's own small database: one SQLite file in the data folder, shared by every worker
of every service on the machine. Each feature owns its tables (per-key call counts today,
`usage.py`; the review queue can add its own) and talks to it through `LocalDatabase.run`.

    db = LocalDatabase.open()                      # MODELPORT_DATA_DIR, else the user's data folder
    db.run("CREATE TABLE IF NOT EXISTS ...")
    rows = db.run("SELECT ... WHERE key_id = ?", (key_id,))
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FILENAME = "modelport.sqlite3"


def data_dir(configured: str = "") -> Path:
    """Where modelport keeps its own data: `configured` (MODELPORT_DATA_DIR), else the
    platform's user data folder (platformdirs when installed; XDG's default otherwise)."""
    if configured:
        return Path(configured).expanduser()
    try:
        import platformdirs
    except ImportError:
        return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "modelport"
    return Path(platformdirs.user_data_dir("modelport", appauthor=False))


class LocalDatabase:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per process, used from the event loop and worker threads under a lock.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=5.0)  # waits this long for another worker's write
        # WAL: readers never block the writer, and NORMAL syncs at checkpoints, not at every
        # commit: an UPSERT then costs tens of microseconds, cheap enough for the event loop.
        # A power cut can lose the last few counts; a crash of the process loses none.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, configured_dir: str = "") -> LocalDatabase:
        return cls(data_dir(configured_dir) / FILENAME)

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement, committed on return; its rows."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
