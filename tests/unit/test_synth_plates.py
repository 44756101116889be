"""The synthetic stress set (tests/data/synth_plates.py): reproducible, labels that fit their
format, boxes inside their photos. A 40-crop, 20-photo set takes about a second."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2", reason="opencv-python comes with the detector-training extra")
if importlib.util.find_spec("ultralytics") is None:  # find_spec: importing it would load torch
    pytest.skip("the scenes use the photos in the ultralytics wheel", allow_module_level=True)

from tests.data import synth_plates

SCRIPT = Path(synth_plates.__file__)
CROPS, PHOTOS = 40, 20
# Written out again here rather than derived from the generator's templates, so that a
# template that prints a character its format never issues (I, O, Q, vowels in NL) fails.
NL = "[BDFGHJKLNPRSTVXZ]"
VN = "[A-HK-NPS-VX-Z]"
PATTERNS = {
    "uk": r"[A-HJ-PR-Z]{2}[0-9]{2}[A-HJ-PR-Z]{3}",
    "de": r"(?=.{4,8}$)[A-Z]{2,4}[0-9]{2,4}",
    "fr": r"[A-HJ-NP-TV-Z]{2}[0-9]{3}[A-HJ-NP-TV-Z]{2}",
    "it": r"[A-HJ-NPR-TV-Z]{2}[0-9]{3}[A-HJ-NPR-TV-Z]{2}",
    "nl": "|".join(
        p.replace("C", NL)
        for p in ("99CCC9", "9CCC99", "CC999C", "C999CC", "CCC99C", "C99CCC", "9CC999", "999CC9")
    ).replace("9", "[0-9]"),
    "us": r"[0-9][A-HJ-NPR-Z]{3}[0-9]{3}|[A-HJ-NPR-Z]{3}[0-9]{4}",
    "in": r"[A-Z]{2}[0-9]{2}[A-HJ-NP-Z]{1,2}[0-9]{4}",
    "br": r"[A-Z]{3}[0-9][A-Z][0-9]{2}",
    "vn": rf"[0-9]{{2}}{VN}[0-9]{{5}}",
    "vn-2row": rf"[0-9]{{2}}{VN}[0-9A-Z][0-9]{{5}}",
}
HEADER = ["filename", "plate", "format", "split", "conditions"]
SCENE_ONLY = {"sign", "background_plate", "no_plate"}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The set, made through the command line as a user would."""
    target = tmp_path_factory.mktemp("synth")
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(target),
            "--seed",
            "3",
            "--count",
            str(CROPS),
            "--photos",
            str(PHOTOS),
        ],
        check=True,
        capture_output=True,
    )
    return target


