"""The plate reader's real /metrics carries every series deploy/monitoring/ reads for it (rules
and dashboard), with the camera label the drift alerts group by."""

from __future__ import annotations

import io
import re

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from services.plate_reader.stage_timing import STAGES
from tests.monitoring import (
    MONITORING,
    dashboard_exprs,
    metric_names,
    recorded,
    rule_metrics,
)
from tests.scenes import plate_on_street

pytestmark = pytest.mark.slow


def blank_photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 110, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_metrics_hold_what_the_rules_and_dashboard_read(plate_server: str) -> None:
    for photo in (plate_on_street().jpeg, blank_photo()):
        response = httpx.post(
            f"{plate_server}/v1/plate-reader",
            files={"upload": photo},
            data={"camera_id": "gate-e2e"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
    assert httpx.get(f"{plate_server}/v1/reviews", timeout=30).status_code == 200  # opens the review store
    samples = [
        s
        for family in text_string_to_metric_families(httpx.get(f"{plate_server}/metrics").text)
        for s in family.samples
    ]
    exported = {s.name for s in samples}

    def value(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert value("modelport_plate_images_total", camera="gate-e2e") == 2
    assert value("modelport_plate_images_without_plate_total", camera="gate-e2e") == 1
    assert value("modelport_plates_read_total", camera="gate-e2e") >= 1
    assert "modelport_plate_reviews_total" in exported  # at 0 from the camera's first photo
    # Every stage of the read was timed (stage_timing.py; the dashboard's "time per stage").
    timed = {stage for stage in STAGES if value("modelport_plate_stage_seconds_count", stage=stage) >= 1}
    assert timed == set(STAGES)
    assert any(
        s.name == "bentoml_service_request_total"
        and s.labels.get("runner_name") == "plate-reader"
        and s.labels.get("endpoint", "").startswith("/v1/plate-reader")
        for s in samples
    )

    wanted = rule_metrics(MONITORING / "rules" / "plate-reader.rules.yml") | rule_metrics(
        MONITORING / "rules" / "serving.rules.yml"
    )
    for exprs in dashboard_exprs(MONITORING / "dashboards" / "plate-reader.json").values():
        for expr in exprs:
            wanted |= metric_names(expr) - recorded()
    # The webhook series exist only where targets are set (counted from 0 per target): this server
    # has none; test_plate_webhooks checks them on a server that has.
    assert {m for m in wanted if not m.startswith("modelport_webhook_")} - exported == set()
    # The label values the plate rules select on match the real series (BentoML's runner_name is
    # the @bentoml.service name; endpoint is the path the rules' regex must take).
    rules = (MONITORING / "rules" / "plate-reader.rules.yml").read_text()
    requests = [s for s in samples if s.name == "bentoml_service_request_total"]
    for runner in set(re.findall(r'runner_name="([^"]+)"', rules)):
        assert runner in {s.labels.get("runner_name") for s in requests}, runner
    for pattern in set(re.findall(r'endpoint=~?"([^"]+)"', rules)):
        assert any(re.fullmatch(pattern, s.labels.get("endpoint", "")) for s in requests), pattern
