"""Plate Recognizer's Snapshot API, spoken by the plate reader: apps, Home Assistant, Frigate and
Node-RED that call `POST /v1/plate-reader/` switch to modelport by changing one URL.

    options = parse_options(fields)           # its request fields -> our read options (4xx on bad input)
    plates = keep(plates, options)            # config.threshold_o and region "strict" drop plates
    body = to_response(to_json(...), plates, options, camera_id, usage, lowercase=True)

What maps to what (README, "Plate Recognizer clients"):
- `regions`: Plate Recognizer's codes (ISO 3166-1 `gb`, `de`, US states `us-ca`, ...) select
  our formats through `plate_recognizer_codes` in plate_formats.yaml; our own region names
  work too. A well-formed code we have no format for is no preference, and says so in
  `warnings`; text that is neither is a 400, as before.
- `config` (a JSON object): `threshold_d` is the detector threshold (`min_score`), `threshold_o`
  drops plates whose reading score is below it, `region: "strict"` keeps only plates that fit
  a format of the requested regions, `mode: "fast"` is accepted (one detector size per server).
  Other keys are ignored; keys that ask for a vehicle model we do not have are noted.
- Response: `version`, `camera_id`, `timestamp`, `usage`, `warnings`; per plate `region`
  (the format it fits, as Plate Recognizer's code) and `vehicle`: no vehicle model, so always
  Plate Recognizer's own "no vehicle found" answer, type "Unknown", score 0, box all zeros.

`usage` and `GET /v1/statistics/` count calls per calendar month (UTC) through `usage_source`:
today one count for this server process; API keys swap in per-key counts with
`set_usage_source`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import reprlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml
from fastapi import APIRouter, Request

from services.core.api_errors import ApiError, error_responses
from services.core.usage import next_month_start
from services.plate_reader.http_schema import StatisticsJSON
from services.plate_reader.plate_text import FORMATS_PATH, known_regions, load_formats
from services.plate_reader.types import PlateReading

# Request fields Plate Recognizer's clients send besides `upload`, `regions` and `camera_id`.
FIELDS = ("timestamp", "mmc", "config")
# A Plate Recognizer region code: ISO 3166-1 alpha-2, optionally "-" and a subdivision (us-ca, th-37).
CODE_SHAPE = re.compile(r"[a-z]{2}(-[a-z0-9]{1,3})?")
VERSION = 1  # Plate Recognizer's response `version`
# Plate Recognizer's answer for a plate whose vehicle it did not find; modelport finds none.
NO_VEHICLE_BOX = {"xmin": 0, "ymin": 0, "xmax": 0, "ymax": 0}
# `max_calls` without a quota: clients compute `max_calls - calls` (Home Assistant shows it as
# calls remaining), so a number, never null, and never one that makes the remainder negative.
NO_QUOTA_MAX_CALLS = 2**31 - 1
BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "": False}


def shown(value: Any) -> str:
    """A request value as error messages echo it: short, and safe on JSON nested thousands
    deep (plain repr() recurses, and raised RecursionError there)."""
    return reprlib.repr(value)


# --- regions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeTable:
    exact: Mapping[str, str]  # code -> our region
    prefixes: tuple[tuple[str, str], ...]  # ("us-", "us-generic"): from "us-*"
    canonical: Mapping[str, str]  # our region -> the code responses report for it

    def region_for(self, name: str) -> str | None:
        """Our region for one of our names (first) or one of Plate Recognizer's codes."""
        return name if name in known_regions() else self.code_region(name)

    def code_region(self, code: str) -> str | None:
        if not CODE_SHAPE.fullmatch(code):
            return None
        if code in self.exact:
            return self.exact[code]
        return next((region for prefix, region in self.prefixes if code.startswith(prefix)), None)


@functools.cache
def code_table(path: Path = FORMATS_PATH) -> CodeTable:
    """`plate_recognizer_codes` from plate_formats.yaml: our region -> [its codes], first reported."""
    table = yaml.safe_load(path.read_text()).get("plate_recognizer_codes") or {}
    regions = known_regions(path)
    exact: dict[str, str] = {}
    prefixes: list[tuple[str, str]] = []
    canonical: dict[str, str] = {}
    for region, codes in table.items():
        if region not in regions:
            raise ValueError(
                f"{path.name}: plate_recognizer_codes names region {region!r}, "
                f"which has no formats; regions: {sorted(regions)}"
            )
        for code in codes if isinstance(codes, list) else [codes]:
            if not isinstance(code, str):  # YAML reads a bare `no` (Norway) as false
                raise ValueError(f"{path.name}: code {code!r} for {region!r} is not text; quote it")
            code = code.strip().lower()
            if code.endswith("-*"):
                prefixes.append((code[:-1], region))
            elif not CODE_SHAPE.fullmatch(code):
                raise ValueError(f"{path.name}: {code!r} is not a Plate Recognizer region code")
            else:
                if exact.setdefault(code, region) != region:
                    raise ValueError(f"{path.name}: code {code!r} is listed for two regions")
                canonical.setdefault(region, code)
    return CodeTable(exact, tuple(prefixes), canonical)


