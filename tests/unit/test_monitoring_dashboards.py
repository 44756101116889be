"""The Grafana dashboards are generated from deploy/monitoring/dashboards.py (grafanalib), and
every query in them and in the alert rules reads a metric that exists."""

from __future__ import annotations

import importlib.util

import pytest

from tests.monitoring import (
    BENTOML,
    MONITORING,
    dashboard_exprs,
    metric_names,
    recorded,
    rule_metrics,
    service_metrics,
)


def generator():
    spec = importlib.util.spec_from_file_location("dashboards", MONITORING / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_dashboards_are_the_generated_ones() -> None:
    dashboards = generator()
    assert sorted(p.name for p in (MONITORING / "dashboards").glob("*.json")) == sorted(dashboards.DASHBOARDS)
    for name, make in dashboards.DASHBOARDS.items():
        assert (MONITORING / "dashboards" / name).read_text() == dashboards.render(make), (
            f"{name} differs: run python deploy/monitoring/dashboards.py"
        )


@pytest.mark.parametrize("name", ["plate-reader.json", "autocomplete.json"])
def test_every_panel_reads_a_metric_that_exists(name: str) -> None:
    known = recorded() | service_metrics() | BENTOML
    panels = dashboard_exprs(MONITORING / "dashboards" / name)
    assert len(panels) >= 8
    for title, exprs in panels.items():
        assert exprs, title
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"{title}: no metric in {expr}"
            assert names <= known, f"{title}: {names - known} neither recorded nor exported"


def test_every_rule_reads_a_metric_that_exists() -> None:
    known = service_metrics() | BENTOML
    for path in MONITORING.glob("rules/*.yml"):
        assert rule_metrics(path) <= known, f"{path.name}: {rule_metrics(path) - known}"


def test_the_name_check_can_fail() -> None:
    """The parser finds names inside functions, ranges and `by` clauses, and nothing else."""
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(foo_bucket{a="b", c=~"/v1/.*"}[5m])))'
        " / on (job) bar:rate5m > 0.4 and time() - baz offset 1h"
    )
    assert metric_names(expr) == {"foo_bucket", "bar:rate5m", "baz"}
    assert "modelport_plates_read_total" in service_metrics()
    assert "modelport_plate_reading_score_bucket" in service_metrics()
