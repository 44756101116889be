"""`modelport capacity`'s outputs: the step table, report.json and a self-contained report.html
(inline SVG, no scripts or downloads: it opens from a mail attachment)."""

from __future__ import annotations

import html
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from rich.table import Table

from services.core.capacity import BUSY_PERCENT, Objective, Recommendation, Step


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def step_table(steps: Sequence[Step], objective: Objective) -> Table:
    table = Table(
        "in flight",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "429s",
        "server CPU",
        "server RSS",
        "load gen CPU",
        "objective",
        title=f"objective: {objective}",
    )
    for step in steps:
        s = step.summary()
        why = objective.broken_by(step)
        table.add_row(
            str(step.concurrency),
            f"{step.rps:.1f}",
            *(_ms(s[k]) for k in ("p50_ms", "p95_ms", "p99_ms")),
            str(step.errors),
            str(step.rejected),
            "-" if step.server_cpu_cores is None else f"{step.server_cpu_cores:.2f} cores",
            "-" if step.server_rss_mib is None else f"{step.server_rss_mib:.0f} MiB",
            f"{step.client_cpu_cores:.2f} cores",
            "[green]held[/green]" if why is None else f"[red]{why}[/red]",
        )
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def answer_text(
    service: str, rec: Recommendation, objective: Objective, host: dict[str, Any], editors: int | None
) -> list[str]:
    """The answer in words, one line each."""
    lines = [
        f"One {service} replica on this machine "
        f"({host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB) "
        f"holds {rec.max_concurrency} requests in flight within {objective}: "
        f"{rec.requests_per_s:g} requests/s, p{objective.percentile} {rec.latency_ms:g} ms."
    ]
    if rec.target_rps is not None:
        asked = (
            f"{editors} editors ({rec.target_rps:.1f} requests/s)"
            if editors
            else f"{rec.target_rps:g} requests/s"
        )
        lines.append(f"For {asked}: {rec.replicas} replica(s), each planned at 80% of what it held.")
    lines.append(f"BentoML: traffic.concurrency = {rec.traffic_concurrency}.")
    if rec.cpu_request is not None:
        lines.append(
            f'Kubernetes: requests cpu: "{rec.cpu_request:g}", memory: {rec.memory_request_mib}Mi; '
            f"HPA averageUtilization: {rec.hpa_cpu_utilization} (% of the CPU request)"
            + (f", minReplicas: {rec.replicas}." if rec.replicas else ".")
        )
    else:
        lines.append("CPU and memory requests: not measured (the server is not on this machine).")
    return lines


