"""A real PostgreSQL server for tests, from Debian's `postgresql` package: initdb into a
temporary folder, started on a free port, stopped after. Skips, saying why, where there is none."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ci_tools import missing_tool
from tests.servers import free_port


def _bin_dir() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running PostgreSQL server; yields its URL (user modelport, trust auth, loopback only)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        missing_tool("needs PostgreSQL's server binaries: apt-get install postgresql")
    # PostgreSQL refuses to run as root: run it as the package's own `postgres` user then.
    as_user: list[str] = []
    if os.getuid() == 0:
        if shutil.which("runuser") is None:
            missing_tool("running as root without runuser: cannot start PostgreSQL as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
    folder.chmod(0o755)
    data = folder / "data"
    data.mkdir()
    if as_user:
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "modelport", "--auth=trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(data / "server.log"),
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://modelport@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)
