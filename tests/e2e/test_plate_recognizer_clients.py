"""Plate Recognizer's own clients, pointed at modelport, work unchanged: each test sends what
that client's code sends (URL, fields, encoding, headers) and reads what its code reads.

- parkpow/deep-license-plate-recognition, plate_recognition.py (the official CLI, `-s URL`)
- parkpow/HASS-plate-recognizer, custom_components/platerecognizer/image_processing.py
- ljmerza/frigate_plate_recognizer, frigate_plate_recognizer/recognition.py + http_client.py
- bartbutenaers/node-red-contrib-plate-recognizer, plate-recognizer.js (form-data + node-fetch)

The Python clients use `requests`, so these tests do too.
"""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.scenes import iou, plate_on_street

requests = pytest.importorskip("requests")
pytestmark = pytest.mark.slow

SCENE = plate_on_street()  # AD 799 KB: fits fr, it (AA999AA) and Mercosur ar


def test_official_cli_with_a_self_hosted_url(plate_server: str, tmp_path: Path) -> None:
    # plate_recognition.py -s URL -r fr --camera-id gate-1 --mmc --engine-config '{"region":"strict"}'
    # -> recognition_api(fp, ["fr"], sdk_url=URL, config={...}, camera_id=..., mmc=True)
    path = tmp_path / "car.jpg"
    path.write_bytes(SCENE.jpeg)
    data = dict(regions=["fr"], config=json.dumps({"region": "strict"}))
    data["camera_id"] = "gate-1"
    data["mmc"] = True  # argparse store_true: requests sends "True"
    data["timestamp"] = "2024-05-01T12:30:00"
    with open(path, "rb") as fp:
        fp.seek(0)
        response = requests.post(plate_server + "/v1/plate-reader/", files=dict(upload=fp), data=data)
    assert 200 <= response.status_code <= 300, response.text
    assert not response.history  # answered at this URL, no redirect
    result = response.json()

    # process_split_image / save_cropped / post_processing / flatten read these:
    assert (result["camera_id"], result["timestamp"]) == ("gate-1", "2024-05-01T12:30:00.000000Z")
    assert result["processing_time"] > 0 and result["filename"] == "car.jpg"
    [plate] = result["results"]
    assert plate["plate"] == "ad799kb"  # Plate Recognizer's case
    assert plate["region"] == {"code": "fr", "score": 1.0}  # crop file name: plate_region_file
    box = plate["box"]
    assert iou((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), SCENE.box) > 0.7
    assert not plate["vehicle"]["score"]  # --crop-vehicle skips it: no vehicle was found
    assert plate["vehicle"]["box"] == {"xmin": 0, "ymin": 0, "xmax": 0, "ymax": 0}  # merge_results shifts it
    assert plate.get("model_make", [None])[0] is None
    assert isinstance(plate["score"], float) and plate["score"] >= 0.2  # post_processing compares it
    assert "usage" in result and result["usage"]["calls"] >= 1
    assert any(w.startswith("mmc") for w in result["warnings"])


def test_official_cli_defaults_send_an_empty_config(plate_server: str, tmp_path: Path) -> None:
    # No -r, no --engine-config: regions=[] (requests sends no field) and config "{}".
    path = tmp_path / "vehicle-1.jpg"
    path.write_bytes(SCENE.jpeg)
    with open(path, "rb") as fp:
        response = requests.post(
            plate_server + "/v1/plate-reader/",
            files=dict(upload=fp),
            data=dict(regions=[], config=json.dumps({})),
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["plate"] for p in body["results"]] == ["ad799kb"]
    assert body["warnings"] == [] and body["camera_id"] is None
    assert datetime.fromisoformat(body["timestamp"]).tzinfo == UTC  # when it arrived


