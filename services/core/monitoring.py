"""Prometheus beside the local stack, with deploy/monitoring/'s rules, scraping the services.

    modelport serve --monitoring     # + Prometheus on :9090 (alerts at /alerts)

Prometheus is a program, not a Python package: Debian's `prometheus` (or a release from
prometheus.io) on PATH. Its config is written here for the ports in use; its data stays in
the modelport data folder, so the 7-day baselines of the drift alerts survive restarts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from services.core.local_db import data_dir
from services.core.local_stack import REPO, Member

RULES = REPO / "deploy" / "monitoring" / "rules"
INSTALL_HINT = "Debian/Ubuntu: apt-get install prometheus; elsewhere: https://prometheus.io/download"


class PrometheusMissing(RuntimeError):
    pass


def config(targets: dict[str, int], *, scrape_interval_s: int = 15) -> dict:
    """Prometheus's configuration: one job per service (the alert rules group by `job`)."""
    return {
        "global": {
            "scrape_interval": f"{scrape_interval_s}s",
            "evaluation_interval": f"{scrape_interval_s}s",
        },
        "rule_files": [str(path) for path in sorted(RULES.glob("*.yml"))],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }


def prometheus_member(targets: dict[str, int], *, port: int = 9090, home: Path | None = None) -> Member:
    """The `prometheus` process for the stack; PrometheusMissing when it is not installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusMissing(f"--monitoring needs Prometheus, which is not installed ({INSTALL_HINT})")
    home = home or data_dir(os.environ.get("MODELPORT_DATA_DIR", "")) / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    config_file = home / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config(targets), sort_keys=False))
    return Member(
        "prometheus",
        port,
        (
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ),
        "/-/ready",
    )
