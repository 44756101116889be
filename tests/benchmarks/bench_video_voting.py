"""Does voting across frames pay? Per-vehicle exact reads by voting vs the best single frame.

    nice -n 10 python tests/benchmarks/bench_video_voting.py --seed 1 --clips 60 --tune   # dev
    nice -n 10 python tests/benchmarks/bench_video_voting.py --seed 1 --clips 40 --diagnose  # why
    nice -n 10 python tests/benchmarks/bench_video_voting.py --seed 4 --clips 30          # test
    nice -n 10 python tests/benchmarks/bench_video_voting.py --decode   # PyAV vs OpenCV, 1080p

Clips come from tests/data/synth_clips.py (seeded; real photos, pan and zoom, blur, JPEG, a
lamp post hiding plates, several cars crossing). Every clip goes through the served code:
video_decoding.open_clip (frames sampled at video_sample_fps), PlateRecognizer.read_batch (the
default models from the model store, the service's settings) and vehicle_tracks.VehicleTracker.

Per ground-truth vehicle, on the same frames:
- voting: the vehicle's event (the one with most frames, when a track split) is exact when its
  plate is the label; it is auto-accepted when `review` is false;
- best single frame: of every frame read whose box overlaps the vehicle's (IoU >= 0.3), the
  reading with the highest score, as a photo read of that frame would answer it; exact and
  auto-accepted the same way.
Auto-accepted precision counts every accepted answer: for voting, every event, a fragment of a
split track or an event matching no vehicle included.

--diagnose prints, per vehicle, why the vote is not right (never boxed; boxed but no frame reads
the plate; frames right but more weight on another plate; a split track; lengths differ), and
per kind of vehicle (approaching or crossing, with or without motion blur) how many were boxed,
read right on some frame (the most any vote over these readings can reach), by the best frame
and by the vote. On seed 1 (dev, 65 vehicles) some frame reads 35.4% of them exactly, the best
frame 32.3%, the vote 33.8%: the +15 points the issue asks for are out of reach of any vote over
these readings; 32 of the 65 are cars crossing with motion blur, none read right on any frame
(services/plate_reader/README.md, "Does voting pay?", has every seed's figures).

The readings of each clip are cached (--cache), so --tune re-runs only tracking and voting:
it prints the table for a grid of plate_voting's AGREE_GAIN and SUPPORT_POWER. Tune on a dev
seed, report on another.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import numpy as np

from services.core.model_store import resolve
from services.plate_reader import plate_voting
from services.plate_reader.pipeline import PlateRecognizer
from services.plate_reader.settings import Settings
from services.plate_reader.types import PlateReading, ReadRequest
from services.plate_reader.vehicle_tracks import VehicleEvent, VehicleTracker
from services.plate_reader.video_decoding import open_clip
from tests.benchmarks.machine import describe_machine
from tests.data.synth_clips import SynthClip, make_clip
from tests.scenes import iou

SETTINGS = Settings(store_images=False)  # the service's defaults; crops are not needed here
MATCH_IOU = 0.3
# A frame's size without its pixels: the tracker's crops are off (store_images=False).
NO_FRAME = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (720, 1280, 3))


@dataclasses.dataclass
class ClipReads:
    clip: SynthClip
    frames: list[tuple[float, list[PlateReading]]]


def recognizer() -> PlateRecognizer:
    return PlateRecognizer.from_files(
        resolve("plate-detector:latest").path_of("model.onnx"),
        resolve("plate-ocr:latest").path_of("model.onnx"),
        review_threshold=SETTINGS.review_threshold,
        detector_imgsz=SETTINGS.detector_imgsz,
        retry_imgsz=SETTINGS.detector_retry_imgsz,
        tile=SETTINGS.detector_tile,
        text_detector_path=resolve("plate-text-detector:latest").path_of("model.onnx"),
    )


def read_clips(seed: int, count: int, cache: Path) -> tuple[list[ClipReads], float, int]:
    """Every clip's sampled frames read (cached per clip); seconds spent reading, frames read."""
    reader, spent, frames_read, out = None, 0.0, 0, []
    for index in range(count):
        path = cache / f"clip-{seed}-{index:03d}.pickle"
        if path.exists():
            out.append(pickle.loads(path.read_bytes()))
            continue
        reader = reader or recognizer()
        clip = make_clip(seed, index)
        started = time.perf_counter()
        opened = open_clip(clip.data, SETTINGS)
        frames: list[tuple[float, list[PlateReading]]] = []
        for chunk in opened.sampled(4):
            readings = reader.read_batch([ReadRequest(frame, SETTINGS.min_score) for _, frame in chunk])
            frames += [(t, plates) for (t, _), plates in zip(chunk, readings)]
        opened.close()
        spent += time.perf_counter() - started
        frames_read += len(frames)
        reads = ClipReads(clip, frames)
        path.write_bytes(pickle.dumps(reads))
        out.append(reads)
    return out, spent, frames_read


