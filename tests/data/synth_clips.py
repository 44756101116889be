"""Seeded short clips of cars passing a camera, made from real photos, labels known by construction.

    clip = make_clip(seed=1, index=0)        # SynthClip: MP4 bytes, fps, every vehicle's plate and boxes
    python tests/data/synth_clips.py /tmp/clips --seed 1 --clips 40   # MP4s and labels.csv

The background is a real photo (Ultralytics' bus.jpg or zidane.jpg) seen by a camera that pans
and zooms a little over the clip. Each vehicle is a car-coloured body carrying a plate: a real
plate crop (fast-plate-ocr's AD 799 KB, KRW 301) one time in five, else a plate drawn by
synth_plates.py in one of its formats (text known). A vehicle either approaches (its plate grows
from ~14 to ~50 px high as it comes down the frame) or crosses (left to right or back, at a
fixed size); with two or three vehicles, they cross each other. Per clip: motion blur along the
travel, optical blur, sensor noise, JPEG at low quality on some frames, a lamp post that
partly hides plates passing behind it, and H.264 at a drawn quality. Every draw comes from a
generator seeded by (seed, index): a seed gives the same clips byte for byte.

Needs numpy, Pillow, opencv-python, PyAV and synth_plates.py's fonts.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from tests.assets import asset
from tests.data import synth_plates
from tests.scenes import PLATES as REAL_PLATES

SIZE = (1280, 720)
FPS = 10  # many plate cameras run at 10-15 fps; the reader samples 5/s of it
FRAMES = 32  # 3.2 s: a car crossing a gate
BACKGROUNDS = ("bus", "zidane")
REAL_SHARE = 0.2  # vehicles carrying a real plate crop
FORMATS = ("uk", "de", "fr", "it", "es", "nl", "pl", "us", "br")  # one-row formats synth_plates draws


@dataclass(frozen=True)
class Vehicle:
    plate: str
    motion: str  # approaching, right, left
    boxes: dict[int, tuple[int, int, int, int]] = field(repr=False)  # frame -> plate box, when in view

    def box_at(self, t: float, fps: float) -> tuple[int, int, int, int] | None:
        return self.boxes.get(round(t * fps))


@dataclass(frozen=True)
class SynthClip:
    data: bytes = field(repr=False)  # MP4 (H.264)
    fps: int
    vehicles: tuple[Vehicle, ...]
    conditions: tuple[str, ...]


@functools.cache
def _backgrounds() -> list[np.ndarray]:
    return [np.asarray(Image.open(asset(name)).convert("RGB"), np.float32) for name in BACKGROUNDS]


@functools.cache
def _real_plates() -> list[tuple[np.ndarray, str]]:
    return [
        (np.asarray(Image.open(asset(name)).convert("RGB"), np.float32), text)
        for name, text in REAL_PLATES.items()
    ]


@functools.cache
def _fonts() -> list[str]:
    return synth_plates.find_fonts()


def _plate(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if rng.random() < REAL_SHARE:
        return synth_plates.pick(rng, _real_plates())
    available = [f for f in FORMATS if f in synth_plates.FORMATS]
    fmt = synth_plates.FORMATS[synth_plates.pick(rng, available)]
    rows = synth_plates.plate_text(fmt, rng)
    image = synth_plates.render_plate(fmt, rows, rng, _fonts())
    return image, re.sub("[^A-Z0-9]", "", "".join(rows))


def _paths(count: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray, int, int]]:
    """Per vehicle: motion, centre (x, y) and plate height per frame, first and last frame."""
    w, h = SIZE
    t = np.arange(FRAMES, dtype=np.float64)
    paths = []
    motions = ["approaching"] if count == 1 and rng.random() < 0.6 else []
    while len(motions) < count:
        motions.append("right" if len(motions) % 2 == 0 else "left")
    for k, motion in enumerate(motions):
        first = int(rng.integers(0, 5)) if k == 0 else int(rng.integers(0, 10))
        last = min(FRAMES - 1, first + int(rng.integers(22, 30)))
        s = np.clip((t - first) / max(last - first, 1), 0, 1)
        if motion == "approaching":
            x = rng.uniform(0.3, 0.7) * w + rng.uniform(-0.1, 0.1) * w * s
            y = (0.35 + 0.45 * s) * h
            height = rng.uniform(12, 16) + (rng.uniform(40, 56) - 14) * s**1.5
        else:
            row = rng.uniform(0.45, 0.7) * h + 30 * k
            start, end = (-0.1 * w, 1.1 * w) if motion == "right" else (1.1 * w, -0.1 * w)
            x = start + (end - start) * s
            y = np.full_like(t, row)
            height = np.full_like(t, rng.uniform(20, 40))
        paths.append((motion, np.stack([x, y], 1), height, first, last))
    return paths


def make_clip(seed: int, index: int) -> SynthClip:
    rng = np.random.default_rng([seed, index, 7])
    count = int(synth_plates.pick(rng, (1, 1, 1, 2, 2, 3)))
    photo = synth_plates.pick(rng, _backgrounds())
    plates = [_plate(rng) for _ in range(count)]
    colours = [synth_plates.pick(rng, synth_plates.CAR_COLOURS) for _ in range(count)]
    paths = _paths(count, rng)
    # The camera: a window of the photo that pans and zooms over the clip.
    zoom0, zoom1 = rng.uniform(0.75, 0.95), rng.uniform(0.7, 0.95)
    pan = rng.uniform(-0.08, 0.08, 2)
    blur = rng.uniform(0.0, 1.4)  # optical, sigma in px
    noise = rng.uniform(0.0, 8.0)
    jpeg_share = rng.uniform(0.0, 0.6)  # frames passed through JPEG at quality 15-45
    motion_blur = rng.random() < 0.6
    pole = rng.random() < 0.5  # a lamp post in front: plates passing behind it are half hidden
    pole_x, pole_w = rng.uniform(0.3, 0.7) * SIZE[0], rng.uniform(12, 30)
    crf = int(rng.integers(24, 34))
    conditions = [
        f"blur={blur:.1f}",
        f"noise={noise:.0f}",
        f"jpeg={jpeg_share:.2f}",
        f"crf={crf}",
        *(["motion-blur"] if motion_blur else []),
        *(["pole"] if pole else []),
    ]
    boxes: list[dict[int, tuple[int, int, int, int]]] = [{} for _ in range(count)]
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for f in range(FRAMES):
            s = f / (FRAMES - 1)
            frame = _camera(photo, zoom0 + (zoom1 - zoom0) * s, pan * s)
            for v in sorted(range(count), key=lambda v: paths[v][2][f]):  # nearer (larger) in front
                motion, centre, height, first, last = paths[v]
                if not first <= f <= last:
                    continue
                box = _draw_vehicle(frame, plates[v][0], colours[v], centre[f], height[f])
                if box is not None:
                    boxes[v][f] = box
                    if motion_blur:
                        speed = np.linalg.norm(centre[min(f + 1, FRAMES - 1)] - centre[max(f - 1, 0)]) / 2
                        _motion_blur(frame, box, speed * 0.2, horizontal=motion != "approaching")
            if pole:
                frame[:, int(pole_x) : int(pole_x + pole_w)] = (70, 72, 75)
            if blur > 0.3:
                frame = cv2.GaussianBlur(frame, (0, 0), blur)
            frame = frame + rng.standard_normal(frame.shape, dtype=np.float32) * noise
            pixels = np.clip(frame, 0, 255).astype(np.uint8)
            if rng.random() < jpeg_share:
                pixels = _jpeg(pixels, int(rng.integers(15, 45)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    vehicles = tuple(Vehicle(plates[v][1], paths[v][0], boxes[v]) for v in range(count))
    return SynthClip(out.getvalue(), FPS, vehicles, tuple(conditions))


def _camera(photo: np.ndarray, zoom: float, pan: np.ndarray) -> np.ndarray:
    ph, pw = photo.shape[:2]
    scale = zoom * min(pw / SIZE[0], ph / SIZE[1])
    ww, wh = SIZE[0] * scale, SIZE[1] * scale
    x = np.clip((pw - ww) / 2 + pan[0] * pw, 0, pw - ww)
    y = np.clip((ph - wh) / 2 + pan[1] * ph, 0, ph - wh)
    window = photo[int(y) : int(y + wh), int(x) : int(x + ww)]
    return cv2.resize(window, SIZE, interpolation=cv2.INTER_AREA)


def _draw_vehicle(
    frame: np.ndarray, plate: np.ndarray, colour: tuple[int, int, int], centre: np.ndarray, height: float
) -> tuple[int, int, int, int] | None:
    """A car body with the plate on it; the plate's box clipped to the frame, None if out of view."""
    ph = float(height)
    pw = ph * plate.shape[1] / plate.shape[0]
    cx, cy = float(centre[0]), float(centre[1])
    body = (cx - 1.6 * pw, cy - 3.2 * ph, cx + 1.6 * pw, cy + 1.2 * ph)
    x0, y0 = max(0, int(body[0])), max(0, int(body[1]))
    x1, y1 = min(SIZE[0], int(body[2])), min(SIZE[1], int(body[3]))
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = colour
        frame[y0 : y0 + max(1, (y1 - y0) // 3), x0:x1] = np.array(colour, np.float32) * 0.45  # the windscreen
    quad = np.array(
        [
            [cx - pw / 2, cy - ph / 2],
            [cx + pw / 2, cy - ph / 2],
            [cx + pw / 2, cy + ph / 2],
            [cx - pw / 2, cy + ph / 2],
        ]
    )
    box = (int(cx - pw / 2), int(cy - ph / 2), int(cx + pw / 2), int(cy + ph / 2))
    visible = (max(0, box[0]), max(0, box[1]), min(SIZE[0], box[2]), min(SIZE[1], box[3]))
    if visible[2] - visible[0] < 0.6 * pw or visible[3] - visible[1] < 0.9 * ph:
        if visible[2] > visible[0] and visible[3] > visible[1]:
            synth_plates.paste(frame, plate, quad)
        return None  # mostly out of frame: no label
    synth_plates.paste(frame, plate, quad)
    return visible


def _motion_blur(
    frame: np.ndarray, box: tuple[int, int, int, int], length: float, *, horizontal: bool
) -> None:
    n = round(length)
    if n < 2:
        return
    kernel = np.zeros((n, n), np.float32)
    if horizontal:
        kernel[n // 2, :] = 1 / n
    else:
        kernel[:, n // 2] = 1 / n
    x0, y0, x1, y1 = box
    m = n
    ya, yb, xa, xb = max(0, y0 - m), min(SIZE[1], y1 + m), max(0, x0 - m), min(SIZE[0], x1 + m)
    frame[ya:yb, xa:xb] = cv2.filter2D(frame[ya:yb, xa:xb], -1, kernel)


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clips", type=int, default=40)
    args = parser.parse_args()
    args.target.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(args.clips):
        clip = make_clip(args.seed, index)
        name = f"clip-{args.seed}-{index:03d}.mp4"
        (args.target / name).write_bytes(clip.data)
        for v in clip.vehicles:
            frames = sorted(v.boxes)
            rows.append(
                (
                    name,
                    v.plate,
                    v.motion,
                    frames[0] if frames else "",
                    frames[-1] if frames else "",
                    ";".join(clip.conditions),
                )
            )
    with open(args.target / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("filename", "plate", "motion", "first_frame", "last_frame", "conditions"))
        writer.writerows(rows)
    print(f"{args.clips} clips, {len(rows)} vehicles in {args.target}")


if __name__ == "__main__":
    main()