def test_same_seed_gives_the_same_files_byte_for_byte(synth: Path, tmp_path: Path) -> None:
    synth_plates.generate(tmp_path, seed=3, crops=CROPS, photos=PHOTOS)  # in-process this time
    files = sorted(p.relative_to(synth) for p in synth.rglob("*") if p.is_file())
    assert len(files) == CROPS + PHOTOS + 3  # + two labels.csv and boxes.csv
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for name in files:
        assert (synth / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_another_seed_gives_other_plates(synth: Path, tmp_path: Path) -> None:
    synth_plates.generate(tmp_path, seed=4, crops=10, photos=0)
    other = [row["plate"] for row in read_csv(tmp_path / "crops" / "labels.csv")]
    assert other != [row["plate"] for row in read_csv(synth / "crops" / "labels.csv")][:10]


def test_every_label_fits_its_format_and_every_format_appears(synth: Path) -> None:
    assert set(PATTERNS) == set(synth_plates.FORMATS)
    rows = read_csv(synth / "crops" / "labels.csv") + read_csv(synth / "photos" / "labels.csv")
    assert len(rows) == CROPS + PHOTOS
    for row in rows:
        assert list(row) == HEADER
        if row["plate"] == "":  # a scene with no plate, only a sign
            assert row["format"] == "" and {"no_plate", "sign"} <= set(row["conditions"].split(";"))
            continue
        assert re.fullmatch(PATTERNS[row["format"]], row["plate"]), row
    assert {row["format"] for row in rows} >= set(PATTERNS)
    assert {row["split"] for row in rows} == {"dev", "test"}


def test_conditions_are_named_and_at_most_three_degradations(synth: Path) -> None:
    for folder in ("crops", "photos"):
        for row in read_csv(synth / folder / "labels.csv"):
            conditions = [c for c in row["conditions"].split(";") if c]
            assert set(conditions) <= set(synth_plates.CONDITIONS) | SCENE_ONLY, row
            assert len(set(conditions) - SCENE_ONLY) <= synth_plates.MAX_CONDITIONS, row
            if folder == "crops":
                assert not set(conditions) & SCENE_ONLY, row


def test_boxes_lie_inside_their_photos(synth: Path) -> None:
    labels = {row["filename"]: row for row in read_csv(synth / "photos" / "labels.csv")}
    boxes = read_csv(synth / "photos" / "boxes.csv")
    assert [b["filename"] for b in boxes] == list(labels)
    for box in boxes:
        width, height = Image.open(synth / "photos" / box["filename"]).size
        assert (width, height) in {(1280, 720), (960, 540)}
        if labels[box["filename"]]["plate"] == "":
            assert [box[k] for k in ("x1", "y1", "x2", "y2")] == ["", "", "", ""]
            continue
        x1, y1, x2, y2 = (int(box[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, box
        assert x2 - x1 > y2 - y1 > 4, box  # a plate is wider than high, and not a speck


def test_crops_are_plate_sized(synth: Path) -> None:
    for row in read_csv(synth / "crops" / "labels.csv"):
        width, height = Image.open(synth / "crops" / row["filename"]).size
        small = "small" in row["conditions"].split(";")
        # plate height 12-20 px (small) or 28-72 px; margins, tilt and perspective add up to ~2.4x
        assert (12 if small else 28) < height < (20 if small else 72) * 2.6, row
        assert width > 0.5 * height, row


def test_the_fonts_are_a_fixed_list_whatever_else_is_installed(tmp_path: Path, monkeypatch) -> None:
    """Chromium's fonts-liberation once changed what a seed drew: the list is explicit, and a
    font that is installed but not listed (FreeSans here) is not picked up."""
    for name, _ in synth_plates.PLATE_FONTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).symlink_to(synth_plates.FONT_ROOT / name)
    (tmp_path / "freefont").mkdir()
    (tmp_path / "freefont" / "FreeSansBold.ttf").symlink_to(
        synth_plates.FONT_ROOT / synth_plates.PLATE_FONTS[0][0]
    )
    monkeypatch.setattr(synth_plates, "FONT_ROOT", tmp_path)
    fonts = synth_plates.find_fonts()
    assert fonts == [str(tmp_path / name) for name, _ in synth_plates.PLATE_FONTS]
    assert len(fonts) == 5 and all(Path(f).is_file() for f in fonts)


def test_a_missing_font_stops_with_the_package_to_install(tmp_path: Path, monkeypatch) -> None:
    for name, package in synth_plates.PLATE_FONTS:  # DejaVu there, Liberation not
        if package.startswith("fonts-dejavu"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).symlink_to(synth_plates.FONT_ROOT / name)
    monkeypatch.setattr(synth_plates, "FONT_ROOT", tmp_path)
    with pytest.raises(SystemExit, match=r"LiberationSans-Bold\.ttf.*apt-get install fonts-liberation"):
        synth_plates.find_fonts()


HR = "[A-PR-VZ]"  # Croatian letters: no Q, W, X, Y
CAMERA_PATTERNS = {
    "br-grey": r"[A-Z]{3}[0-9]{4}",
    "br": r"[A-Z]{3}[0-9][A-Z][0-9]{2}",
    "br-moto": r"[A-Z]{3}[0-9][A-Z][0-9]{2}",
    "hr": rf"[A-Z]{{2}}[0-9]{{3,4}}{HR}{{1,2}}",
    "hr-2row": rf"[A-Z]{{2}}[0-9]{{3,4}}{HR}{{2}}",
    "sk": r"[A-Z]{2}[0-9]{3}[A-Z]{2}",
    "sk-2row": r"[A-Z]{2}[0-9]{3}[A-Z]{2}",
}


def test_camera_crops_draw_every_layout_with_its_label(tmp_path: Path) -> None:
    count = 2 * len(CAMERA_PATTERNS)
    synth_plates.generate(tmp_path, seed=6, crops=0, photos=0, camera=count)
    rows = read_csv(tmp_path / "camera" / "labels.csv")
    assert set(CAMERA_PATTERNS) == set(synth_plates.CAMERA_FORMATS)
    assert len(rows) == count and {r["format"] for r in rows} == set(CAMERA_PATTERNS)
    for row in rows:
        assert list(row) == HEADER and re.fullmatch(CAMERA_PATTERNS[row["format"]], row["plate"]), row
        conditions = {c for c in row["conditions"].split(";") if c}
        assert conditions <= set(synth_plates.CAMERA_CONDITIONS) and len(conditions) <= 3, row
        assert not {"night", "infrared"} <= conditions, row
        image = np.asarray(Image.open(tmp_path / "camera" / row["filename"]).convert("L"), dtype=float)
        assert image.shape[0] >= 8 and image.std() > 5, row  # something drawn, not a flat patch


def test_camera_crops_leave_the_other_folders_byte_for_byte(tmp_path: Path) -> None:
    synth_plates.generate(tmp_path / "without", seed=7, crops=10, photos=2, us_street=3)
    synth_plates.generate(tmp_path / "with", seed=7, crops=10, photos=2, us_street=3, camera=5)
    for folder in ("crops", "photos", "us-street"):
        for path in sorted((tmp_path / "without" / folder).iterdir()):
            assert path.read_bytes() == (tmp_path / "with" / folder / path.name).read_bytes(), path


def test_another_typeface_draws_the_same_plates_in_other_glyphs(tmp_path: Path) -> None:
    # learning_curve.py --font: a domain of plates in a typeface no training crop had
    mono = synth_plates.FONT_ROOT / "liberation" / "LiberationMono-Bold.ttf"
    if not mono.is_file():
        pytest.skip(f"{mono} not installed (Debian: fonts-liberation)")
    synth_plates.generate(tmp_path / "usual", seed=8, crops=0, photos=0, camera=6)
    synth_plates.generate(tmp_path / "mono", seed=8, crops=0, photos=0, camera=6, fonts=[str(mono)])
    usual, mono_dir = tmp_path / "usual" / "camera", tmp_path / "mono" / "camera"
    assert (usual / "labels.csv").read_text() == (mono_dir / "labels.csv").read_text()
    differ = [
        name
        for name in sorted(p.name for p in usual.glob("*.png"))
        if not np.array_equal(np.asarray(Image.open(usual / name)), np.asarray(Image.open(mono_dir / name)))
    ]
    assert len(differ) == 6, differ
