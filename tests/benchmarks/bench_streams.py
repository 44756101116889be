"""Live cameras on this machine: a 25 fps 1080p H.264 stream served in real time by GStreamer's
RTSP server (tests/rtsp_server.py) and watched as `modelport watch` does (StreamSource ->
MotionGate -> PlateRecognizer -> VehicleTracker), in this process, whose CPU is measured.

    nice -n 10 python tests/benchmarks/bench_streams.py [--seconds 40] [--idle-cameras 4] [--fps 5]

Rows:
- busy: one camera, a real plate crossing a real street (tests/streams.gate_clip at 1920x1080,
  25 fps: 7 s empty, 4 s passing, 5 s empty): frames decoded and read a second, CPU, and the
  seconds from the car's first (and last) frame to its event;
- idle: cameras on a static scene with sensor noise (a still street plus Gaussian noise of
  sigma 2 grey levels a frame, as a camera's sensor gives), alone and N at once: CPU each;
- idle, no gate: the same static camera with the motion gate off (every sample read): what the
  gate saves, as a ratio measured in the same run;
- keyframes when idle (MODELPORT_PLATE_CAMERA_IDLE_KEYFRAMES): the busy and idle cameras again,
  decoding only keyframes after 2 s still (the busy clip's car comes at 7 s, as the RTSP server
  sends its first ~2 s in a burst).
Then how many idle and busy cameras a replica's 2 cores hold, from the CPU measured. Needs the
plate models in the model store (`modelport models import --defaults`) and GStreamer's RTSP
server (see .ci/run). CPU is this process's (decoding, gating, reading), not the RTSP server's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np
import psutil
from PIL import Image

from services.core.cli import _plate_recognizer, register_model_kinds
from services.plate_reader.motion import MotionGate
from services.plate_reader.settings import Settings
from services.plate_reader.stream_source import StreamSource
from services.plate_reader.stream_watch import CameraWatch
from services.plate_reader.vehicle_tracks import VehicleTracker
from tests.assets import asset
from tests.benchmarks.machine import describe_machine
from tests.streams import RtspServer, gate_clip, plate_text, rtsp_available, write_h264

SIZE, FPS = (1920, 1080), 25
CAR_FROM_S, CAR_FOR_S = 7.0, 4.0  # the busy clip: the plate is in view from 7 s to 11 s
USABLE_CORES = 1.6  # of a replica's 2: room left for the HTTP side, the OS, bursts


@dataclass
class Row:
    name: str
    cameras: int
    wall_s: float
    cpu_s: float
    decoded: int
    samples: int
    moving: int
    reads: int
    dropped: int
    events: list[tuple[float, dict[str, Any]]]  # (s into the row, event)
    car_at: float | None  # s into the row when the car's first frame was decoded (all decoded)
    peak_rss_mb: float

    @property
    def cpu_per_camera(self) -> float:  # in cores
        return self.cpu_s / self.wall_s / self.cameras


def idle_clip(path: Path, seconds: float) -> Path:
    street = np.asarray(Image.open(asset("bus")).convert("RGB").resize(SIZE), dtype=np.int16)
    rng = np.random.default_rng(0)
    noises = [rng.normal(0, 2, street.shape).astype(np.int16) for _ in range(8)]
    frames = [np.clip(street + noises[i % 8], 0, 255).astype(np.uint8) for i in range(round(seconds * FPS))]
    write_h264(path, frames, fps=FPS, gop=2 * FPS)
    return path


def watch(
    name: str,
    urls: list[str],
    seconds: float,
    fps: float,
    recognizer: Any,
    *,
    gate: bool = True,
    idle_keyframes: bool = False,
) -> Row:
    settings = Settings.from_env()
    lock = threading.Lock()  # one read at a time, as the server's one batch thread
    events: list[tuple[float, dict[str, Any]]] = []
    first_frame: list[float] = []
    watches: list[CameraWatch] = []
    for i, url in enumerate(urls):
        source = StreamSource(
            url,
            fps=fps,
            private_hosts=("127.0.0.1",),
            gate=MotionGate() if gate else MotionGate(pixel_delta=-1),  # -1: every pixel "moved"
            idle_keyframes=idle_keyframes,
        )
        watches.append(
            CameraWatch(
                f"cam-{i}",
                source,
                VehicleTracker(settings),
                on_event=lambda body, event: events.append((time.monotonic(), body)),
            )
        )

    def read(frame: np.ndarray) -> list:
        with lock:
            return recognizer.read([frame], min_score=settings.min_score)[0]

    process = psutil.Process()
    cpu0, t0 = process.cpu_times(), time.monotonic()
    deadline = t0 + seconds
    threads = []
    for w in watches:
        w.source.start()
        threads.append(threading.Thread(target=w.run, args=(read, lambda: time.monotonic() >= deadline)))
        threads[-1].start()
    peak_rss = 0
    car_frame = round(CAR_FROM_S * FPS)  # the first with the car (frames come in a burst at first)
    while time.monotonic() < deadline:  # when the car's first frame was decoded, memory
        if not first_frame and watches[0].source.stats.frames_decoded >= car_frame:
            first_frame.append(time.monotonic())
        peak_rss = max(peak_rss, process.memory_info().rss)
        time.sleep(0.005)
    for t in threads:
        t.join()
    cpu1, wall = process.cpu_times(), time.monotonic() - t0
    for w in watches:
        w.source.stop()
    stats = [w.source.stats for w in watches]
    row = Row(
        name,
        len(urls),
        wall,
        (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        sum(s.frames_decoded for s in stats),
        sum(s.samples for s in stats),
        sum(s.samples_moving for s in stats),
        sum(w.reads for w in watches),
        sum(s.dropped for s in stats),
        [(t - t0, body) for t, body in events],
        first_frame[0] - t0 if first_frame else None,
        peak_rss / 2**20,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="Each row's length (idle rows).")
    parser.add_argument("--idle-cameras", type=int, default=4)
    parser.add_argument("--fps", type=float, default=Settings.camera_fps, help="Frames sampled a second.")
    parser.add_argument("--clips", type=Path, help="Keep the clips in this folder (made once: minutes).")
    args = parser.parse_args()
    rtsp_available()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")
    register_model_kinds()
    settings = Settings.from_env()
    recognizer = _plate_recognizer(settings.detector_model, settings.ocr_model)
    recognizer.read([np.zeros((SIZE[1], SIZE[0], 3), np.uint8)])  # ONNX Runtime's first-run set-up
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.clips or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        busy, idle = folder / f"busy-{CAR_FROM_S:g}s.mkv", folder / f"idle-{args.seconds + 10:g}s.mkv"
        print("making the clips (1920x1080, 25 fps, H.264) ...", flush=True)
        if not busy.exists():
            gate_clip(
                busy, fps=FPS, size=SIZE, still_s=CAR_FROM_S, passing_s=CAR_FOR_S, after_s=5.0, gop=2 * FPS
            )
        if not idle.exists():
            idle_clip(idle, args.seconds + 10)
        servers = [RtspServer(busy)] + [RtspServer(idle) for _ in range(args.idle_cameras)]
        for server in servers:
            server.start()
        try:
            busy_s = CAR_FROM_S + CAR_FOR_S + 4.5  # the clip, less the last half second
            rows = [
                watch("busy: a car passes", [servers[0].url], busy_s, args.fps, recognizer),
                watch("idle", [servers[1].url], args.seconds, args.fps, recognizer),
                watch(
                    f"idle x{args.idle_cameras}",
                    [s.url for s in servers[1:]],
                    args.seconds,
                    args.fps,
                    recognizer,
                ),
                watch(
                    "idle, motion gate off", [servers[1].url], args.seconds, args.fps, recognizer, gate=False
                ),
                watch(
                    "busy, keyframes when idle",
                    [servers[0].url],
                    busy_s,
                    args.fps,
                    recognizer,
                    idle_keyframes=True,
                ),
                watch(
                    "idle, keyframes when idle",
                    [servers[1].url],
                    args.seconds,
                    args.fps,
                    recognizer,
                    idle_keyframes=True,
                ),
            ]
        finally:
            for server in servers:
                server.stop()
    report(rows, args)


def report(rows: list[Row], args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]  # other work on the machine shows here: then read the ratios
    print(f"\n{describe_machine()}; load average {load:.1f} at the end (1 min).")
    print("Stream: 1920x1080 H.264 at 25 fps,")
    print(f"served in real time over RTSP; sampled at {args.fps:g} frames/s, only moving samples read.\n")
    print(
        "| row | cameras | decoded fr/s | read fr/s | moving samples | dropped | CPU per camera | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = r.wall_s * r.cameras
        print(
            f"| {r.name} | {r.cameras} | {r.decoded / per:.1f} | {r.reads / per:.2f} "
            f"| {r.moving}/{r.samples} | {r.dropped} | {r.cpu_per_camera:.3f} cores "
            f"| {r.peak_rss_mb:.0f} MB |"
        )
    busy, idle, many, ungated, busy_keys, idle_keys = rows
    plate = plate_text()
    hits = [(t, body) for t, body in busy.events if body["plate"] == plate]
    car_at = busy.car_at if busy.car_at is not None else CAR_FROM_S
    print()
    if hits:
        t, body = hits[0]
        after_first, after_last = t - car_at, t - car_at - CAR_FOR_S
        print(f"busy: event {body['plate']} (score {body['score']}, {body['frames_read']} frames read)")
        print(f"  {after_first:.2f} s after the car's first frame, {after_last:.2f} s after its last")
        print("  (a track ends track_max_gap_s after its last reading)")
    else:
        print(f"busy: NO event for {plate}: {[b['plate'] for _, b in busy.events]}")
    decode = idle.cpu_s / idle.decoded  # CPU a decoded (and, 1 in 5, gated) frame, reads negligible
    read_cpu = (busy.cpu_s - decode * busy.decoded) / max(1, busy.reads)
    busy_cam = decode * 25 + args.fps * read_cpu
    print(
        f"CPU: {decode * 1000:.1f} ms a decoded frame (idle row), {read_cpu * 1000:.0f} ms a read (busy row)"
    )
    idle_cam = idle.cpu_per_camera
    print(
        f"motion gate: an idle camera needs {idle_cam:.3f} cores; reading all {args.fps:g} samples a second"
    )
    print(f"  would need {busy_cam:.2f} ({busy_cam / idle_cam:.0f}x; the gate-off row, starved, read only")
    print(f"  {ungated.reads / ungated.wall_s:.2f} a second at {ungated.cpu_per_camera:.3f} cores)")
    print(f"{args.idle_cameras} idle cameras at once: {many.cpu_per_camera / idle_cam:.2f}x one's CPU each")
    idle_held, busy_held = USABLE_CORES / many.cpu_per_camera, USABLE_CORES / busy_cam
    print(f"one replica ({USABLE_CORES} of 2 cores usable): ~{idle_held:.0f} idle cameras,")
    print(f"  or ~{busy_held:.1f} with a car in view all the time ({busy_cam:.2f} cores each)")
    keys_hits = [(t, b) for t, b in busy_keys.events if b["plate"] == plate]
    # Frames are skipped there, so the car's arrival is the busy row's (the same clip and server).
    keys_event = (
        f"{keys_hits[0][1]['plate']} {keys_hits[0][0] - car_at:.2f} s after its first frame"
        if keys_hits
        else "NO event"
    )
    print(f"keyframes only when idle: an idle camera {idle_keys.cpu_per_camera:.3f} cores")
    print(f"  ({idle.cpu_per_camera / idle_keys.cpu_per_camera:.1f}x less); the car: {keys_event}")
    print(f"RSS of this process at the end: {psutil.Process().memory_info().rss / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
