"""Would deblurring frames read the motion-blurred cars that no frame of a clip reads?

    nice -n 10 python tests/benchmarks/probe_video_deblur.py --seed 1 --clips 12 --lengths 8,12,16 --k 0.01

bench_video_voting.py --diagnose showed the vote reads every vehicle some frame reads, and that
cars crossing the frame with motion blur are read on no frame. This probe takes every such car
of the seeded clips (tests/data/synth_clips.py, dev seed 1), deconvolves each sampled frame
(5 a second) with a horizontal box blur of each length (a Wiener filter, regularisation K),
reads it with the served pipeline's default models, and counts per length: frames where a
plate was boxed, frames read right, right and auto-accepted, wrong and auto-accepted, and
vehicles read right on some frame. The generator's blur is 20% of the travel per frame (10-14
px): giving the right length is an oracle no camera has, so this is an upper bound.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import av
import numpy as np

from services.core.cli import _plate_recognizer
from services.plate_reader.plate_text import normalise
from services.plate_reader.settings import Settings
from tests.benchmarks.machine import describe_machine
from tests.data.synth_clips import FPS, make_clip


def wiener(frame: np.ndarray, length: int, k: float) -> np.ndarray:
    """Undo a horizontal box blur of ``length`` px, row by row in the frequency domain."""
    width = frame.shape[1]
    kernel = np.zeros(width, np.float32)
    kernel[:length] = 1.0 / length
    spectrum = np.fft.rfft(np.roll(kernel, -(length // 2)))
    inverse = np.conj(spectrum) / (np.abs(spectrum) ** 2 + k)
    restored = np.fft.irfft(
        np.fft.rfft(frame.astype(np.float32), axis=1) * inverse[None, :, None], n=width, axis=1
    )
    return np.clip(restored, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--lengths", default="8,12,16", help="blur lengths to undo, px")
    parser.add_argument("--k", type=float, default=0.01, help="Wiener regularisation")
    args = parser.parse_args()
    settings = Settings.from_env()
    recognizer = _plate_recognizer(settings.detector_model, settings.ocr_model)  # the served models
    lengths = [0, *(int(x) for x in args.lengths.split(","))]
    step = max(1, round(FPS / settings.video_sample_fps))
    totals = {length: np.zeros(5, int) for length in lengths}
    print(describe_machine())
    for index in range(args.clips):
        clip = make_clip(args.seed, index)
        crossers = [v for v in clip.vehicles if v.motion != "approaching"]
        if "motion-blur" not in clip.conditions or not crossers:
            continue
        frames = [f.to_ndarray(format="rgb24") for f in av.open(io.BytesIO(clip.data)).decode(video=0)]
        for vehicle in crossers:
            seen = sorted(vehicle.boxes)[::step]
            for length in lengths:
                images = [frames[f] if length == 0 else wiener(frames[f], length, args.k) for f in seen]
                reads = recognizer.read(images)
                right = [any(normalise(r.plate) == vehicle.plate for r in rs) for rs in reads]
                counts = (
                    sum(bool(rs) for rs in reads),
                    sum(right),
                    sum(
                        any(normalise(r.plate) == vehicle.plate and not r.review for r in rs) for rs in reads
                    ),
                    sum(
                        any(normalise(r.plate) != vehicle.plate and not r.review for r in rs) for rs in reads
                    ),
                    int(any(right)),
                )
                totals[length] += counts
            print(f"clip {index} {vehicle.plate}: {len(seen)} frames", flush=True)
    print(f"seed {args.seed}, clips 0-{args.clips - 1}, K {args.k}")
    print("deblur | frames boxed | read right | right, accepted | wrong, accepted | vehicles read")
    for length, row in totals.items():
        print(f"{'none' if length == 0 else f'{length} px'} | " + " | ".join(str(v) for v in row))


if __name__ == "__main__":
    main()
