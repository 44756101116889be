"""Real test images, taken out of pinned packages on the registry (checksummed, cached).

plate = asset("plate_ad799kb")   # a real plate crop, text "AD 799 KB"
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from services.core.sources import CACHE_DIR, PackageFile

ASSETS: dict[str, PackageFile] = {
    # fast-plate-ocr's own test crops (MIT): real plates, labels known.
    "plate_ad799kb": PackageFile(
        "fast-plate-ocr==1.1.0",
        "test/assets/test_plate_1.png",
        "672948ed215afed96f244d170237008e44a9562ac9b1d90d095f5bf4bd44baf2",
        sdist=True,
    ),
    "plate_krw301": PackageFile(
        "fast-plate-ocr==1.1.0",
        "test/assets/test_plate_2.png",
        "4fafff8be04b3b94d7a9a6ffa39c74a74fa9099ad8633f50db0886c9d4a18005",
        sdist=True,
    ),
    # Ultralytics' sample street photo (AGPL-3.0 package, used as test data only): no plates.
    "bus": PackageFile(
        "ultralytics==8.4.190",
        "ultralytics/assets/bus.jpg",
        "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63",
    ),
    # Its other sample photo (two people, no plates): a second background for detector data.
    "zidane": PackageFile(
        "ultralytics==8.4.190",
        "ultralytics/assets/zidane.jpg",
        "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb",
    ),
    # litealpr's "wild" street photos (AGPL-3.0 package, used as test data only): real traffic
    # in Ho Chi Minh City with several real plates each, taken from a car's dashboard.
    # 1.png: a car, three motorbikes and a truck ahead; 10.png: three cars ahead.
    "street_motorbikes": PackageFile(
        "litealpr==0.1.7",
        "dataset/wild/1.png",
        "c74af0623d9aca3b7c7101abcc8ea96fd46e7753726ffc11c4fca9f9b9b2c6c6",
        sdist=True,
    ),
    "street_cars": PackageFile(
        "litealpr==0.1.7",
        "dataset/wild/10.png",
        "9728dfd1926d0c7e375e330f1d0ed35d2f3f727981acaf176b1c222e20886554",
        sdist=True,
    ),
}


@functools.cache
def asset(name: str) -> Path:
    target_dir = CACHE_DIR / "test-assets" / name
    if not target_dir.exists():
        with tempfile.TemporaryDirectory() as tmp:
            fetched = ASSETS[name].fetch(Path(tmp))
            target_dir.mkdir(parents=True, exist_ok=True)
            fetched.rename(target_dir / fetched.name)
    return next(target_dir.iterdir())
