"""`modelport serve --monitoring`'s Prometheus: its config loads deploy/monitoring/'s rules and
scrapes each service as the job the rules group by; without Prometheus installed it says so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from services.core.cli import main
from services.core.monitoring import config, prometheus_member
from tests.unit.test_monitoring_rules import promtool

REPO = Path(__file__).resolve().parents[2]


def test_the_config_scrapes_each_service_with_every_rule_file(tmp_path: Path) -> None:
    written = config({"plate-reader": 3000, "autocomplete": 3001})
    assert [(job["job_name"], job["static_configs"][0]["targets"]) for job in written["scrape_configs"]] == [
        ("plate-reader", ["127.0.0.1:3000"]),
        ("autocomplete", ["127.0.0.1:3001"]),
    ]
    assert sorted(Path(p).name for p in written["rule_files"]) == [
        "autocomplete.rules.yml",
        "plate-reader.rules.yml",
        "serving.rules.yml",
    ]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(written))
    checked = subprocess.run(
        [promtool(), "check", "config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 3 rule files found" in checked.stdout and checked.stdout.count("rules found") == 3


def test_compose_runs_prometheus_with_the_same_rules() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert "./monitoring/rules:/etc/prometheus/rules:ro" in prometheus["volumes"]
    scrape = yaml.safe_load((REPO / "deploy" / "monitoring" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]}
    assert jobs == {"plate-reader": ["plate-reader:3000"], "autocomplete": ["autocomplete:3000"]}
    assert set(jobs) <= set(compose["services"])


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_the_member_runs_prometheus_on_its_port(tmp_path: Path) -> None:
    member = prometheus_member({"plate-reader": 3000}, port=9191, home=tmp_path)
    assert member.ready_path == "/-/ready" and "--web.listen-address=127.0.0.1:9191" in member.command
    assert (tmp_path / "prometheus.yml").exists()


def test_monitoring_without_prometheus_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(main, ["serve", "--only", "plate-reader", "--monitoring"])
    assert result.exit_code == 1
    assert (
        "needs Prometheus, which is not installed" in result.output
        and "apt-get install prometheus" in result.output
    )
