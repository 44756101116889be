"""The YOLO plate detector on ONNX Runtime (services/plate_reader/detector.py), real weights."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from services.plate_reader.detector import PlateDetector
from tests.scenes import iou, plate_on_street


def test_a_photos_plates_do_not_depend_on_the_other_photos_in_its_batch(
    plate_models: dict[str, Path],
) -> None:
    # Two cameras' shapes in one served batch: a 1280x720 frame (640x384 at the detector) and
    # a 1080x1080 one (640x640). Letterboxed to one shape, the wide photo's boxes and scores
    # came out different from its own call, so a plate's reading depended on the other photo.
    detector = PlateDetector(plate_models["plate-detector"])
    scenes = [
        plate_on_street(canvas=(1280, 720), at=(500, 450), scale=1.5),
        plate_on_street(canvas=(1080, 1080)),
    ]
    photos = [np.asarray(Image.open(io.BytesIO(scene.jpeg)).convert("RGB")) for scene in scenes]
    alone = [detector.detect([photo])[0] for photo in photos]
    assert detector.detect(photos) == alone
    for scene, found in zip(scenes, alone):  # and each finds its plate
        assert max(iou((d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax), scene.box) for d in found) > 0.5
