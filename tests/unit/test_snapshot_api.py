"""Plate Recognizer's Snapshot API fields -> our read options, our readings -> its response."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.requests import Request

from services.core.api_errors import ApiError
from services.plate_reader import snapshot_api
from services.plate_reader.http_schema import PlateReaderJSON, StatisticsJSON, to_json
from services.plate_reader.plate_text import known_regions
from services.plate_reader.snapshot_api import (
    NO_QUOTA_MAX_CALLS,
    ProcessUsage,
    SnapshotOptions,
    Usage,
    choose_regions,
    code_table,
    keep,
    parse_options,
    region_of,
    statistics_json,
    to_response,
)
from services.plate_reader.types import BoundingBox, Candidate, PlateReading


def plate(text: str, region: str | None, score: float = 0.97) -> PlateReading:
    return PlateReading(
        text,
        score,
        0.85,
        BoundingBox(297, 706, 590, 798),
        (Candidate(text, score, region, score),),
        review=score < 0.95,
    )


def bad_request(call, *args) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args)
    assert caught.value.status == 400 and len(caught.value.message) > 30
    return caught.value


# --- regions ---------------------------------------------------------------------------


def test_every_listed_code_selects_a_region_with_formats() -> None:
    table = code_table()
    assert set(table.exact.values()) | {r for _, r in table.prefixes} <= known_regions()
    assert table.exact["gb"] == "uk" and table.canonical["uk"] == "gb"
    for code in ("de", "fr", "es", "it", "nl", "cz", "ar", "vn", "in", "br"):
        assert table.region_for(code) == code and table.canonical[code] == code
    assert table.region_for("us") == table.region_for("us-ca") == table.region_for("us-ny") == "us-generic"


def test_plate_recognizer_codes_and_our_names_both_choose_regions() -> None:
    choice = choose_regions(["gb", "de", "us-ca"])
    assert choice.regions == ("uk", "de", "us-generic")
    assert choose_regions("uk,eu-generic").regions == ("uk", "eu-generic")  # ours, comma-separated
    assert choose_regions(["gb", "uk", "GB "]).regions == ("uk",)  # one region, asked three ways
    assert choose_regions(None).regions == choose_regions([]).regions == ()


def test_a_code_without_a_format_is_no_preference_and_a_warning_not_a_400() -> None:
    choice = choose_regions(["th-37", "gb", "jp"])
    assert choice.regions == ("uk",) and choice.no_format == ("th-37", "jp")
    options = parse_options({"regions": ["th-37"]})
    assert options.regions.regions == ()  # nothing we know: every format, as with no regions
    [warning] = options.warnings
    assert "th-37" in warning and "every format" in warning


def test_a_name_that_is_neither_ours_nor_a_code_is_still_a_400() -> None:
    error = bad_request(choose_regions, "atlantis")
    assert error.code == "invalid_regions" and "atlantis" in error.message and "us-ca" in error.message
    assert bad_request(choose_regions, [12]).code == "invalid_regions"


def test_the_code_table_is_checked_when_it_is_read(tmp_path: Path) -> None:
    def table(codes: str) -> Path:  # a new file each time: tables are read once per path
        path = tmp_path / f"formats-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(
            'regions:\n  uk: ["AA99AAA"]\n  de: ["A{1,3}A{1,2}9{1,4}"]\n'
            "confusions: {to_digit: {}, to_letter: {}}\n"
            f"plate_recognizer_codes:\n{codes}"
        )
        return path

    assert code_table(table("  uk: [gb]\n")).exact == {"gb": "uk"}
    for bad, says in (
        ("  atlantis: [at]\n", "no formats"),
        ("  uk: [no]\n", "quote it"),
        ("  uk: [great-britain]\n", "not a Plate Recognizer region code"),
        ("  uk: [gb]\n  de: [gb]\n", "two regions"),
    ):
        with pytest.raises(ValueError, match=says):
            code_table(table(bad))


# --- request fields --------------------------------------------------------------------


def test_config_thresholds_and_modes() -> None:
    options = parse_options(
        {"config": '{"threshold_d": 0.2, "threshold_o": "0.6", "mode": "fast", "some_future_key": [1, 2]}'}
    )
    assert (options.threshold_d, options.threshold_o, options.fast) == (0.2, 0.6, True)
    assert len(options.warnings) == 1 and "fast" in options.warnings[0]  # unknown keys: silent
    assert parse_options({"config": {"threshold_o": 1}}).threshold_o == 1.0  # JSON bodies: an object
    empty = parse_options({"config": "{}"})  # what the official CLI sends without --engine-config
    assert empty == SnapshotOptions(received=empty.received)


@pytest.mark.parametrize(
    "config",
    [
        '{"threshold_d": 0.2',
        "strict",
        "[1, 2]",
        '"x"',
        '{"threshold_o": 7}',
        '{"threshold_d": true}',
        '{"threshold_d": "high"}',
    ],
)
def test_bad_config_is_a_400_that_shows_the_shape(config: str) -> None:
    error = bad_request(parse_options, {"config": config})
    assert error.code == "invalid_config" and error.param == "config"


def test_region_strict_needs_regions_we_have_formats_for() -> None:
    assert parse_options({"regions": ["gb"], "config": '{"region": "strict"}'}).strict
    for fields in (
        {"config": '{"region": "strict"}'},
        {"regions": ["gb", "th"], "config": '{"region": "strict"}'},
    ):
        options = parse_options(fields)
        assert not options.strict
        assert any("strict" in w and "not applied" in w for w in options.warnings)
    assert not parse_options({"regions": ["gb"], "config": '{"region": "loose"}'}).strict


def test_vehicle_options_we_cannot_honour_are_noted() -> None:
    options = parse_options(
        {"mmc": "True", "config": '{"detection_rule": "strict", "detection_mode": "vehicle"}'}
    )
    assert options.mmc
    assert [w.split()[0] for w in options.warnings] == [
        "config.detection_rule",
        "config.detection_mode",
        "mmc:",
    ]


@pytest.mark.parametrize(
    ("sent", "value"),
    [
        ("true", True),
        ("True", True),
        ("false", False),
        ("False", False),
        (True, True),
        ("1", True),
        (None, False),
    ],
)
def test_mmc_as_clients_send_it(sent: object, value: bool) -> None:
    assert parse_options({"mmc": sent}).mmc is value


def test_mmc_that_is_not_a_boolean_is_a_400() -> None:
    assert bad_request(parse_options, {"mmc": "maybe"}).code == "invalid_mmc"


@pytest.mark.parametrize(
    ("sent", "utc"),
    [
        ("2024-05-01T12:30:00Z", "2024-05-01T12:30:00"),
        ("2024-05-01T12:30:00.789Z", "2024-05-01T12:30:00.789000"),  # JavaScript's toISOString()
        ("2024-05-01T14:30:00+02:00", "2024-05-01T12:30:00"),
        ("2024-05-01T12:30:00", "2024-05-01T12:30:00"),  # no offset: UTC, as Plate Recognizer asks
    ],
)
def test_timestamp_is_iso_8601_kept_in_utc(sent: str, utc: str) -> None:
    moment = parse_options({"timestamp": sent}).timestamp
    assert moment is not None and moment.tzinfo == UTC
    assert moment.replace(tzinfo=None) == datetime.fromisoformat(utc)


@pytest.mark.parametrize("sent", ["yesterday", "2024-13-01T00:00:00", "1714566600", 1714566600])
def test_a_timestamp_that_is_not_iso_8601_is_a_400(sent: object) -> None:
    error = bad_request(parse_options, {"timestamp": sent})
    assert error.code == "invalid_timestamp" and "ISO 8601" in error.message


@pytest.mark.parametrize("sent", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_timestamp_outside_years_1_to_9999_in_utc_is_a_400(sent: str) -> None:
    error = bad_request(parse_options, {"timestamp": sent})  # was OverflowError: a 500
    assert error.code == "invalid_timestamp" and "1-9999" in error.message


def test_year_1_is_echoed_as_iso_8601() -> None:
    options = parse_options({"timestamp": "0001-01-01T00:00:00"})
    assert options.timestamp is not None
    assert snapshot_api.iso_utc(options.timestamp) == "0001-01-01T00:00:00.000000Z"  # was "1-01-01T..."
    assert snapshot_api.iso_utc(datetime(2024, 5, 1, 12, 30, tzinfo=UTC)) == "2024-05-01T12:30:00.000000Z"


def test_config_nested_thousands_deep_is_a_400_not_a_recursion_error() -> None:
    deep = "[" * 2000 + "]" * 2000
    error = bad_request(parse_options, {"config": deep})
    assert error.code == "invalid_config" and "nested too deeply" in error.message
    # Deep values that did parse (an object in a JSON body) are echoed without recursing: repr()
    # of this list raises RecursionError.
    nested: object = 1
    for _ in range(990):
        nested = [nested]
    assert bad_request(parse_options, {"config": {"threshold_d": nested}}).code == "invalid_config"
    assert "config.region" in parse_options({"config": {"region": nested}}).warnings[0]


# --- readings and response -------------------------------------------------------------


def test_threshold_o_and_strict_drop_plates_like_plate_recognizer() -> None:
    sure, unsure, sign = plate("AB12CDE", "uk", 0.97), plate("AB12CDF", "uk", 0.5), plate("STOP", None)
    assert keep([sure, unsure, sign], parse_options({})) == [sure, unsure, sign]
    assert keep([sure, unsure, sign], parse_options({"config": '{"threshold_o": 0.6}'})) == [sure, sign]
    strict = parse_options({"regions": "gb", "config": '{"region": "strict"}'})
    assert keep([sure, unsure, sign], strict) == [sure, unsure]


def test_region_is_the_code_of_the_format_the_plate_fits() -> None:
    reading = plate("AD799KB", "fr")  # AA999AA: fr, it, hr, sk and (Mercosur) ar
    assert region_of(reading, parse_options({})) == {"code": "fr", "score": pytest.approx(1 / 5, abs=1e-4)}
    assert region_of(plate("AD799KB", "it"), parse_options({"regions": "it"})) == {"code": "it", "score": 1.0}
    assert region_of(plate("AB12CDE", "uk"), parse_options({"regions": "uk"}))["code"] == "gb"
    assert region_of(plate("7ABC123", "us-generic"), parse_options({"regions": "us-ca"})) == {
        "code": "us-ca",
        "score": 1.0,
    }  # the caller's own code back
    assert region_of(plate("STOP", None), parse_options({})) == {"code": None, "score": 0.0}
    assert region_of(plate("AB1234", "eu-generic"), parse_options({}))["code"] is None  # no country


def test_response_has_plate_recognizers_fields_and_keeps_ours() -> None:
    readings = [plate("AD799KB", "fr")]
    options = parse_options({"timestamp": "2024-05-01T12:30:00Z", "mmc": "true"})
    usage = Usage(7, NO_QUOTA_MAX_CALLS, 5, 2024, datetime(2024, 6, 1, tzinfo=UTC))
    body = to_response(to_json("car.jpg", readings, 41.7), readings, options, "gate-1", usage, lowercase=True)
    PlateReaderJSON.model_validate(body)  # what the route's response_model checks
    assert (body["version"], body["camera_id"]) == (1, "gate-1")
    assert body["timestamp"] == "2024-05-01T12:30:00.000000Z"
    assert body["usage"] == {"calls": 7, "max_calls": 2**31 - 1}
    assert body["filename"] == "car.jpg" and body["processing_time"] == 41.7
    assert body["warnings"] == list(options.warnings) and "mmc" in body["warnings"][0]
    [result] = body["results"]
    assert result["plate"] == "ad799kb" and result["candidates"] == [{"plate": "ad799kb", "score": 0.97}]
    assert result["vehicle"] == {
        "type": "Unknown",
        "score": 0.0,
        "box": {"xmin": 0, "ymin": 0, "xmax": 0, "ymax": 0},
    }
    assert result["region"]["code"] == "fr" and result["review"] is False
    assert not {"model_make", "color", "orientation"} & set(result)
    upper = to_response(to_json("car.jpg", readings, 41.7), readings, options, None, usage, lowercase=False)
    assert upper["results"][0]["plate"] == "AD799KB" and upper["camera_id"] is None


def test_no_timestamp_sent_gives_the_time_received() -> None:
    options = parse_options({})
    body = to_response(to_json("x", [], 1.0), [], options, None, ProcessUsage().current(), lowercase=True)
    assert body["timestamp"] == options.received.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert body["results"] == []


# --- usage -----------------------------------------------------------------------------


def test_process_usage_counts_this_month_and_starts_again_next_month() -> None:
    now = [datetime(2024, 1, 31, 23, 59, tzinfo=UTC)]
    usage = ProcessUsage(clock=lambda: now[0])
    assert [usage.record().calls for _ in range(3)] == [1, 2, 3]
    assert usage.current() == Usage(3, NO_QUOTA_MAX_CALLS, 1, 2024, datetime(2024, 2, 1, tzinfo=UTC))
    now[0] = datetime(2024, 2, 1, 0, 0, 1, tzinfo=UTC)
    assert usage.current().calls == 0 and usage.record().calls == 1


def test_statistics_in_plate_recognizers_shape() -> None:
    usage = Usage(128, 2500, 12, 2024, datetime(2025, 1, 1, tzinfo=UTC))
    body = statistics_json(usage)
    StatisticsJSON.model_validate(body)
    assert body == {
        "usage": {
            "calls": 128,
            "max_calls": 2500,
            "month": 12,
            "year": 2024,
            "resets_on": "2025-01-01T00:00:00Z",
        },
        "total_calls": 2500,
    }
    # What Home Assistant computes from it: calls remaining.
    assert body["total_calls"] - body["usage"]["calls"] == 2372


def test_the_statistics_route_reads_the_usage_source_set(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeSource:  # a fake count (the real per-key one: test_api_keys_and_overload.py)
        def record(self, request: object) -> Usage:
            return Usage(41, 1000, 1, 2024, datetime(2024, 2, 1, tzinfo=UTC))

        current = record

    monkeypatch.setattr(snapshot_api, "usage_source", snapshot_api.usage_source)  # restored after
    request = Request({"type": "http", "method": "GET", "path": "/v1/statistics/", "headers": []})
    before = asyncio.run(snapshot_api.statistics(request))
    snapshot_api.set_usage_source(FakeSource())
    after = asyncio.run(snapshot_api.statistics(request))
    # The route answers from whichever source is set now, not the one it started with.
    assert before["total_calls"] == NO_QUOTA_MAX_CALLS != 1000  # the process-wide count
    assert after["usage"] == {
        "calls": 41,
        "max_calls": 1000,
        "month": 1,
        "year": 2024,
        "resets_on": "2024-02-01T00:00:00Z",
    }, after