@dataclass(frozen=True)
class RegionChoice:
    regions: tuple[str, ...] = ()  # ours, in the order asked, each once
    asked_as: tuple[tuple[str, str], ...] = ()  # (our region, the name the caller used for it)
    no_format: tuple[str, ...] = ()  # codes the caller sent that no format here covers


def choose_regions(value: Any) -> RegionChoice:
    """`regions` as sent (a string, comma-separated or not, or a list of them) -> our regions.

    A Plate Recognizer code we have no format for is kept in `no_format` (no preference);
    a name that is neither ours nor shaped like a code is a 400.
    """
    if value is None:
        return RegionChoice()
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise ApiError(
            400,
            "`regions` must be region codes as text (e.g. gb, de, us-ca), or a list of them",
            code="invalid_regions",
            param="regions",
        )
    table = code_table()
    regions: list[str] = []
    asked_as: list[tuple[str, str]] = []
    no_format: list[str] = []
    unknown: list[str] = []
    for name in (n.strip().lower() for v in items for n in v.split(",")):
        if not name:
            continue
        region = table.region_for(name)
        if region is not None:
            if region not in regions:
                regions.append(region)
                asked_as.append((region, name))
        elif CODE_SHAPE.fullmatch(name):
            no_format.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise ApiError(
            400,
            f"unknown region(s) {_excerpt(unknown)}: send Plate Recognizer region codes "
            "(ISO 3166-1, e.g. gb, de, fr, us-ca) or modelport's region names "
            f"{sorted(known_regions())}",
            code="invalid_regions",
            param="regions",
        )
    return RegionChoice(tuple(regions), tuple(asked_as), tuple(dict.fromkeys(no_format)))


def _excerpt(names: list[str], count: int = 5, width: int = 40) -> str:
    """The first few `names`, each cut to `width` characters, and how many more: an error
    message that echoes what was sent stays short however much was sent (issue 20: 200,000
    names made a 1 MB message)."""
    cut = [name if len(name) <= width else name[:width] + "..." for name in names[:count]]
    more = f" and {len(names) - count:,} more" if len(names) > count else ""
    return ", ".join(cut) + more


def fits(plate: str, region: str) -> bool:
    """Whether `plate` (A-Z0-9) has the shape of one of `region`'s formats."""
    return any(_fits_pattern(plate, pattern) for pattern in load_formats().patterns.get(region, ()))


def _fits_pattern(plate: str, pattern: str) -> bool:
    return len(plate) == len(pattern) and all(
        kind == "*" or (char.isdigit() if kind == "9" else char.isalpha())
        for kind, char in zip(pattern, plate)
    )


# --- request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotOptions:
    """What a request's Plate Recognizer fields ask for, checked."""

    regions: RegionChoice = RegionChoice()
    timestamp: datetime | None = None  # UTC; None: not sent (the response gives the time received)
    received: datetime = field(default_factory=lambda: datetime.now(UTC))
    mmc: bool = False
    threshold_d: float | None = None  # detector threshold: our min_score
    threshold_o: float | None = None  # plates whose reading score is below it are dropped
    strict: bool = False  # only plates that fit a format of the requested regions
    fast: bool = False
    warnings: tuple[str, ...] = ()


