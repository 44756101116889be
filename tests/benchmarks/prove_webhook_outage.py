"""Issue 21's "nothing lost", at the default retry settings: a receiver down for 10 minutes, and
the plate reader SIGKILLed halfway through with events pending, then restarted on the same
database. Every event must arrive, once per webhook-id.

    python tests/benchmarks/prove_webhook_outage.py [--down-minutes 10] [--every-s 30]

A real `bentoml serve` plate reader sends `recognition` webhooks to a real receiver (a stdlib
HTTP server here, allowed by MODELPORT_PLATE_WEBHOOK_DEV_HOSTS; signatures verified with the
Standard Webhooks library). The receiver goes down; a photo is read every `--every-s` seconds;
at half time the server is SIGKILLed (process group) and started again on the same SQLite
database; at the end the receiver comes back. Prints what was answered, what arrived, repeats,
how long the last one took after the receiver came back (the default backoff caps at 300 s)
and the restarted server's retry and failure counts.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, run as a script
from tests.benchmarks.machine import describe_machine
from tests.probes import serving_pids
from tests.scenes import plate_on_street
from tests.servers import free_port, serve_process

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


class Receiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.ids: collections.Counter[str] = collections.Counter()
        self.arrived: dict[str, float] = {}
        self.filenames: dict[str, str] = {}
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                body = Webhook(SECRET).verify(raw, dict(self.headers))
                event_id = self.headers["webhook-id"]
                receiver.ids[event_id] += 1
                receiver.arrived.setdefault(event_id, time.monotonic())
                receiver.filenames[body["data"]["filename"]] = event_id
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down-minutes", type=float, default=10.0)
    parser.add_argument("--every-s", type=float, default=30.0)
    args = parser.parse_args()
    receiver = Receiver(free_port())
    jpeg = plate_on_street().jpeg
    folder = tempfile.mkdtemp(prefix="webhook-outage-")
    env = {
        "MODELPORT_DATA_DIR": folder,
        "MODELPORT_PLATE_WEBHOOKS": json.dumps(
            [{"url": f"http://127.0.0.1:{receiver.port}/hook", "secret": SECRET, "name": "receiver"}]
        ),
        "MODELPORT_PLATE_WEBHOOK_DEV_HOSTS": "127.0.0.1",  # retry settings: the defaults
    }
    print(describe_machine(), flush=True)
    answered: list[str] = []
    down_s = args.down_minutes * 60

    def read_until(url: str, until: float) -> None:
        while time.monotonic() < until:
            name = f"photo-{len(answered):03d}.jpg"
            response = httpx.post(f"{url}/v1/plate-reader", files={"upload": (name, jpeg)}, timeout=60)
            response.raise_for_status()
            answered.append(name)
            time.sleep(args.every_s)

    with serve_process("services.plate_reader.service:PlateReader", env=env) as first:
        started = time.monotonic()  # the receiver is down from here (it never was up)
        read_until(first.url, started + down_s / 2)
        # SIGKILL, events pending: no shutdown hook runs. The workers have process groups of
        # their own: each is killed by its pid.
        processes = [psutil.Process(pid) for pid in serving_pids(first.process.pid)]
        for process in processes:
            process.kill()
        psutil.wait_procs(processes, timeout=30)
        first.process.wait()
    killed_with = len(answered)
    print(f"SIGKILLed after {len(answered)} answered reads", flush=True)
    with serve_process("services.plate_reader.service:PlateReader", env=env) as second:
        read_until(second.url, started + down_s)
        retries_before = metric(second.url, "modelport_webhook_retries_total")
        receiver.start()
        back = time.monotonic()
        print(f"receiver up after {back - started:.0f} s down", flush=True)
        deadline = back + 600
        while set(answered) - set(receiver.filenames) and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(5)  # a repeat would come now
        last = max(receiver.arrived.values(), default=back) - back
        rows = [
            ("reads answered (events)", len(answered)),
            ("... of them before the SIGKILL", killed_with),
            ("events arrived (distinct webhook-id)", len(receiver.ids)),
            ("answered but never arrived", len(set(answered) - set(receiver.filenames))),
            ("webhook-ids received more than once", sum(1 for n in receiver.ids.values() if n > 1)),
            ("last arrival after the receiver came back (s)", round(last, 1)),
            ("retries by the restarted server while down", retries_before),
            ("restarted server: deliveries", metric(second.url, "modelport_webhook_deliveries_total")),
            ("restarted server: outbox pending now", metric(second.url, "modelport_webhook_outbox_pending")),
        ]
    receiver.stop()
    width = max(len(name) for name, _ in rows)
    print(f"\n| {'what':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")
    main()
