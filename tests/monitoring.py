"""The metric names deploy/monitoring/ uses (rules, dashboards) and those the services export,
for the tests that check one against the other."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "deploy" / "monitoring"
# BentoML's own request metrics (bentoml/_internal/server/http/instruments.py), checked on a
# real server in tests/e2e/test_monitoring_metrics.py.
BENTOML = {
    "bentoml_service_request_total",
    "bentoml_service_request_in_progress",
    *(f"bentoml_service_request_duration_seconds_{s}" for s in ("bucket", "sum", "count")),
}
_EXPOSED = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):  # not inside 1h, 0.95
        rest = expr[match.end() :].lstrip()
        name = match.group()
        if rest.startswith("(") or name in _KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        names.add(name)
    return names


def rules(path: Path) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def recorded() -> set[str]:
    return {
        rule["record"] for path in MONITORING.glob("rules/*.yml") for rule in rules(path) if "record" in rule
    }


def rule_metrics(path: Path) -> set[str]:
    """Raw series (not recording rules) the rules of one file read."""
    return set().union(*(metric_names(rule["expr"]) for rule in rules(path))) - recorded()


def dashboard_exprs(path: Path) -> dict[str, list[str]]:
    """Panel title -> its queries."""
    return {
        panel["title"]: [target["expr"] for target in panel["targets"]]
        for panel in json.loads(path.read_text())["panels"]
    }


def service_metrics() -> set[str]:
    """Every name a `bentoml.metrics.<Kind>(name=...)` in services/ exposes on /metrics."""
    names = set()
    for path in (REPO / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _EXPOSED
                and "metrics" in ast.unparse(node.func.value)
            ):
                continue
            name = next(
                (
                    k.value.value
                    for k in node.keywords
                    if k.arg == "name" and isinstance(k.value, ast.Constant)
                ),
                None,
            )
            if name:
                names.update(name + suffix for suffix in _EXPOSED[node.func.attr])
    return names
