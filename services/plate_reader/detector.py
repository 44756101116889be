"""YOLO plate detector on ONNX Runtime: images in, plate boxes out. No torch.

>>> detector = PlateDetector("model.onnx")  # doctest: +SKIP
>>> detector.detect([rgb_array], min_score=0.25)  # doctest: +SKIP
[[Detection(box=BoundingBox(xmin=..., ...), confidence=0.91)]]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from services.plate_reader.onnx_session import indices_by_shape, onnx_session
from services.plate_reader.stage_timing import timed
from services.plate_reader.types import BoundingBox, Detection

STRIDE = 32  # YOLO's largest downsampling: input sides must be multiples of it
NMS_IOU = 0.5  # plates rarely overlap; a higher IoU keeps duplicate boxes


class PlateDetector:
    """Runs a YOLOv8-style detect head exported by Ultralytics (`output0`: B x (4+classes) x N)."""

    def __init__(
        self, model_path: str | Path, *, imgsz: int = 640, providers: Sequence[str] | None = None
    ) -> None:
        self.session = onnx_session(model_path, providers)
        self.input_name = self.session.get_inputs()[0].name
        self.imgsz = imgsz
        # One run at a time: ONNX Runtime's arena keeps what concurrent runs needed together, and
        # a tile search (small_plates.py) beside a batch grew the server from 751 to 1,115 MB
        # (3 requests of 8 photos of 36 Mpx: tests/e2e/test_plate_reader_hardening.py).
        self._one_run = threading.Lock()

    def detect(
        self, images: Sequence[np.ndarray], *, min_score: float = 0.25, imgsz: int | None = None
    ) -> list[list[Detection]]:
        """Detect plates in a batch of RGB uint8 images at input size ``imgsz`` (long side;
        default: the detector's own), in one ONNX Runtime call per input shape.

        Each image is letterboxed to its own shape, the smallest multiple of STRIDE that fits
        it (a 1280x720 photo runs at 640x384, not 640x640: 40% less compute), as Ultralytics
        does; images of one shape (one camera's) share a call. Padded to a larger photo's shape,
        a photo's boxes and scores would depend on the other photos in its batch."""
        if not images:
            return []
        with timed("detect"):
            scales = [(imgsz or self.imgsz) / max(image.shape[:2]) for image in images]
            resized = [_resize(image, scale) for image, scale in zip(images, scales)]
            by_shape = indices_by_shape((_round_up(r.shape[0]), _round_up(r.shape[1])) for r in resized)
            found: list[list[Detection]] = [[] for _ in images]
            for shape, indices in by_shape.items():
                output = self._run([resized[i] for i in indices], shape)
                for i, (pred, offset) in zip(indices, output):
                    found[i] = _decode(pred, scales[i], offset, images[i].shape, min_score)
            return found

    def _run(
        self, resized: Sequence[np.ndarray], shape: tuple[int, int]
    ) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """One ONNX Runtime call on images letterboxed (centred, grey 114) to ``shape``: each
        image's predictions and its (left, top) offset."""
        height, width = shape
        batch = np.full((len(resized), height, width, 3), 114, dtype=np.uint8)
        offsets = []
        for i, r in enumerate(resized):
            top, left = (height - r.shape[0]) // 2, (width - r.shape[1]) // 2
            batch[i, top : top + r.shape[0], left : left + r.shape[1]] = r
            offsets.append((left, top))
        tensor = batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        with self._one_run:
            (output,) = self.session.run(None, {self.input_name: tensor})
        return list(zip(output, offsets))


def _round_up(side: int) -> int:
    return max(STRIDE, -(-side // STRIDE) * STRIDE)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _decode(
    pred: np.ndarray, scale: float, offset: tuple[int, int], shape: tuple[int, ...], min_score: float
) -> list[Detection]:
    scores = pred[4:].max(axis=0)  # one class here, but max() keeps multi-class heads working
    keep = scores >= min_score
    if not keep.any():
        return []
    cx, cy, w, h = pred[:4, keep]
    scores = scores[keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes -= np.array([offset[0], offset[1], offset[0], offset[1]], dtype=np.float32)
    boxes /= scale
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, shape[0])
    detections = []
    for i in _nms(boxes, scores, NMS_IOU):
        x1, y1, x2, y2 = (round(v) for v in boxes[i].tolist())
        if x2 - x1 >= 2 and y2 - y1 >= 2:
            detections.append(Detection(BoundingBox(x1, y1, x2, y2), round(float(scores[i]), 4)))
    return detections


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = scores.argsort()[::-1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        xx1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = (xx2 - xx1).clip(0) * (yy2 - yy1).clip(0)
        iou = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[iou < iou_threshold]
    return keep