def vehicle_of(box: tuple[int, int, int, int], t: float, reads: ClipReads) -> int | None:
    best, which = MATCH_IOU, None
    for v, vehicle in enumerate(reads.clip.vehicles):
        truth = vehicle.box_at(t, reads.clip.fps)
        if truth is not None and iou(box, truth) >= best:
            best, which = iou(box, truth), v
    return which


def event_vehicle(event: VehicleEvent, reads: ClipReads) -> int | None:
    box = (event.box.xmin, event.box.ymin, event.box.xmax, event.box.ymax)
    best, which = MATCH_IOU, None
    for t, _ in reads.frames:
        if event.first_seen <= t <= event.last_seen:
            v = vehicle_of(box, t, reads)
            if v is not None:
                score = iou(box, reads.clip.vehicles[v].box_at(t, reads.clip.fps) or (0, 0, 0, 0))
                if score >= best:
                    best, which = score, v
    return which


def track(reads: ClipReads) -> list[VehicleEvent]:
    """The clip's vehicle events, tracked and voted from its cached readings."""
    tracker = VehicleTracker(SETTINGS)
    events: list[VehicleEvent] = []
    for t, plates in reads.frames:
        events += tracker.update(t, plates, NO_FRAME)
    return events + tracker.flush()


def evaluate(clips: list[ClipReads]) -> dict[str, float]:
    vehicles = 0
    vote_exact = vote_accepted = vote_accepted_right = 0
    single_exact = single_accepted = single_accepted_right = 0
    frame_accepted = frame_accepted_right = 0
    splits = 0
    for reads in clips:
        events = track(reads)
        truth = reads.clip.vehicles
        by_vehicle: dict[int, list[VehicleEvent]] = {}
        for event in events:
            v = event_vehicle(event, reads)
            right = v is not None and event.plate == truth[v].plate
            if not event.review:
                vote_accepted += 1
                vote_accepted_right += right
            if v is not None:
                by_vehicle.setdefault(v, []).append(event)
        best_single: dict[int, PlateReading] = {}
        for t, plates in reads.frames:
            for r in plates:
                v = vehicle_of((r.box.xmin, r.box.ymin, r.box.xmax, r.box.ymax), t, reads)
                if v is None or not r.plate:
                    continue
                if not r.review:
                    frame_accepted += 1
                    frame_accepted_right += r.plate == truth[v].plate
                if v not in best_single or r.score > best_single[v].score:
                    best_single[v] = r
        for v, vehicle in enumerate(truth):
            vehicles += 1
            mine = by_vehicle.get(v, [])
            splits += max(0, len(mine) - 1)
            if mine:
                main_event = max(mine, key=lambda e: e.frames_read)
                vote_exact += main_event.plate == vehicle.plate
            single = best_single.get(v)
            if single is not None:
                single_exact += single.plate == vehicle.plate
                if not single.review:
                    single_accepted += 1
                    single_accepted_right += single.plate == vehicle.plate
    return {
        "vehicles": vehicles,
        "vote_exact": 100 * vote_exact / vehicles,
        "vote_precision": 100 * vote_accepted_right / max(vote_accepted, 1),
        "vote_accepted": vote_accepted,
        "vote_accepted_right_share": 100 * vote_accepted_right / vehicles,
        "single_exact": 100 * single_exact / vehicles,
        "single_precision": 100 * single_accepted_right / max(single_accepted, 1),
        "single_accepted": single_accepted,
        "single_accepted_right_share": 100 * single_accepted_right / vehicles,
        "frame_precision": 100 * frame_accepted_right / max(frame_accepted, 1),
        "splits": splits,
    }