def test_home_assistant_integration_with_its_server_option(plate_server: str) -> None:
    # configuration.yaml: server: http://host:port/v1/plate-reader/, regions [fr, gb], mmc: True,
    # detection_rule: strict, region: strict, watched_plates: [ad799kb, kbw46ba]
    server = plate_server + "/v1/plate-reader/"
    headers = {"Authorization": "Token my-token"}
    config = {"detection_rule": "strict", "region": "strict"}
    image = SCENE.jpeg  # camera.async_camera_image(): bytes
    api_response = requests.post(
        server,
        data=dict(
            regions=["fr", "gb"], camera_id="platerecognizer_gate", mmc=True, config=json.dumps(config)
        ),
        files={"upload": image},
        headers=headers,
        timeout=30,
    )
    api_response.raise_for_status()
    response = api_response.json()
    assert isinstance(response, dict) and isinstance(response["results"], list)

    results = response["results"]
    plates = list({cand["plate"] for r in results for cand in r["candidates"]})  # get_plates
    vehicles = [
        {
            "plate": r["plate"],
            "confidence": r["score"],
            "region_code": r["region"]["code"],
            "vehicle_type": r["vehicle"]["type"],
            "box_y_centre": r["box"]["ymin"] + (r["box"]["ymax"] - r["box"]["ymin"]) / 2,
            "box_x_centre": r["box"]["xmin"] + (r["box"]["xmax"] - r["box"]["xmin"]) / 2,
        }
        for r in results
    ]
    [vehicle] = vehicles
    assert vehicle["plate"] == "ad799kb" and 0 < vehicle["confidence"] <= 1
    assert vehicle["region_code"] == "fr" and vehicle["vehicle_type"] == "Unknown"
    assert abs(vehicle["box_x_centre"] - (SCENE.box[0] + SCENE.box[2]) / 2) < 30
    # watched_plates, written as Plate Recognizer returns plates: `plate in self._plates`
    watched = {plate: plate in plates for plate in ["ad799kb", "kbw46ba"]}
    assert watched == {"ad799kb": True, "kbw46ba": False}
    # A server other than Plate Recognizer's cloud: statistics come from the response's usage.
    stats = response.get("usage")
    assert isinstance(stats, dict) and {"max_calls", "calls"}.issubset(stats)
    calls_remaining = stats["max_calls"] - stats["calls"]
    assert calls_remaining > 0
    # mmc: true asks for orientation, which is left out (the integration logs it and goes on).
    assert "orientation" not in results[0]
    assert any("detection_rule" in w for w in response["warnings"])