def report(
    service: str,
    url: str,
    objective: Objective,
    steps: Sequence[Step],
    rec: Recommendation | None,
    *,
    partial: bool,
    note: str,
    editors: int | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    host = machine()
    answer = answer_text(service, rec, objective, host, editors) if rec else [note]
    busy = settings.get("cpu_busy_before_percent")
    if busy is not None and busy > BUSY_PERCENT:
        answer.append(
            f"Warning: {busy:.0f}% of the machine's CPU was in use before the sweep: these "
            "figures include that contention; measure again on a quiet machine."
        )
    return {
        "service": service,
        "url": url,
        "machine": host,
        "objective": str(objective),
        "objective_detail": {
            "percentile": objective.percentile,
            "limit_ms": objective.limit_ms,
            "max_error_rate": objective.max_error_rate,
        },
        "settings": settings,
        "partial": partial,
        "note": note,
        "steps": [
            {**s.summary(), "held": objective.broken_by(s) is None, "why_not": objective.broken_by(s)}
            for s in steps
        ],
        "recommendation": rec.to_json() if rec else None,
        "answer": answer,
    }


def write(out: Path, body: dict[str, Any]) -> tuple[Path, Path]:
    """report.json and report.html in `out`, each written whole (a temporary file renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "report.json", out / "report.html"
    for path, text in zip(paths, (json.dumps(body, indent=2) + "\n", to_html(body))):
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(text)
        temporary.replace(path)
    return paths


def to_html(body: dict[str, Any]) -> str:
    esc = html.escape
    steps = body["steps"]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{esc(str('-' if s[k] is None else s[k]))}</td>"
            for k in (
                "concurrency",
                "requests_per_s",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "errors",
                "rejected_429",
                "server_cpu_cores",
                "server_rss_mib",
                "client_cpu_cores",
            )
        )
        + f"<td class={'ok' if s['held'] else 'bad'}>"
        + f"{'held' if s['held'] else esc(s['why_not'] or '')}</td></tr>"
        for s in steps
    )
    answer = "".join(f"<p>{esc(line)}</p>" for line in body["answer"])
    partial = "<p class=bad>Partial: the sweep was stopped before it finished.</p>" if body["partial"] else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelport capacity: {esc(body["service"])}</title>
<style>body{{font:14px system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
.ok{{color:#186a3b}}.bad{{color:#b03a2e}}svg text{{font:12px system-ui,sans-serif}}</style></head><body>
<h1>Capacity of {esc(body["service"])}</h1>
<p>{esc(body["url"])} on {esc(body["machine"]["cpu"])}, {body["machine"]["cores"]} cores,
{body["machine"]["memory_gib"]} GiB. Objective: {esc(body["objective"])}.</p>
{partial}{answer}
<h2>Latency against load</h2>
{latency_svg(steps, body["objective_detail"])}
<h2>Steps</h2>
<table><tr><th>in flight</th><th>req/s</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>errors</th>
<th>429s</th><th>server CPU (cores)</th><th>server RSS (MiB)</th><th>load generator CPU</th>
<th>objective</th></tr>
{rows}</table>
<p>Settings: {esc(json.dumps(body["settings"]))}</p>
</body></html>
"""


def latency_svg(
    steps: list[dict[str, Any]], objective: dict[str, Any], width: int = 720, height: int = 360
) -> str:
    """p50/p95/p99 (left axis, ms) and requests/s (right axis) against requests in flight."""
    ordered = sorted(steps, key=lambda s: s["concurrency"])
    if not ordered:
        return "<p>No step finished.</p>"
    left, right, top, bottom = 60, 60, 20, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [s["concurrency"] for s in ordered]
    ms = [v for s in ordered for k in ("p50_ms", "p95_ms", "p99_ms") if (v := s[k]) is not None]
    y_max = max([*ms, objective["limit_ms"]]) * 1.1
    rps_max = max(s["requests_per_s"] for s in ordered) * 1.1 or 1.0
    x_max = max(xs) if max(xs) > 1 else 2

    def x(value: float) -> float:  # log2 axis: the sweep doubles
        import math

        return left + plot_w * (math.log2(value) / math.log2(x_max) if x_max > 1 else 0)

    def y(value: float, top_value: float) -> float:
        return top + plot_h * (1 - value / top_value)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        'aria-label="latency and throughput against requests in flight">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for value in sorted(set(xs)):
        parts.append(
            f'<text x="{x(value):.1f}" y="{height - bottom + 16}" text-anchor="middle">{value}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">requests in flight</text>'
    )
    for i in range(5):
        v = y_max * i / 4
        parts.append(f'<text x="{left - 6}" y="{y(v, y_max) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
        r = rps_max * i / 4
        parts.append(f'<text x="{width - right + 6}" y="{y(r, rps_max) + 4:.1f}">{r:.1f}</text>')
    parts.append(
        f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
        'text-anchor="middle">latency ms</text>'
    )
    parts.append(
        f'<text x="{width - 12}" y="{top + plot_h / 2}" transform="rotate(90 {width - 12} '
        f'{top + plot_h / 2})" text-anchor="middle">requests/s</text>'
    )
    limit_y = y(objective["limit_ms"], y_max)
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{limit_y:.1f}" y2="{limit_y:.1f}" stroke="#b03a2e" '
        f'stroke-dasharray="6 4"/><text x="{left + 4}" y="{limit_y - 4:.1f}" fill="#b03a2e">'
        f"objective p{objective['percentile']} {objective['limit_ms']:g} ms</text>"
    )
    series = [
        ("p50_ms", "#5dade2", y_max),
        ("p95_ms", "#1f618d", y_max),
        ("p99_ms", "#7d3c98", y_max),
        ("requests_per_s", "#28b463", rps_max),
    ]
    for n, (key, colour, scale) in enumerate(series):
        points = [(x(s["concurrency"]), y(s[key], scale)) for s in ordered if s[key] is not None]
        if points:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            dash = ' stroke-dasharray="2 3"' if key == "requests_per_s" else ""
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
            parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>' for px, py in points)
        label = key.replace("_ms", "").replace("requests_per_s", "requests/s")
        parts.append(f'<text x="{left + 10 + 90 * n}" y="{top + 16}" fill="{colour}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