def diagnose(clips: list[ClipReads]) -> None:
    """Per vehicle, why the vote is not right: one cause each, the first that applies."""
    causes: dict[str, int] = {}
    lines = []
    any_right = best_right = 0
    groups: dict[str, list[int]] = {}
    for c, reads in enumerate(clips):
        events = track(reads)
        truth = reads.clip.vehicles
        mine: dict[int, list[VehicleEvent]] = {}
        for event in events:
            v = event_vehicle(event, reads)
            if v is not None:
                mine.setdefault(v, []).append(event)
        seen: dict[int, list[tuple[float, PlateReading]]] = {}
        for t, plates in reads.frames:
            for r in plates:
                v = vehicle_of((r.box.xmin, r.box.ymin, r.box.xmax, r.box.ymax), t, reads)
                if v is not None:
                    seen.setdefault(v, []).append((t, r))
        for v, vehicle in enumerate(truth):
            in_view = sum(vehicle.box_at(t, reads.clip.fps) is not None for t, _ in reads.frames)
            read = seen.get(v, [])
            events_v = sorted(mine.get(v, []), key=lambda e: -e.frames_read)
            voted = events_v[0].plate if events_v else ""
            right = [r for _, r in read if r.plate == vehicle.plate]
            in_candidates = any(vehicle.plate in (c.plate for c in r.candidates) for _, r in read)
            best = max((r for _, r in read if r.plate), key=lambda r: r.score, default=None)
            lengths = {len(r.plate) for _, r in read if r.plate}
            weight: dict[str, float] = {}
            for _, r in read:
                weight[r.plate] = weight.get(r.plate, 0.0) + max(r.score, plate_voting.MIN_WEIGHT)
            heaviest = max(weight, key=lambda p: weight[p], default="")
            any_right += bool(right)
            best_right += best is not None and best.plate == vehicle.plate
            if voted == vehicle.plate:
                cause = "vote right" + (" (best frame wrong)" if best and best.plate != vehicle.plate else "")
            elif not read:
                cause = "never detected"
            elif not right:
                cause = "no frame right" + (", label in candidates" if in_candidates else "")
            elif not events_v:
                cause = "frames right, no event"
            elif len(events_v) > 1 and any(e.plate == vehicle.plate for e in events_v[1:]):
                cause = "frames right, split: the right part lost"
            elif heaviest != vehicle.plate:
                cause = "frames right, more weight on another plate"
            elif len(lengths) > 1:
                cause = "frames right, vote wrong (lengths differ)"
            else:
                cause = "frames right, vote wrong"
            causes[cause] = causes.get(cause, 0) + 1
            blurred = "motion-blur" in reads.clip.conditions
            kind = "approaching" if vehicle.motion == "approaching" else "crossing"
            group = groups.setdefault(f"{kind}, {'motion blur' if blurred else 'no motion blur'}", [0] * 5)
            group[0] += 1
            group[1] += bool(read)
            group[2] += bool(right)
            group[3] += best is not None and best.plate == vehicle.plate
            group[4] += voted == vehicle.plate
            if not cause.startswith("vote right") or "best frame wrong" in cause:
                frames = " ".join(
                    f"{r.plate or '-'}:{r.score:.2f}:{r.box.height}"
                    for _, r in sorted(read, key=lambda x: x[0])
                )
                lines.append(
                    f"clip {c:3d} {vehicle.motion:11s} {vehicle.plate:9s} voted {voted or '-':9s} "
                    f"events {len(events_v)} in view {in_view} read {len(read)} | {cause} | {frames}"
                )
    print("\n".join(lines))
    total = sum(causes.values())
    print(
        f"vehicles {total}: some frame reads the plate {100 * any_right / total:.1f}% "
        f"(the most a vote over these readings can reach), the best frame {100 * best_right / total:.1f}%"
    )
    print(f"{'cause':48s} {'vehicles':>8s} {'%':>6s}")
    for cause, n in sorted(causes.items(), key=lambda kv: -kv[1]):
        print(f"{cause:48s} {n:8d} {100 * n / total:6.1f}")
    print(
        f"\n{'vehicles':36s} {'count':>6s} {'boxed':>6s} {'a frame right':>14s} "
        f"{'best frame':>10s} {'vote':>6s}"
    )
    for name, (n, boxed, some, best_n, vote_n) in sorted(groups.items()):
        print(f"{name:36s} {n:6d} {boxed:6d} {some:14d} {best_n:10d} {vote_n:6d}")