@pytest.mark.parametrize("path", ["/v1/plate-reader", "/v1/plate-reader/"])
def test_frigate_plate_recognizer(plate_server: str, path: str) -> None:
    # plate_recognizer: {token: t, regions: [fr], api_url: <path>}; its default URL has no slash.
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()  # http_client.build_session(timeout=10, retries=3)
    retry = Retry(
        total=3,
        read=3,
        connect=3,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET", "POST"),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session.mount("http://", HTTPAdapter(max_retries=retry))
    response = session.post(
        plate_server + path,
        data=dict(regions=["fr"]),
        files={"upload": SCENE.jpeg},
        headers={"Authorization": "Token t"},
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
    assert not response.history
    payload = response.json()
    results = payload.get("results") or []
    top_result = results[0]
    plate_number, score = top_result.get("plate"), top_result.get("score")
    assert plate_number.lower() == "ad799kb" and 0 < score <= 1  # it compares in lowercase
    candidates = top_result.get("candidates") or []
    watched_set = {"ad799kb"}
    assert str(plate_number).lower() in watched_set
    assert any(c.get("plate").lower() in watched_set and c.get("score") for c in candidates)


def _form_data(fields: list[tuple[str, str]]) -> tuple[bytes, str]:
    """What npm's form-data writes for string fields (no filename, no part Content-Type)."""
    boundary = "-" * 26 + "".join(str(random.randrange(10)) for _ in range(24))
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    )
    return body + f"--{boundary}--\r\n".encode(), boundary


@pytest.mark.parametrize("make_and_model", [False, True])
def test_node_red_node_sends_upload_as_base64_text(plate_server: str, make_and_model: bool) -> None:
    image = base64.b64encode(SCENE.jpeg).decode()  # Buffer -> image.toString("base64")
    fields = [
        ("upload", image),
        ("mmc", str(make_and_model).lower()),  # makeAndModel.toString()
        ("camera_id", "driveway"),
        ("timestamp", "2024-05-01T12:30:00.123Z"),
    ]  # toISOString()
    fields += [("regions", code) for code in ["fr", "gb"]]  # regionListValue, one field each
    body, boundary = _form_data(fields)
    headers = {  # node-fetch 2 with a form-data body
        "Content-Type": f"multipart/form-data;boundary={boundary}",
        "Content-Length": str(len(body)),
        "Authorization": "Token undefined",  # no API token entered
        "Accept": "*/*",
        "User-Agent": "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "Accept-Encoding": "gzip,deflate",
        "Connection": "close",
    }
    res = httpx.post(plate_server + "/v1/plate-reader/", content=body, headers=headers, timeout=30)
    assert 200 <= res.status_code < 300, res.text  # res.ok
    result = res.json()
    assert len(result["results"]) == 1  # status "count": "1 plates"
    plates = ",".join(r["plate"].upper() for r in result["results"])  # status "plates"
    scores = ",".join(f"{r['plate'].upper()}({r['score'] * 100}%)" for r in result["results"])
    assert plates == "AD799KB" and scores.startswith("AD799KB(")
    assert (result["camera_id"], result["timestamp"]) == ("driveway", "2024-05-01T12:30:00.123000Z")
    assert result["filename"] == "image-0"
    assert any(w.startswith("mmc") for w in result["warnings"]) is make_and_model


def test_statistics_with_and_without_the_slash(plate_server: str) -> None:
    before = httpx.get(plate_server + "/v1/statistics/").json()
    assert (
        httpx.post(plate_server + "/v1/plate-reader/", files={"upload": SCENE.jpeg}, timeout=30).status_code
        == 200
    )
    for path in ("/v1/statistics/", "/v1/statistics"):
        response = httpx.get(plate_server + path)
        assert response.status_code == 200, response.text
        stats = response.json()
        now = datetime.now(UTC)
        assert stats["usage"]["calls"] == before["usage"]["calls"] + 1
        assert (stats["usage"]["month"], stats["usage"]["year"]) == (now.month, now.year)
        assert stats["total_calls"] == stats["usage"]["max_calls"] > stats["usage"]["calls"]
        resets = datetime.fromisoformat(stats["usage"]["resets_on"])
        assert resets > now and resets.day == 1


def test_a_region_code_without_a_format_is_noted_not_refused(plate_server: str) -> None:
    response = httpx.post(
        plate_server + "/v1/plate-reader/",
        files={"upload": SCENE.jpeg},
        data={"regions": ["th-37", "fr"]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["plate"] for p in body["results"]] == ["ad799kb"]
    [warning] = body["warnings"]
    assert "th-37" in warning


def test_threshold_o_drops_plates_read_less_surely(plate_server: str) -> None:
    hard = plate_on_street(plate_asset="plate_krw301")  # read with one weak character
    files = {"upload": ("hard.jpg", hard.jpeg, "image/jpeg")}
    [plate] = httpx.post(plate_server + "/v1/plate-reader/", files=files, timeout=30).json()["results"]
    above = json.dumps({"threshold_o": min(1.0, plate["score"] + 0.01)})
    below = json.dumps({"threshold_o": plate["score"]})
    assert (
        httpx.post(
            plate_server + "/v1/plate-reader/", files=files, data={"config": above}, timeout=30
        ).json()["results"]
        == []
    )
    assert (
        len(
            httpx.post(
                plate_server + "/v1/plate-reader/", files=files, data={"config": below}, timeout=30
            ).json()["results"]
        )
        == 1
    )


BAD = {
    "config not JSON": ({"config": '{"region": "strict"'}, "invalid_config", "config"),
    "config not an object": ({"config": "[1, 2]"}, "invalid_config", "config"),
    "threshold_d out of range": ({"config": '{"threshold_d": 5}'}, "invalid_config", "config"),
    "timestamp not ISO 8601": ({"timestamp": "yesterday at noon"}, "invalid_timestamp", "timestamp"),
    "mmc not a boolean": ({"mmc": "perhaps"}, "invalid_mmc", "mmc"),
    "upload_url is off": ({"upload_url": "https://example.com/car.jpg"}, "upload_url_disabled", "upload_url"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_plate_recognizer_fields_are_a_400_in_our_error_shape(plate_server: str, case: str) -> None:
    data, code, param = BAD[case]
    response = httpx.post(
        plate_server + "/v1/plate-reader/", files={"upload": SCENE.jpeg}, data=data, timeout=30
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert len(error["message"]) > 30


def test_upload_url_alone_is_refused_with_its_own_message(plate_server: str) -> None:
    body, boundary = _form_data([("upload_url", "https://example.com/car.jpg")])
    response = httpx.post(
        plate_server + "/v1/plate-reader/",
        content=body,
        timeout=30,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400
    assert "upload_url" in response.json()["error"]["message"]


def test_base64_text_upload_that_is_not_base64_is_a_400(plate_server: str) -> None:
    body, boundary = _form_data([("upload", "not an image !!")])
    response = httpx.post(
        plate_server + "/v1/plate-reader/",
        content=body,
        timeout=30,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_base64"