def parse_options(fields: Mapping[str, Any]) -> SnapshotOptions:
    """`regions`, `timestamp`, `mmc` and `config` from a request, each a 400 that says what to fix."""
    choice = choose_regions(fields.get("regions"))
    config = _config(fields.get("config"))
    mmc = _boolean(fields.get("mmc"), "mmc")
    warnings = []
    if choice.no_format:
        warnings.append(
            f"regions {_excerpt(list(choice.no_format))}: no plate format here for "
            f"{'this code' if len(choice.no_format) == 1 else 'these codes'}, so no "
            "preference from it; plates were read with "
            + (f"the formats of {', '.join(choice.regions)}" if choice.regions else "every format")
        )
    strict = False
    region_mode = config.get("region")
    if region_mode not in (None, "", False):
        if region_mode != "strict":
            warnings.append(
                f'config.region {shown(region_mode)} is not known here (only "strict" is): ignored'
            )
        elif not choice.regions or choice.no_format:
            warnings.append(
                'config.region "strict" not applied: it needs `regions`, each with a '
                "plate format here"
                + (f" ({', '.join(choice.no_format)} has none)" if choice.no_format else "")
            )
        else:
            strict = True
    fast = config.get("mode") == "fast"
    if fast:
        warnings.append(
            'config.mode "fast": accepted, but this server reads every photo the '
            "same way (its detector size is MODELPORT_PLATE_DETECTOR_IMGSZ)"
        )
    elif config.get("mode") is not None:
        warnings.append(f"config.mode {shown(config['mode'])} is not supported here: ignored")
    if config.get("detection_rule") == "strict":
        warnings.append(
            'config.detection_rule "strict" not applied: there is no vehicle '
            "detector here to check plates against"
        )
    if config.get("detection_mode") == "vehicle":
        warnings.append(
            'config.detection_mode "vehicle" not applied: there is no vehicle '
            "detector here; only plates are returned"
        )
    if mmc:
        warnings.append(
            "mmc: no vehicle make, model or colour model here; model_make, color and orientation are left out"
        )
    return SnapshotOptions(
        regions=choice,
        timestamp=_timestamp(fields.get("timestamp")),
        mmc=mmc,
        threshold_d=_config_unit(config, "threshold_d"),
        threshold_o=_config_unit(config, "threshold_o"),
        strict=strict,
        fast=fast,
        warnings=tuple(warnings),
    )


def _config(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            reason = exc if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise ApiError(
                400,
                f"`config` is not valid JSON ({reason}): send a JSON object, e.g. "
                '{"region": "strict", "threshold_d": 0.2}',
                code="invalid_config",
                param="config",
            ) from None
    if not isinstance(value, dict):
        raise ApiError(
            400,
            f'`config` must be a JSON object, e.g. {{"region": "strict"}}, not {type(value).__name__}',
            code="invalid_config",
            param="config",
        )
    return value


def _config_unit(config: Mapping[str, Any], name: str) -> float | None:
    value = config.get(name)
    if value is None:
        return None
    number = -1.0
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError, ValueError):
            number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ApiError(
            400,
            f"config.{name} must be a number from 0 to 1, not {shown(value)}",
            code="invalid_config",
            param="config",
        )
    return number