def print_table(rows: list[tuple[str, dict[str, float]]]) -> None:
    print(
        f"{'':36s} {'vehicles':>8s} {'exact %':>8s} {'accepted':>8s} {'acc. prec. %':>12s} "
        f"{'acc.+right %':>12s} {'split tracks':>12s}"
    )
    for label, m in rows:
        print(
            f"{label + ' voting':36s} {m['vehicles']:8.0f} {m['vote_exact']:8.1f} {m['vote_accepted']:8.0f} "
            f"{m['vote_precision']:12.1f} {m['vote_accepted_right_share']:12.1f} {m['splits']:12.0f}"
        )
        print(
            f"{label + ' best single frame':36s} {m['vehicles']:8.0f} {m['single_exact']:8.1f} "
            f"{m['single_accepted']:8.0f} {m['single_precision']:12.1f} "
            f"{m['single_accepted_right_share']:12.1f} {'':>12s}"
        )


def decode_speed() -> None:
    import io

    import av
    import cv2

    from tests.data.synth_clips import _backgrounds

    path = Path("/tmp/bench_video_1080p.mp4")
    base = cv2.resize(_backgrounds()[0], (1920, 1080)).astype(np.uint8)
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for k in range(250):  # 10 s, the scene panning
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.roll(base, 4 * k, axis=1), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path.write_bytes(out.getvalue())

    def pyav(every: int) -> float:
        started, k = time.perf_counter(), 0
        with av.open(str(path)) as c:
            c.streams.video[0].thread_type = "AUTO"
            for frame in c.decode(video=0):
                if k % every == 0:
                    frame.to_ndarray(format="rgb24")
                k += 1
        return k / (time.perf_counter() - started)

    def opencv(every: int) -> float:
        started, k, capture = time.perf_counter(), 0, cv2.VideoCapture(str(path))
        while True:
            if k % every == 0:
                ok, frame = capture.read()
                if ok:
                    cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            else:
                ok = capture.grab()
            if not ok:
                break
            k += 1
        return k / (time.perf_counter() - started)

    print(f"{'1080p H.264, 250 frames':28s} {'PyAV fps':>10s} {'OpenCV fps':>10s} {'ratio':>6s}")
    for every in (1, 5):
        a, b = pyav(every), opencv(every)
        print(f"{'RGB every ' + str(every) + ' frame(s)':28s} {a:10.1f} {b:10.1f} {a / b:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_video_voting"))
    parser.add_argument("--tune", action="store_true", help="a grid of the vote's constants (dev seed)")
    parser.add_argument("--diagnose", action="store_true", help="per vehicle, why the vote fails (dev seed)")
    parser.add_argument("--decode", action="store_true", help="only PyAV vs OpenCV decoding speed")
    args = parser.parse_args()
    print(describe_machine())
    if args.decode:
        decode_speed()
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    clips, spent, frames = read_clips(args.seed, args.clips, args.cache)
    if frames:
        print(
            f"read {frames} sampled frames in {spent:.1f} s: {frames / spent:.1f} frames/s (shared machine)"
        )
    print(f"seed {args.seed}, {len(clips)} clips, sampled at {SETTINGS.video_sample_fps}/s")
    if args.diagnose:
        diagnose(clips)
        return
    if not args.tune:
        print_table([(f"seed {args.seed}", evaluate(clips))])
        return
    rows = []
    for gain, power in itertools.product((0.0, 0.1, 0.2, 0.35, 0.5), (0.5, 1.0)):
        plate_voting.AGREE_GAIN, plate_voting.SUPPORT_POWER = gain, power
        rows.append((f"gain {gain} power {power}", evaluate(clips)))
    print_table(rows)


if __name__ == "__main__":
    main()
