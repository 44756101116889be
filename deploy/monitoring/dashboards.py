"""One Grafana dashboard per service, generated with grafanalib (never edit the JSON by hand).

    python deploy/monitoring/dashboards.py            # writes deploy/monitoring/dashboards/*.json
    python deploy/monitoring/dashboards.py --check    # exit 1 if the checked-in JSON differs

Panels plot the recording rules of rules/*.yml where one exists (the alert sees the same
line as the person), else the services' own metrics. Thresholds drawn on the panels are the
alerts' objectives. Import a JSON into Grafana (Dashboards > Import) with a Prometheus data
source named "Prometheus".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import Dashboard, GridPos, Target, Threshold, TimeSeries

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = "Prometheus"


def panel(
    title: str,
    *queries: tuple[str, str],
    unit: str = "",
    objective: float | None = None,
    description: str = "",
) -> TimeSeries:
    """A time series of `queries` ((PromQL, legend), ...); `objective` draws the alert's line."""
    thresholds = [Threshold("green", 0, 0.0)]
    if objective is not None:
        thresholds.append(Threshold("red", 1, float(objective)))
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        unit=unit,
        targets=[
            Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i))
            for i, (expr, legend) in enumerate(queries)
        ],
        thresholds=thresholds,
        thresholdsStyleMode="line" if objective is not None else "off",
    )