def _boolean(value: Any, name: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in BOOLEANS:
        return BOOLEANS[value.strip().lower()]
    raise ApiError(
        400, f"`{name}` must be true or false, not {shown(value)}", code=f"invalid_{name}", param=name
    )


def _timestamp(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ApiError(
            400,
            f"`timestamp` must be an ISO 8601 date and time, e.g. 2024-05-01T12:30:00Z, not {shown(value)}",
            code="invalid_timestamp",
            param="timestamp",
        ) from None
    # Plate Recognizer asks for UTC: a time without an offset is taken as UTC.
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is before year 1 in UTC; 9999-12-31T23:00-05:00 after 9999
        raise ApiError(
            400,
            f"`timestamp` {shown(value)} is outside the years 1-9999 once turned "
            "into UTC: send a time in that range",
            code="invalid_timestamp",
            param="timestamp",
        ) from None


# --- readings and response -------------------------------------------------------------


def keep(plates: Sequence[PlateReading], options: SnapshotOptions) -> list[PlateReading]:
    """The plates the request asked to see: `config.threshold_o` and `config.region: "strict"`."""
    return [
        p
        for p in plates
        if (options.threshold_o is None or p.score >= options.threshold_o)
        and (not options.strict or (bool(p.candidates) and p.candidates[0].region is not None))
    ]


def region_of(reading: PlateReading, options: SnapshotOptions) -> dict[str, Any]:
    """Plate Recognizer's `region` for a plate: the code of the format it fits, and 1/n when it
    fits formats of n regions (fr and it share AA999AA), 1 with one region asked; else null, 0."""
    top = reading.candidates[0] if reading.candidates else None
    code_for = _codes(options)
    code = code_for(top.region) if top is not None and top.region is not None else None
    if code is None:  # no format fits, or only a generic one (eu-generic)
        return {"code": None, "score": 0.0}
    tried = options.regions.regions or tuple(load_formats().patterns)
    fitting = {code_for(r) for r in tried if fits(reading.plate, r)} - {None}
    return {"code": code, "score": round(1 / max(len(fitting), 1), 4)}


def _codes(options: SnapshotOptions) -> Callable[[str], str | None]:
    """Our region -> the code to report: the caller's own code for it (us-ca), else its first."""
    asked_as = dict(options.regions.asked_as)
    table = code_table()

    def code_for(region: str) -> str | None:
        name = asked_as.get(region)
        if name is not None and table.code_region(name) == region:
            return name
        return table.canonical.get(region)

    return code_for


def to_response(
    body: Mapping[str, Any],
    plates: Sequence[PlateReading],
    options: SnapshotOptions,
    camera_id: str | None,
    usage: Usage,
    *,
    lowercase: bool,
) -> dict[str, Any]:
    """`body` (http_schema.to_json's answer for `plates`) with Plate Recognizer's fields added;
    `lowercase`: plate text as Plate Recognizer writes it (its clients compare it as given)."""
    results = []
    for item, reading in zip(body["results"], plates, strict=True):
        item = dict(item)
        if lowercase:
            item["plate"] = item["plate"].lower()
            item["candidates"] = [{**c, "plate": c["plate"].lower()} for c in item["candidates"]]
            item["watchlist"] = [
                {**m, "plate": m["plate"].lower(), "matched": m["matched"].lower()}
                for m in item.get("watchlist", ())
            ]
        item["region"] = region_of(reading, options)
        item["vehicle"] = {"type": "Unknown", "score": 0.0, "box": dict(NO_VEHICLE_BOX)}
        results.append(item)
    return {
        **body,
        "version": VERSION,
        "camera_id": camera_id,
        "timestamp": iso_utc(options.timestamp or options.received),
        "results": results,
        "usage": {"calls": usage.calls, "max_calls": usage.max_calls},
        "warnings": list(options.warnings),
    }


def iso_utc(moment: datetime) -> str:
    """2024-05-01T12:30:00.123456Z, as Plate Recognizer writes times (years below 1000 with
    four digits, as ISO 8601 wants: strftime's %Y writes year 1 as "1")."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# --- usage -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    calls: int  # this calendar month (UTC)
    max_calls: int  # the month's quota; NO_QUOTA_MAX_CALLS without one
    month: int
    year: int
    resets_on: datetime  # when `calls` starts again from 0


class UsageSource(Protocol):
    """Where `usage` and /v1/statistics/ get their numbers: swap with `set_usage_source`."""

    def record(self, request: Request) -> Usage:
        """Count one call by this request's caller; the caller's usage including it."""

    def current(self, request: Request) -> Usage:
        """This request's caller's usage this month."""


class ProcessUsage:
    """Calls to this server process this calendar month (UTC), no quota: what `usage` reports
    until API keys count calls per key (each worker process counts its own)."""

    def __init__(
        self, max_calls: int = NO_QUOTA_MAX_CALLS, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.max_calls, self.clock = max_calls, clock
        self._lock = threading.Lock()
        self._month: tuple[int, int] | None = None
        self._calls = 0

    def record(self, request: Request | None = None) -> Usage:
        with self._lock:
            now = self._roll()
            self._calls += 1
            return self._usage(now)

    def current(self, request: Request | None = None) -> Usage:
        with self._lock:
            return self._usage(self._roll())

    def _roll(self) -> datetime:
        now = self.clock()
        if self._month != (now.year, now.month):
            self._month, self._calls = (now.year, now.month), 0
        return now

    def _usage(self, now: datetime) -> Usage:
        return Usage(self._calls, self.max_calls, now.month, now.year, next_month_start(now))


usage_source: UsageSource = ProcessUsage()


def set_usage_source(source: UsageSource) -> None:
    """Count calls somewhere else (per API key); routes read `usage_source` on every call."""
    global usage_source
    usage_source = source


def statistics_json(usage: Usage) -> dict[str, Any]:
    """Plate Recognizer's /v1/statistics/ answer. Its `total_calls` is the month's quota (its
    clients compute calls remaining as `total_calls - usage.calls`), not the calls made."""
    return {
        "usage": {
            "calls": usage.calls,
            "max_calls": usage.max_calls,
            "month": usage.month,
            "year": usage.year,
            "resets_on": usage.resets_on.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "total_calls": usage.max_calls,
    }


router = APIRouter(responses=error_responses())  # 401 (keys on), 500, 503, 504


@router.get(
    "/statistics", response_model=StatisticsJSON, summary="Calls this month (Plate Recognizer's statistics)"
)
@router.get(
    "/statistics/", response_model=StatisticsJSON, summary="Calls this month (Plate Recognizer's statistics)"
)
async def statistics(request: Request) -> dict[str, Any]:
    return statistics_json(usage_source.current(request))
