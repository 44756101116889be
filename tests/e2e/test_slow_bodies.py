"""Slowloris on a real plate reader: 16 connections (as many as it runs requests at once) that
send a body 1 byte every 5 s hold no admission slot. A normal read sent meanwhile is answered
at once, and each slow sender gets 408 at MODELPORT_BODY_TIMEOUT_S (services/core/body_limit.py).

Before: admission was taken before the body was read, so the 16 held every slot, the normal
read waited in the queue until max_queue_wait_s (429), and the slow ones were never cut off.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PLATE_LIMITS
from tests.scenes import plate_on_street
from tests.servers import serve

pytestmark = pytest.mark.slow

DEADLINE_S = 8
SLOW = 16  # the plate reader's max_in_flight


@pytest.fixture(scope="module")
def plate_url(plate_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        **PLATE_LIMITS,
        "MODELPORT_BODY_TIMEOUT_S": str(DEADLINE_S),
        "MODELPORT_PLATE_MAX_IN_FLIGHT": str(SLOW),
        "MODELPORT_REVIEW_STORE": "off",
    }
    log = tmp_path_factory.mktemp("logs") / "plate_reader_slow_bodies.log"
    with serve("services.plate_reader.service:PlateReader", env=env, log_path=log) as url:
        yield url


def slow_sender(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S + 20)
    sock.sendall(
        b"POST /v1/plate-reader HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    return sock


def trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    while not stop.wait(5):  # 1 byte every 5 s on each connection
        for sock in socks:
            with contextlib.suppress(OSError):  # answered and closed
                sock.sendall(b" ")


def status_of(sock: socket.socket) -> tuple[str, float]:
    """The status line the server answered with ('closed' if it closed first), and when."""
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return (data.split(b"\r\n")[0].decode() or "closed"), time.monotonic()


def test_slow_bodies_hold_no_slot_and_get_408_at_the_deadline(plate_url: str) -> None:
    port = int(plate_url.rsplit(":", 1)[1])
    scene = plate_on_street()
    warm = httpx.post(f"{plate_url}/v1/plate-reader", files={"upload": scene.jpeg}, timeout=60)
    assert warm.status_code == 200, warm.text
    started = time.monotonic()
    socks = [slow_sender(port) for _ in range(SLOW)]
    stop = threading.Event()
    threading.Thread(target=trickle, args=(socks, stop), daemon=True).start()
    try:
        time.sleep(1)  # all 16 are in, sending
        sent = time.monotonic()
        read = httpx.post(f"{plate_url}/v1/plate-reader", files={"upload": scene.jpeg}, timeout=60)
        answered_s = time.monotonic() - sent
        assert read.status_code == 200, read.text
        assert [p["plate"] for p in read.json()["results"]] == [scene.plate]
        assert time.monotonic() - started < DEADLINE_S - 1, "answered only once slow senders were cut off"
        answers = [status_of(sock) for sock in socks]
    finally:
        stop.set()
        for sock in socks:
            sock.close()
    print(f"normal read answered in {answered_s:.2f} s while {SLOW} bodies trickled")
    for status, at in answers:
        assert status.startswith("HTTP/1.1 408"), status
        assert DEADLINE_S - 0.5 <= at - started <= DEADLINE_S + 10, at - started