def laid_out(panels: list[TimeSeries]) -> list[TimeSeries]:
    """Two panels a row, 8 units high, with ids in order."""
    for i, p in enumerate(panels):
        p.gridPos = GridPos(h=8, w=12, x=12 * (i % 2), y=8 * (i // 2))
        p.id = i + 1
    return panels


def serving_panels(runner: str) -> list[TimeSeries]:
    """What both services share: traffic by status, turned away and failed, waiting for a slot."""
    api = f'runner_name="{runner}", endpoint=~"/v1/.*"'
    return [
        panel(
            "Requests by status",
            (
                f"sum by (http_response_code) (rate(bentoml_service_request_total{{{api}}}[5m]))",
                "{{http_response_code}}",
            ),
            unit="reqps",
        ),
        panel(
            "Turned away (429) and server errors (5xx)",
            (f'job:modelport_requests_429:ratio_rate5m{{runner_name="{runner}"}}', "429 {{job}}"),
            (f'job:modelport_requests_5xx:ratio_rate5m{{runner_name="{runner}"}}', "5xx {{job}}"),
            unit="percentunit",
            objective=0.05,
            description="Alerts: ModelportShedding (429 > 5%), ModelportServerErrors (5xx > 1%).",
        ),
    ]


def plate_reader() -> Dashboard:
    reads = 'runner_name="plate-reader", endpoint=~"/v1/plate-reader.*", http_response_code="200"'
    latency = [
        (
            f"histogram_quantile({q}, sum by (le) "
            f"(rate(bentoml_service_request_duration_seconds_bucket{{{reads}}}[5m])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    ]
    return Dashboard(
        title="modelport: plate reader",
        uid="modelport-plate-reader",
        tags=["modelport"],
        panels=laid_out(
            [
                panel(
                    "Read latency",
                    ("job:modelport_plate_read_latency_seconds:p95_5m", "p95 {{job}}"),
                    *latency,
                    unit="s",
                    objective=0.4,
                    description="Objective: p95 under 400 ms (alert PlateReaderSlow).",
                ),
                *serving_panels("plate-reader"),
                panel(
                    "Wait for a slot (p95)",
                    ('job:modelport_admission_queue_wait_seconds:p95_5m{job=~".*plate.*"}', "{{job}}"),
                    unit="s",
                    objective=1.0,
                    description="Alert: ModelportQueueWaitHigh (p95 > 1 s).",
                ),
                panel(
                    "Review share per camera (last hour)",
                    ("camera:modelport_plate_review_ratio:rate1h", "{{camera}}"),
                    ("camera:modelport_plate_review_ratio:rate7d", "{{camera}} 7-day"),
                    unit="percentunit",
                    description="Alert PlateReviewRateDrift: 1.5x the camera's 7-day share "
                    "and 5 points above it.",
                ),
                panel(
                    "No plate found per camera (last hour)",
                    ("camera:modelport_plate_no_plate_ratio:rate1h", "{{camera}}"),
                    ("camera:modelport_plate_no_plate_ratio:rate7d", "{{camera}} 7-day"),
                    unit="percentunit",
                    description="Alert PlateNoPlateShareHigh: 20 points above the camera's 7-day share.",
                ),
                panel(
                    "Plates read per camera",
                    ("sum by (camera) (rate(modelport_plates_read_total[5m]))", "{{camera}}"),
                    unit="reqps",
                ),
                panel(
                    "Reading confidence",
                    *[
                        (
                            f"histogram_quantile({q}, sum by (le) "
                            "(rate(modelport_plate_reading_score_bucket[15m])))",
                            f"p{round(q * 100)}",
                        )
                        for q in (0.1, 0.5)
                    ],
                    unit="percentunit",
                ),
                panel(
                    "Time per photo in each stage",
                    (
                        "sum by (stage) (rate(modelport_plate_stage_seconds_sum[5m])) "
                        "/ scalar(sum(rate(modelport_plate_images_total[5m])))",
                        "{{stage}}",
                    ),
                    unit="s",
                    description="Seconds of each read stage per photo (batch: the whole read); "
                    "services/plate_reader/stage_timing.py.",
                ),
                panel(
                    "Review queue",
                    ("sum(modelport_reviews_pending)", "pending"),
                    description="Items waiting for a person at /review.",
                ),
                panel(
                    "Oldest pending review",
                    ("time() - (max(modelport_reviews_oldest_pending_timestamp_seconds) > 0)", "age"),
                    unit="s",
                    objective=86400,
                    description="Alert PlateReviewQueueStale: over a day.",
                ),
            ]
        ),
    )


def autocomplete() -> Dashboard:
    return Dashboard(
        title="modelport: autocompleter",
        uid="modelport-autocomplete",
        tags=["modelport"],
        panels=laid_out(
            [
                panel(
                    "/v1/suggest latency (p95)",
                    ("job:modelport_suggest_latency_seconds:p95_5m", "{{job}}"),
                    unit="s",
                    objective=0.4,
                    description="Objective: p95 under 400 ms (alert AutocompleteSuggestSlow).",
                ),
                panel(
                    "Time to first token (p95)",
                    ("job:modelport_autocomplete_time_to_first_token_seconds:p95_5m", "{{job}}"),
                    unit="s",
                    objective=1.0,
                    description="Objective: p95 under 1 s (alert AutocompleteFirstTokenSlow).",
                ),
                *serving_panels("autocomplete"),
                panel(
                    "Sequences running and waiting",
                    ("sum(modelport:num_requests_running)", "running"),
                    ("sum(modelport:num_requests_waiting)", "waiting"),
                    objective=32,
                    description="Alert AutocompleteRequestsWaiting: more than 32 waiting for 5 minutes.",
                ),
                panel(
                    "KV cache used",
                    ("max(modelport:kv_cache_usage_perc)", "fullest worker"),
                    unit="percentunit",
                    objective=0.9,
                    description="Alert AutocompleteKVCacheFull: over 90% for 10 minutes.",
                ),
                panel(
                    "Wait for a batch slot (p95)",
                    ("job:modelport_autocomplete_queue_time_seconds:p95_5m", "engine {{job}}"),
                    (
                        'job:modelport_admission_queue_wait_seconds:p95_5m{job=~".*autocomplete.*"}',
                        "admission {{job}}",
                    ),
                    unit="s",
                    objective=1.0,
                ),
                panel(
                    "Tokens per second",
                    ("sum(rate(modelport_autocomplete_tokens_generated_total[5m]))", "generated"),
                    ("sum(rate(modelport_autocomplete_prompt_tokens_total[5m]))", "prompt"),
                ),
                panel(
                    "Prefix cache hit share",
                    (
                        "sum(rate(modelport:prefix_cache_hits_total[5m]))"
                        " / sum(rate(modelport:prefix_cache_queries_total[5m]))",
                        "hits",
                    ),
                    unit="percentunit",
                    description="Prompt tokens whose KV came from the cache (llama.cpp backend).",
                ),
                panel(
                    "Keystrokes saved per user (1 day)",
                    ("user_model:modelport_suggest_keystroke_savings:ratio1d", "{{user}} on {{model}}"),
                    unit="percentunit",
                    description="Characters taken with Tab (less the Tab) over all written, from the "
                    "editors' feedback. Alert AutocompleteSavingsDrop: under half a user's last 7 days.",
                ),
                panel(
                    "Decode speed per request (median)",
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        "(rate(modelport_autocomplete_tokens_per_second_bucket[5m])))",
                        "p50",
                    ),
                ),
            ]
        ),
    )


DASHBOARDS = {"plate-reader.json": plate_reader, "autocomplete.json": autocomplete}


def render(make: Callable[[], Any]) -> str:  # make: builds a grafanalib Dashboard (untyped)
    return json.dumps(make().to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, make in DASHBOARDS.items():
        text, path = render(make), OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python deploy/monitoring/dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
