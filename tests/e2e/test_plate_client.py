"""The typed client and the parking-gate example against the real served plate reader."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from modelport_client import AsyncClient, BadRequest, Client, TransportError, UnsupportedMedia
from tests.assets import asset
from tests.scenes import plate_on_street

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_sync_client_reads_a_plate_from_a_path(plate_server: str, tmp_path: Path) -> None:
    photo = tmp_path / "gate.jpg"
    scene = plate_on_street()
    photo.write_bytes(scene.jpeg)
    with Client(plate_server) as client:
        assert client.is_ready()
        reading = client.read_plates(photo, regions=["eu-generic"])
        assert reading.filename == "gate.jpg"
        assert [p.plate for p in reading.results] == [scene.plate]
        assert reading.results[0].candidates[0].plate == scene.plate
        jpeg = client.annotate_plates(photo)
        assert jpeg[:2] == b"\xff\xd8"


def test_async_client_reads_several(plate_server: str) -> None:
    scene = plate_on_street()

    async def go() -> list[list[str]]:
        async with AsyncClient(plate_server) as client:
            readings = await client.read_plates_many([scene.jpeg, asset("bus").read_bytes()])
            return [[p.plate for p in r.results] for r in readings]

    assert asyncio.run(go()) == [[scene.plate], []]


def test_client_errors_carry_status_url_and_the_servers_message(plate_server: str) -> None:
    with Client(plate_server) as client:
        with pytest.raises(UnsupportedMedia) as info:
            client.read_plates(b"not an image at all")
        assert info.value.status == 415
        assert "/v1/plate-reader" in info.value.url and "not an image" in str(info.value)
        with pytest.raises(BadRequest, match="min_score"):
            client.read_plates(plate_on_street().jpeg, min_score=3)


def test_client_transport_error_names_the_url() -> None:
    with (
        Client("http://127.0.0.1:9", timeout=2) as client,
        pytest.raises(TransportError, match=r"127\.0\.0\.1:9"),
    ):
        client.read_plates(b"x")


def test_parking_gate_example_logs_the_plate(plate_server: str, tmp_path: Path) -> None:
    (tmp_path / "0001.jpg").write_bytes(plate_on_street().jpeg)
    (tmp_path / "0002.jpg").write_bytes(asset("bus").read_bytes())
    (tmp_path / "notes.txt").write_text("not a photo")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "parking_gate.py"),
            str(tmp_path),
            "--once",
            "--url",
            plate_server,
            "--csv",
            str(tmp_path / "log.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "0001.jpg" in lines[0] and "AD799KB" in lines[0]
    assert "0002.jpg" in lines[1] and "no plate found" in lines[1]
    assert "AD799KB" in (tmp_path / "log.csv").read_text()
