"""Where modelport keeps its own data on this machine: the local database (SQLite, when no
MODELPORT_DATABASE_URL names a shared one; see database.py) and the review queue's photos.

    data_dir()               # MODELPORT_DATA_DIR, else the user's data folder
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir(configured: str = "") -> Path:
    """`configured` (MODELPORT_DATA_DIR), else the platform's user data folder (platformdirs
    when installed; XDG's default otherwise, ~/.local/share/modelport)."""
    if configured:
        return Path(configured).expanduser()
    try:
        import platformdirs
    except ImportError:
        return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "modelport"
    return Path(platformdirs.user_data_dir("modelport", appauthor=False))
