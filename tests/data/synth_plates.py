"""Generate the synthetic stress set: licence plates drawn here, labels known by construction.

    python tests/data/synth_plates.py /tmp/synth --seed 0
    modelport evaluate plates /tmp/synth/photos --split test
    modelport evaluate plates /tmp/synth/crops --crops --split test

Writes two folders, each with a ``labels.csv`` (``filename,plate,format,split,conditions``):

- ``crops/``: 400 PNG plate crops with loose margins, as a detector cuts them.
- ``us-street/`` (only with ``--us-street N``): N US plate crops as street cameras see them:
  eight states' colours, names and slogans, a registration sticker, and in 40% a dealer's
  frame printed with its name (US_STATES, DEALERS). Labelled ``us-street``; the other
  folders are the same files with or without it.
- ``camera/`` (only with ``--camera N``): N crops of what issue 19's real cameras saw, on a
  random stream of their own: Brazil's grey plates and Mercosur (two-row motorcycle plates
  too), Croatian and Slovak layouts around their coats of arms (one and two rows), at night,
  in infrared, with motion blur, tiny (10-16 px high), JPEG at quality 10-35 or seen from
  35-65 degrees (CAMERA_FORMATS, CAMERA_CONDITIONS).
- ``photos/``: 200 JPEG scenes cut from the two photos the ultralytics wheel ships (bus.jpg,
  zidane.jpg) with a plate warped in, plus ``boxes.csv`` (``filename,x1,y1,x2,y2``: the
  labelled plate's box in pixels; empty coordinates where a scene holds no plate). Some
  scenes add a sign ("EXIT", a phone number) or a second, far smaller plate: neither is
  labelled, the label is the main plate's. So boxes.csv is no detector training data.
  About 5% of scenes hold only a sign: ``plate`` and ``format`` are empty there.

``plate`` is the text normalised to A-Z0-9, two-row plates top row first; words printed on
a plate that are not its number (a US state, "BRASIL", the EU band's "D") are not in it.
The ten formats take turns, so every run of ten crops holds each once. ``conditions``
lists the degradations applied (``perspective;blur;dark``), at most three per image so a
person can still read most. ``split`` (dev/test) is a hash of seed and file name. Each
image draws from its own generator seeded by (seed, folder, index): a seed gives the same
files byte for byte, and a smaller count a prefix of a larger one. About 15 s on one core.

Needs numpy, Pillow, opencv-python, the ultralytics wheel (only for its two photos) and five
fixed fonts (PLATE_FONTS; Debian: fonts-dejavu-core fonts-dejavu-extra fonts-liberation).
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
WHITE, BLACK, NAVY, RED = (242, 242, 236), (18, 18, 18), (24, 40, 110), (175, 30, 40)
EU_BLUE, UK_YELLOW, NL_YELLOW, STAR_YELLOW = (0, 51, 153), (250, 205, 20), (240, 185, 0), (255, 204, 0)
# Where Debian puts TrueType fonts; another system can point SYNTH_PLATES_FONT_ROOT at a folder
# with the same subfolders (dejavu/, liberation/).
FONT_ROOT = Path(os.environ.get("SYNTH_PLATES_FONT_ROOT", "/usr/share/fonts/truetype"))
# Upright bold sans faces, the nearest free kin of plate fonts (DIN, FE-Schrift, Charles
# Wright): (path under FONT_ROOT, the Debian package that ships it). The list is fixed, in this
# order, and every face must be there: a font picked up because something else installed it
# (Chromium brings fonts-liberation) would change the glyphs a seed draws. The first also
# draws the small print and signs.
PLATE_FONTS = (
    ("dejavu/DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
    ("dejavu/DejaVuSansCondensed-Bold.ttf", "fonts-dejavu-extra"),
    ("dejavu/DejaVuSansMono-Bold.ttf", "fonts-dejavu-core"),
    ("liberation/LiberationSans-Bold.ttf", "fonts-liberation"),
    ("liberation/LiberationSansNarrow-Bold.ttf", "fonts-liberation"),
)
RENDER_HEIGHT = 100  # plates are drawn this many pixels high, then warped to their size
# Probability of each degradation; their sum (1.8) is the mean number drawn per image.
CONDITIONS = {
    "perspective": 0.3,
    "rotation": 0.25,
    "blur": 0.25,
    "noise": 0.25,
    "jpeg": 0.2,
    "dark": 0.12,
    "bright": 0.1,
    "small": 0.15,
    "dirt": 0.1,
    "shadow": 0.12,
}
MAX_CONDITIONS = 3  # four or more together (small+blur+jpeg+dark) leave nothing to read
SIGNS = [
    ("STOP", WHITE, RED),
    ("EXIT", WHITE, (0, 120, 60)),
    ("PARKING 2H", WHITE, EU_BLUE),
    ("0800 555 0199", BLACK, WHITE),
    ("TAXI", BLACK, UK_YELLOW),
    ("NO ENTRY", WHITE, RED),
    ("CALL 555-0142", BLACK, (235, 235, 225)),
    ("SALE 50%", RED, WHITE),
    ("ONE WAY", BLACK, WHITE),
]
CAR_COLOURS = [(30, 30, 32), (200, 200, 205), (120, 20, 25), (25, 45, 90), (235, 235, 235), (90, 95, 100)]


@dataclass(frozen=True)
class PlateFormat:
    templates: tuple[str, ...]  # A a letter, 9 a digit, P a prefix, / a row break, else printed
    letters: str  # the letters issued: most formats skip I, O, Q (read as 1, 0)
    size_mm: tuple[int, int]  # width, height: the aspect ratio
    backgrounds: tuple[RGB, ...]
    text_height: float  # character height / plate height, per row
    ink: RGB = BLACK
    prefixes: tuple[str, ...] = ()  # districts, states, provinces
    left_band: str = ""  # EU band with this country code
    right_band: tuple[str, ...] = ()  # FR department, IT province: small print, not plate text
    top_band: str = ""  # Mercosur band
    headers: tuple[str, ...] = ()  # US state name above the number, not plate text
    footers: tuple[str, ...] = ()
    header_ink: RGB = RED
    emblem: str = ""  # drawn where a template has "|": "hr" checkerboard, "sk" double cross


@dataclass(frozen=True)
class Sample:
    image: np.ndarray
    format: str  # "" for a scene without a plate
    rows: list[str]  # as printed: ["29-X5", "048.99"]
    conditions: list[str]  # in CONDITIONS' order, then what the scene adds
    box: tuple[int, int, int, int] | None = None  # photos: the plate's pixel box

    @property
    def plate(self) -> str:
        return re.sub("[^A-Z0-9]", "", "".join(self.rows))


AZ = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
VN_LETTERS = "ABCDEFGHKLMNPSTUVXYZ"
VN_PROVINCES = ("29", "30", "31", "43", "15", "36", "51", "52", "59", "61", "99")
FORMATS: dict[str, PlateFormat] = {
    "uk": PlateFormat(("AA99 AAA",), "ABCDEFGHJKLMNOPRSTUVWXYZ", (520, 111), (UK_YELLOW, WHITE), 0.7),
    "de": PlateFormat(
        ("P A 999", "P AA 99", "P AA 999", "P AA 9999", "P A 9999"),
        AZ,
        (520, 110),
        (WHITE,),
        0.66,
        prefixes=("B", "M", "HH", "K", "F", "S", "D", "DO", "KA", "HB", "N", "DD"),
        left_band="D",
    ),
    "fr": PlateFormat(
        ("AA-999-AA",),
        "ABCDEFGHJKLMNPQRSTVWXYZ",
        (520, 110),
        (WHITE,),
        0.62,
        left_band="F",
        right_band=("75", "13", "69", "33", "59", "06"),
    ),
    "it": PlateFormat(
        ("AA 999 AA",),
        "ABCDEFGHJKLMNPRSTVWXYZ",
        (520, 110),
        (WHITE,),
        0.62,
        left_band="I",
        right_band=("", "RM", "MI", "TO"),
    ),
    # sidecodes 7-14, consonants only so that no plate spells a word
    "nl": PlateFormat(
        ("99-AAA-9", "9-AAA-99", "AA-999-A", "A-999-AA", "AAA-99-A", "A-99-AAA", "9-AA-999", "999-AA-9"),
        "BDFGHJKLNPRSTVXZ",
        (520, 110),
        (NL_YELLOW,),
        0.64,
        left_band="NL",
    ),
    "us": PlateFormat(
        ("9AAA999", "AAA 9999", "AAA-9999"),
        "ABCDEFGHJKLMNPRSTUVWXYZ",
        (305, 152),
        (WHITE,),
        0.44,
        ink=NAVY,
        headers=("California", "Texas", "Ohio", "Nevada", "Arizona", "Florida"),
        footers=("dmv.ca.gov", "The Lone Star State", "Sunshine State", ""),
    ),
    "in": PlateFormat(
        ("P 99 A 9999", "P 99 AA 9999"),
        "ABCDEFGHJKLMNPQRSTUVWXYZ",
        (500, 120),
        (WHITE,),
        0.58,
        prefixes=("MH", "DL", "KA", "TN", "UP", "GJ", "RJ", "KL", "WB", "HR", "TS"),
    ),
    "br": PlateFormat(("AAA9A99",), AZ, (400, 130), (WHITE,), 0.5, top_band="BRASIL"),
    "vn": PlateFormat(("PA-999.99",), VN_LETTERS, (520, 110), (WHITE,), 0.64, prefixes=VN_PROVINCES),
    "vn-2row": PlateFormat(
        ("P-A9/999.99", "P-AA/999.99"), VN_LETTERS, (190, 140), (WHITE,), 0.36, prefixes=VN_PROVINCES
    ),
}


def pick(rng: np.random.Generator, options):
    # one draw whatever len(options) is, so the labels do not depend on the fonts installed
    return options[int(rng.random() * len(options))]


def find_fonts(root: Path | None = None) -> list[str]:
    """The PLATE_FONTS' paths under ``root`` (FONT_ROOT), in their order; SystemExit naming the
    Debian packages to install when any is missing."""
    root = FONT_ROOT if root is None else root
    missing = [(name, package) for name, package in PLATE_FONTS if not (root / name).is_file()]
    if missing:
        packages = " ".join(sorted({package for _, package in missing}))
        raise SystemExit(
            f"plate fonts missing under {root}: {', '.join(name for name, _ in missing)}; every one is "
            f"needed so that a seed draws the same glyphs everywhere. Install them: apt-get install "
            f"{packages} (or set SYNTH_PLATES_FONT_ROOT to a folder that has them)"
        )
    return [str(root / name) for name, _ in PLATE_FONTS]


def load_photos() -> list[np.ndarray]:
    spec = importlib.util.find_spec("ultralytics")  # its path only: importing it loads torch
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the background photos come from the ultralytics wheel: pip install ultralytics")
    assets = Path(spec.submodule_search_locations[0]) / "assets"
    return [np.asarray(Image.open(assets / name).convert("RGB")) for name in ("bus.jpg", "zidane.jpg")]


@functools.cache
def load_font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, 96)


def draw_text(
    image: Image.Image, text: str, font: str, box: tuple[float, ...], colour: RGB, squeeze: float = 1.0
) -> None:
    """Draw ``text`` with its ink filling the height of ``box``, condensed by ``squeeze`` and
    further to fit the box's width: DejaVu is wider than plate fonts."""
    if not text:
        return
    left, top, right, bottom = load_font(font).getbbox(text)
    mask = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(mask).text((-left, -top), text, font=load_font(font), fill=255)
    x1, y1, x2, y2 = (round(v) for v in box)
    width = min(x2 - x1, round(mask.width * (y2 - y1) / mask.height * squeeze))
    mask = mask.resize((max(width, 1), y2 - y1), Image.LANCZOS)
    image.paste(colour, (x1 + (x2 - x1 - width) // 2, y1), mask)


def plate_text(fmt: PlateFormat, rng: np.random.Generator) -> list[str]:
    """The plate's rows as printed, e.g. ["29-X5", "048.99"]."""
    chars = {"A": fmt.letters, "9": "0123456789", "P": fmt.prefixes}
    return "".join(pick(rng, chars[c]) if c in chars else c for c in pick(rng, fmt.templates)).split("/")


def render_plate(fmt: PlateFormat, rows: list[str], rng: np.random.Generator, fonts: list[str]) -> np.ndarray:
    h = RENDER_HEIGHT
    w = round(h * fmt.size_mm[0] / fmt.size_mm[1])
    image = Image.new("RGB", (w, h), pick(rng, fmt.backgrounds))
    draw = ImageDraw.Draw(image)
    small_print = fonts[0]
    left, top, right, bottom = 6, 6, w - 6, h - 6  # where the number may go
    band = round(0.36 * h)
    if fmt.left_band:  # the EU band: twelve stars over the country code
        draw.rectangle((0, 0, band, h), fill=EU_BLUE)
        for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
            x, y = band / 2 + 0.13 * h * np.cos(angle), 0.3 * h + 0.13 * h * np.sin(angle)
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=STAR_YELLOW)
        draw_text(image, fmt.left_band, small_print, (4, 0.6 * h, band - 4, 0.84 * h), WHITE)
        left = band + 6
    if fmt.right_band:
        draw.rectangle((w - band, 0, w, h), fill=EU_BLUE)
        draw_text(
            image, pick(rng, fmt.right_band), small_print, (w - band + 5, 0.55 * h, w - 5, 0.8 * h), WHITE
        )
        right = w - band - 6
    if fmt.top_band:
        draw.rectangle((0, 0, w, 0.24 * h), fill=EU_BLUE)
        draw_text(image, fmt.top_band, small_print, (0.3 * w, 0.05 * h, 0.7 * w, 0.19 * h), WHITE)
        top = round(0.26 * h)
    if fmt.headers:
        draw_text(
            image, pick(rng, fmt.headers), small_print, (0.2 * w, 0.07 * h, 0.8 * w, 0.22 * h), fmt.header_ink
        )
        if fmt.footers:
            draw_text(
                image, pick(rng, fmt.footers), small_print, (0.25 * w, 0.83 * h, 0.75 * w, 0.93 * h), NAVY
            )
        top, bottom = round(0.24 * h), round(0.82 * h)
    draw.rounded_rectangle((1, 1, w - 2, h - 2), radius=h // 12, outline=fmt.ink, width=2)
    font, squeeze = pick(rng, fonts), rng.uniform(0.6, 0.8)
    row_h = fmt.text_height * h
    gap = (bottom - top - len(rows) * row_h) / (len(rows) + 1)
    for i, row in enumerate(rows):
        y = top + gap * (i + 1) + row_h * i
        if "|" in row:
            draw_with_emblem(image, row, font, (left + 3, y, right - 3, y + row_h), fmt, squeeze)
        else:
            draw_text(image, row, font, (left + 3, y, right - 3, y + row_h), fmt.ink, squeeze)
    return np.asarray(image, dtype=np.float32)


def draw_with_emblem(
    image: Image.Image, row: str, font: str, box: tuple[float, ...], fmt: PlateFormat, squeeze: float
) -> None:
    """A row printed around a coat of arms ("ZG|1234-AB": Zagreb's district, the Croatian
    checkerboard, the number): each part gets width in proportion to its characters."""
    before, after = row.split("|")
    x1, y1, x2, y2 = box
    side = 0.8 * (y2 - y1)
    free = x2 - x1 - side - 0.2 * side
    split = x1 + free * len(before) / max(1, len(before) + len(after))
    draw_text(image, before, font, (x1, y1, split, y2), fmt.ink, squeeze)
    draw_text(image, after, font, (split + 1.2 * side, y1, x2, y2), fmt.ink, squeeze)
    ex, ey = split + 0.1 * side, y1 + 0.1 * side
    draw = ImageDraw.Draw(image)
    if fmt.emblem == "hr":  # 5 x 5 red and white squares, red first
        cell = side / 5
        for i in range(25):
            cx, cy = ex + cell * (i % 5), ey + cell * (i // 5)
            draw.rectangle((cx, cy, cx + cell, cy + cell), fill=RED if (i % 5 + i // 5) % 2 == 0 else WHITE)
    else:  # "sk": a red shield, a white double cross on blue hills
        draw.rectangle((ex, ey, ex + side, ey + side), fill=RED)
        draw.ellipse((ex + 0.1 * side, ey + 0.7 * side, ex + 0.9 * side, ey + 1.1 * side), fill=EU_BLUE)
        mid = ex + side / 2
        draw.rectangle((mid - 0.06 * side, ey + 0.1 * side, mid + 0.06 * side, ey + 0.75 * side), fill=WHITE)
        for bar, half in ((0.28, 0.22), (0.48, 0.3)):
            draw.rectangle(
                (mid - half * side, ey + bar * side, mid + half * side, ey + (bar + 0.1) * side), fill=WHITE
            )


# US plates as street cameras see them (``us-street/``): the state's own colours, its name and
# slogan, a registration sticker, and often a dealer's frame printed with its name. Real US
# misreads joined this text to the number ("CALIFORNIA 5UVR090" read SEPCALIFORMIA5UVR090).
# (state name, background, number ink, name ink, slogan)
US_STATES = [
    ("WASHINGTON", WHITE, NAVY, NAVY, "Evergreen State"),
    ("California", WHITE, NAVY, RED, "dmv.ca.gov"),
    ("TEXAS", WHITE, BLACK, BLACK, "The Lone Star State"),
    ("FLORIDA", WHITE, (0, 100, 60), (230, 110, 0), "Sunshine State"),
    ("NEW YORK", (245, 220, 130), NAVY, NAVY, "EXCELSIOR"),
    ("ARIZONA", (236, 226, 200), (120, 20, 40), (120, 20, 40), "Grand Canyon State"),
    ("ILLINOIS", WHITE, (140, 20, 30), NAVY, "Land of Lincoln"),
    ("Pennsylvania", WHITE, NAVY, NAVY, "visitPA.com"),
]
DEALERS = [
    ("THE HYUNDAI STORE", "SUNTRUP"),
    ("HONDA OF", "SPRINGFIELD"),
    ("TOYOTA", "BOB'S AUTO MALL"),
    ("FORD LINCOLN", "www.parkford.com"),
    ("", "CAPITOL CHEVROLET"),
]
FRAMES = [((20, 20, 22), WHITE), ((190, 190, 196), BLACK), ((25, 35, 100), WHITE), ((150, 20, 25), WHITE)]
STICKERS = [(250, 205, 20), (200, 30, 40), (30, 140, 70), (40, 90, 200)]


def render_us_street(rows: list[str], rng: np.random.Generator, fonts: list[str]) -> np.ndarray:
    """A US plate (2:1) with its state's name, slogan and sticker, in a dealer frame 60% of the time."""
    state, paper, ink, name_ink, slogan = pick(rng, US_STATES)
    h, small_print = RENDER_HEIGHT, fonts[0]
    w = 2 * h
    image = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(image)
    draw_text(image, state, small_print, (0.18 * w, 0.05 * h, 0.82 * w, 0.21 * h), name_ink)
    draw_text(image, slogan, small_print, (0.22 * w, 0.8 * h, 0.78 * w, 0.92 * h), name_ink)
    left = pick(rng, (True, False))  # the registration sticker, in a top corner
    x = 0.04 * w if left else 0.82 * w
    draw.rectangle((x, 0.04 * h, x + 0.14 * w, 0.2 * h), fill=pick(rng, STICKERS))
    sticker_text = pick(rng, ("24", "25", "MAR", "OCT"))
    draw_text(image, sticker_text, small_print, (x + 0.02 * w, 0.07 * h, x + 0.12 * w, 0.17 * h), BLACK)
    number_box = (0.1 * w, 0.27 * h, 0.9 * w, 0.73 * h)
    draw_text(image, rows[0], pick(rng, fonts), number_box, ink, rng.uniform(0.6, 0.8))
    if rng.random() >= 0.6:
        return np.asarray(image, dtype=np.float32)
    (top_text, bottom_text), (frame, frame_ink) = pick(rng, DEALERS), pick(rng, FRAMES)
    side, top, bottom = round(0.06 * h), round(0.12 * h), round(0.2 * h)
    framed = Image.new("RGB", (w + 2 * side, h + top + bottom), frame)
    # The frame covers the plate's edges: its bottom bar usually hides the slogan.
    framed.paste(image.crop((0, round(0.03 * h), w, round(0.86 * h))), (side, top + round(0.03 * h)))
    fw, fh = framed.size
    draw_text(framed, top_text, small_print, (0.25 * fw, 0.015 * fh, 0.75 * fw, top - 0.02 * fh), frame_ink)
    draw_text(
        framed,
        bottom_text,
        small_print,
        (0.15 * fw, fh - bottom + 0.08 * bottom, 0.85 * fw, fh - 0.2 * bottom),
        frame_ink,
    )
    return np.asarray(framed, dtype=np.float32)


# Plates and conditions of issue 19's real photos (``camera/``, only with ``--camera N``):
# Brazil's grey plates and Mercosur (cars and two-row motorcycles), Croatian and Slovak
# layouts (one and two rows, the coat of arms between district and number), seen at night,
# in infrared, blurred by motion, tiny, heavily compressed or from a steep angle.
GREY = (178, 180, 182)
HR_LETTERS = "ABCDEFGHIJKLMNOPRSTUVZ"  # the Croatian alphabet's A-Z letters (no Q, W, X, Y)
HR_DISTRICTS = ("ZG", "ST", "RI", "OS", "ZD", "PU", "DU", "KA", "SB", "VZ", "BJ", "SK")
SK_DISTRICTS = ("BA", "BL", "KE", "NR", "TT", "ZA", "BB", "PO", "TN", "MI", "LM", "PP")
BR_CITIES = ("SP - SAO PAULO", "RJ - RIO DE JANEIRO", "MG - BELO HORIZONTE", "PR - CURITIBA", "RS - CANOAS")
CAMERA_FORMATS: dict[str, PlateFormat] = {
    "br-grey": PlateFormat(("AAA-9999",), AZ, (400, 130), (GREY,), 0.5, headers=BR_CITIES, header_ink=BLACK),
    "br": FORMATS["br"],  # Mercosur: AAA9A99 under the blue BRASIL band
    "br-moto": PlateFormat(("AAA/9A99",), AZ, (200, 170), (WHITE,), 0.3, top_band="BRASIL"),
    "hr": PlateFormat(
        ("P|999-A", "P|999-AA", "P|9999-A", "P|9999-AA"),
        HR_LETTERS,
        (520, 110),
        (WHITE,),
        0.62,
        prefixes=HR_DISTRICTS,
        left_band="HR",
        emblem="hr",
    ),
    "hr-2row": PlateFormat(
        ("P|999/AA", "P|9999/AA"), HR_LETTERS, (280, 200), (WHITE,), 0.34, prefixes=HR_DISTRICTS, emblem="hr"
    ),
    "sk": PlateFormat(
        ("P|999AA", "AA999AA"),
        AZ,
        (520, 110),
        (WHITE,),
        0.62,
        prefixes=SK_DISTRICTS,
        left_band="SK",
        emblem="sk",
    ),
    "sk-2row": PlateFormat(("P|999/AA",), AZ, (280, 200), (WHITE,), 0.34, prefixes=SK_DISTRICTS, emblem="sk"),
}
# Each with its probability, at most MAX_CONDITIONS; night and infrared exclude each other.
CAMERA_CONDITIONS = {
    "night": 0.2,
    "infrared": 0.15,
    "motion": 0.25,
    "lowres": 0.2,
    "jpeg": 0.3,
    "oblique": 0.25,
    "shadow": 0.1,
    "dirt": 0.1,
}


def camera_quad(w: float, h: float, rng: np.random.Generator, chosen: set[str]) -> np.ndarray:
    """Corners of a plate seen head-on, or (oblique) from 35-65 degrees to the side, tilted
    up to 10 degrees: the near edge taller than the far one."""
    quad = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    if "oblique" in chosen:
        quad[:, 0] *= np.cos(np.radians(rng.uniform(35, 65)))
        far = pick(rng, ([1, 2], [0, 3]))
        quad[far, 1] *= rng.uniform(0.7, 0.88)
        a = np.radians(rng.uniform(-10, 10))
        quad = quad @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return quad + rng.normal(0, 0.02 * h, (4, 2))


def camera_degrade(
    image: np.ndarray, rng: np.random.Generator, chosen: set[str], plate_h: float
) -> np.ndarray:
    """Night (dark, a warm cast, a headlight's bloom, sensor noise), infrared (grey, the
    retro-reflective plate glowing against a dark scene), motion blur along the travel, then
    JPEG at low quality."""
    h, w = image.shape[:2]
    if "night" in chosen:
        image = 255 * (image / 255) ** rng.uniform(1.4, 2.0) * rng.uniform(0.25, 0.45)
        image = image * np.array([1.0, 0.9, 0.7], np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        centre = rng.uniform(0, 1, 2) * (w, h)
        glow = np.exp(
            -((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * (rng.uniform(0.2, 0.5) * w) ** 2)
        )
        image = (
            image + rng.uniform(40, 110) * glow[..., None] + rng.normal(0, rng.uniform(6, 14), image.shape)
        )
    if "infrared" in chosen:
        grey = image @ np.array([0.3, 0.59, 0.11], np.float32)
        grey = 255 * (grey / 255) ** rng.uniform(1.6, 2.6) * rng.uniform(1.0, 1.5)
        image = np.repeat(grey[..., None], 3, axis=2) + rng.normal(0, rng.uniform(3, 9), (h, w, 1))
    if "motion" in chosen:  # a long line kernel, mostly horizontal: the car moving past
        n = max(3, round(plate_h * rng.uniform(0.06, 0.18)))
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2] = 1 / n
        turn = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), float(rng.uniform(-25, 25)), 1.0)
        kernel = cv2.warpAffine(kernel, turn, (n, n))
        image = cv2.filter2D(image.astype(np.float32), -1, kernel / kernel.sum())
    image = np.clip(image, 0, 255).astype(np.uint8)
    if "jpeg" in chosen:
        _, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(10, 35))])
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return image


def make_camera_crop(index: int, seed: int, photos: list[np.ndarray], fonts: list[str]) -> Sample:
    """One ``camera/`` crop: the formats take turns, on a stream of its own (seed, 3, index)."""
    rng = np.random.default_rng([seed, 3, index])
    name = list(CAMERA_FORMATS)[index % len(CAMERA_FORMATS)]
    drawn = [c for c, p in CAMERA_CONDITIONS.items() if rng.random() < p]
    if "night" in drawn and "infrared" in drawn:
        drawn.remove("night")
    chosen = {drawn[i] for i in rng.permutation(len(drawn))[:MAX_CONDITIONS]}
    rows = plate_text(CAMERA_FORMATS[name], rng)
    plate = soil(render_plate(CAMERA_FORMATS[name], rows, rng, fonts), rng, chosen)
    quad = camera_quad(plate.shape[1], plate.shape[0], rng, chosen)
    margin = np.array([rng.uniform(0.04, 0.12) * plate.shape[1], rng.uniform(0.1, 0.3) * plate.shape[0]])
    quad += margin - quad.min(0)
    size = np.ceil(quad.max(0) + margin).astype(int)
    scene = background(photos, (int(size[0]), int(size[1])), rng, zoom=0.1)
    paste(scene, plate, quad)
    # low resolution: the plate 10-16 px high, as a far street camera sees it (two rows: 14-22)
    rows_scale = 1.4 if len(rows) > 1 else 1.0
    plate_h = (rng.uniform(10, 16) if "lowres" in chosen else rng.uniform(24, 64)) * rows_scale
    scale = plate_h / RENDER_HEIGHT
    scene = cv2.resize(
        scene, (max(8, round(size[0] * scale)), max(8, round(size[1] * scale))), interpolation=cv2.INTER_AREA
    )
    image = camera_degrade(scene, rng, chosen, plate_h)
    return Sample(image, name, rows, [c for c in CAMERA_CONDITIONS if c in chosen])


def soil(plate: np.ndarray, rng: np.random.Generator, chosen: set[str]) -> np.ndarray:
    """Shadow (a hard edge, as a bumper or a tree casts) and mud blotches, light enough to read through."""
    h, w = plate.shape[:2]
    if "shadow" in chosen:
        x_top, x_bottom = rng.uniform(0.2 * w, 0.8 * w, 2)
        yy, xx = np.mgrid[0:h, 0:w]
        plate[xx > x_top + (x_bottom - x_top) * yy / h] *= rng.uniform(0.35, 0.6)
    if "dirt" in chosen:
        mud = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(3, 9))):
            centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            axes = (int(rng.uniform(0.05, 0.25) * h), int(rng.uniform(0.05, 0.2) * h))
            cv2.ellipse(
                mud, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.3, 0.6)), -1
            )
        mud = cv2.GaussianBlur(mud, (0, 0), 0.03 * h)[..., None]
        plate = plate * (1 - mud) + np.array([95, 75, 50], np.float32) * mud
    return plate


def plate_quad(w: float, h: float, rng: np.random.Generator, chosen: set[str]) -> np.ndarray:
    """Corners (tl, tr, br, bl) of a w x h plate seen from a random angle, centred on 0."""
    quad = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    if "perspective" in chosen:
        quad[:, 0] *= rng.uniform(0.75, 1.0)  # seen from the side: narrower
        quad[[1, 2], 1] *= 1 + rng.uniform(-0.25, 0.25)  # ... and the far edge shorter
        quad[[0, 1], 0] *= 1 + rng.uniform(-0.12, 0.12)  # seen from above or below
    quad += rng.normal(0, 0.02 * h, (4, 2))
    if "rotation" in chosen:
        a = np.radians(rng.uniform(3, 7) * pick(rng, (-1, 1)))
        quad = quad @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return quad


def paste(scene: np.ndarray, image: np.ndarray, quad: np.ndarray) -> None:
    """Warp ``image`` onto ``quad`` of ``scene`` (in place), touching only the quad's box."""
    h, w = image.shape[:2]
    scale = (np.linalg.norm(quad[3] - quad[0]) + np.linalg.norm(quad[2] - quad[1])) / (2 * h)
    if scale < 0.8:  # shrink first with area averaging: the warp's bilinear step would alias
        image = cv2.resize(
            image, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA
        )
        h, w = image.shape[:2]
    x0, y0 = np.maximum(np.floor(quad.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(quad.max(0)).astype(int), scene.shape[1::-1])
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    matrix = cv2.getPerspectiveTransform(src, (quad - [x0, y0]).astype(np.float32))
    warped = cv2.warpPerspective(image, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(np.ones((h, w), np.float32), matrix, (x1 - x0, y1 - y0))[..., None]
    scene[y0:y1, x0:x1] = scene[y0:y1, x0:x1] * (1 - alpha) + warped * alpha


def background(
    photos: list[np.ndarray], size: tuple[int, int], rng: np.random.Generator, zoom: float
) -> np.ndarray:
    """A random window of one of the photos, resized to ``size``; ``zoom`` (0-1] the smallest window."""
    photo = pick(rng, photos)
    scale = rng.uniform(zoom, 1.0) * min(photo.shape[1] / size[0], photo.shape[0] / size[1])
    ww, wh = round(size[0] * scale), round(size[1] * scale)
    x, y = int(rng.uniform(0, photo.shape[1] - ww + 1)), int(rng.uniform(0, photo.shape[0] - wh + 1))
    window = photo[y : y + wh, x : x + ww][:, :: pick(rng, (1, -1))]
    return cv2.resize(np.ascontiguousarray(window), size, interpolation=cv2.INTER_AREA).astype(np.float32)


def degrade(image: np.ndarray, rng: np.random.Generator, chosen: set[str], plate_h: float) -> np.ndarray:
    """Exposure, then optics, then sensor, then compression: a camera's order. Strengths scale
    with the plate's height in pixels, so a small plate is not blurred away."""
    if "dark" in chosen:
        image = 255 * (image / 255) ** rng.uniform(1.2, 1.6) * rng.uniform(0.3, 0.5)
    if "bright" in chosen:  # washed out: everything pushed towards white, contrast lost
        image = 255 - (255 - image) * rng.uniform(0.3, 0.5)
    if "blur" in chosen:
        if rng.random() < 0.5:
            image = cv2.GaussianBlur(image, (0, 0), max(0.6, plate_h * rng.uniform(0.02, 0.04)))
        else:  # motion: a line kernel at a random angle
            n = max(3, round(plate_h * rng.uniform(0.06, 0.12)))
            kernel = np.zeros((n, n), np.float32)
            kernel[n // 2] = 1 / n
            turn = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), float(rng.uniform(0, 180)), 1.0)
            kernel = cv2.warpAffine(kernel, turn, (n, n))
            image = cv2.filter2D(image, -1, kernel / kernel.sum())
    if "noise" in chosen:
        image = image + rng.normal(0, rng.uniform(5, 14), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if "jpeg" in chosen:
        _, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(8, 25))])
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return image


def draw_conditions(rng: np.random.Generator) -> set[str]:
    """Each degradation with its probability; never dark and bright; at most MAX_CONDITIONS."""
    chosen = [c for c, p in CONDITIONS.items() if rng.random() < p]
    if "dark" in chosen and "bright" in chosen:
        chosen.remove("bright")
    return {chosen[i] for i in rng.permutation(len(chosen))[:MAX_CONDITIONS]}


def make_crop(
    index: int, seed: int, photos: list[np.ndarray], fonts: list[str], us_street: bool = False
) -> Sample:
    rng = np.random.default_rng([seed, 2 if us_street else 0, index])
    name = "us-street" if us_street else list(FORMATS)[index % len(FORMATS)]
    chosen = draw_conditions(rng)
    rows = plate_text(FORMATS["us" if us_street else name], rng)
    drawn = render_us_street(rows, rng, fonts) if us_street else render_plate(FORMATS[name], rows, rng, fonts)
    plate = soil(drawn, rng, chosen)
    quad = plate_quad(plate.shape[1], plate.shape[0], rng, chosen)
    margin = np.array([rng.uniform(0.04, 0.12) * plate.shape[1], rng.uniform(0.1, 0.3) * plate.shape[0]])
    quad += margin - quad.min(0)  # a detector's loose box around the warped plate
    size = np.ceil(quad.max(0) + margin).astype(int)
    scene = background(photos, (int(size[0]), int(size[1])), rng, zoom=0.1)
    paste(scene, plate, quad)
    plate_h = rng.uniform(12, 20) if "small" in chosen else rng.uniform(28, 72)
    scale = plate_h / RENDER_HEIGHT
    scene = cv2.resize(scene, (round(size[0] * scale), round(size[1] * scale)), interpolation=cv2.INTER_AREA)
    return Sample(degrade(scene, rng, chosen, plate_h), name, rows, [c for c in CONDITIONS if c in chosen])


def stick(
    scene: np.ndarray,
    image: np.ndarray,
    quad: np.ndarray,
    width: float,
    taken: list,
    rng: np.random.Generator,
    car: bool,
) -> tuple[int, ...]:
    """Scale ``quad`` to ``width`` pixels, place it clear of the ``taken`` boxes (on a patch of
    car body if ``car``), paste ``image`` there; return its box, clipped to the scene."""
    quad = quad * width / np.ptp(quad[:, 0])
    # a car: the body around a plate is ~1.5 plate widths wide, ~0.45 plate widths high
    reserve = quad * ([1.5, max(1.6, 0.45 * np.ptp(quad[:, 0]) / np.ptp(quad[:, 1]))] if car else [1.1, 1.2])
    (w, h), (sw, sh) = np.ptp(reserve, 0), scene.shape[1::-1]
    for _ in range(30):
        x, y = rng.uniform(w / 2 + 2, sw - w / 2 - 2), rng.uniform(h / 2 + 2, sh - h / 2 - 2)
        box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
        if all(box[2] < a or c < box[0] or box[3] < b or d < box[1] for a, b, c, d in taken):
            break
    taken.append(box)
    at = np.array([x, y])
    if car:
        cv2.fillConvexPoly(scene, np.round(reserve + at).astype(np.int32), pick(rng, CAR_COLOURS))
    paste(scene, image, quad + at)
    (x1, y1), (x2, y2) = np.floor(quad.min(0) + at), np.ceil(quad.max(0) + at)
    return int(max(x1, 0)), int(max(y1, 0)), int(min(x2, sw)), int(min(y2, sh))


def render_sign(rng: np.random.Generator, font: str) -> np.ndarray:
    text, ink, colour = pick(rng, SIGNS)
    w = round(RENDER_HEIGHT * max(1.6, 0.6 * len(text)))
    image = Image.new("RGB", (w, RENDER_HEIGHT), colour)
    ImageDraw.Draw(image).rectangle((2, 2, w - 3, RENDER_HEIGHT - 3), outline=ink, width=3)
    draw_text(image, text, font, (10, 24, w - 10, 76), ink, 0.9)
    return np.asarray(image, dtype=np.float32)


def make_photo(index: int, seed: int, photos: list[np.ndarray], fonts: list[str]) -> Sample:
    rng = np.random.default_rng([seed, 1, index])
    chosen = draw_conditions(rng)
    unit = pick(rng, (1.0, 0.75))  # 1280x720 or 960x540
    scene = background(photos, (round(1280 * unit), round(720 * unit)), rng, zoom=0.5)
    taken: list = []
    name, rows, box, plate_h = "", [], None, 20 * unit
    conditions = [c for c in CONDITIONS if c in chosen]
    if rng.random() >= 0.05:
        name = list(FORMATS)[index % len(FORMATS)]
        rows = plate_text(FORMATS[name], rng)
        plate = soil(render_plate(FORMATS[name], rows, rng, fonts), rng, chosen)
        width = (rng.uniform(36, 60) if "small" in chosen else rng.uniform(90, 260)) * unit
        box = stick(
            scene, plate, plate_quad(plate.shape[1], plate.shape[0], rng, chosen), width, taken, rng, True
        )
        plate_h = box[3] - box[1]
    if not rows or rng.random() < 0.3:  # a plate-like word or number that is not a plate
        sign = render_sign(rng, fonts[0])
        stick(
            scene,
            sign,
            plate_quad(sign.shape[1], sign.shape[0], rng, set()),
            rng.uniform(80, 300) * unit,
            taken,
            rng,
            False,
        )
        conditions.append("sign")
    if rows and "small" not in chosen and rng.random() < 0.12:  # a car far behind: not the answer
        other = pick(rng, list(FORMATS.values()))
        far = render_plate(other, plate_text(other, rng), rng, fonts)
        stick(
            scene,
            far,
            plate_quad(far.shape[1], far.shape[0], rng, set()),
            (box[2] - box[0]) * rng.uniform(0.25, 0.4),
            taken,
            rng,
            True,
        )
        conditions.append("background_plate")
    conditions += [] if rows else ["no_plate"]
    return Sample(degrade(scene, rng, chosen, plate_h), name, rows, conditions, box)


def label(filename: str, seed: int, sample: Sample) -> tuple[str, ...]:
    split = ("dev", "test")[hashlib.sha256(f"{seed}/{filename}".encode()).digest()[0] % 2]
    return filename, sample.plate, sample.format, split, ";".join(sample.conditions)


def write_csv(path: Path, header: tuple[str, ...], rows: list) -> None:
    with open(path, "w", newline="") as out:
        csv.writer(out).writerows([header, *rows])


def generate(
    target: Path,
    seed: int = 0,
    crops: int = 400,
    photos: int = 200,
    us_street: int = 0,
    camera: int = 0,
    fonts: list[str] | None = None,
) -> None:
    """`fonts`: font files to draw every plate with instead of PLATE_FONTS (learning_curve.py: a
    typeface no training crop had); a seed draws the same plates and labels with any fonts."""
    fonts, backgrounds = fonts or find_fonts(), load_photos()
    crops_dir, photos_dir, us_dir = target / "crops", target / "photos", target / "us-street"
    crops_dir.mkdir(parents=True, exist_ok=True)
    photos_dir.mkdir(parents=True, exist_ok=True)
    header = ("filename", "plate", "format", "split", "conditions")
    crop_rows, photo_rows, box_rows = [], [], []
    for i in range(crops):
        sample, filename = make_crop(i, seed, backgrounds, fonts), f"crop_{i:04d}.png"
        Image.fromarray(sample.image).save(crops_dir / filename)  # PNG: the degradations, nothing more
        crop_rows.append(label(filename, seed, sample))
    for i in range(photos):
        sample, filename = make_photo(i, seed, backgrounds, fonts), f"photo_{i:04d}.jpg"
        Image.fromarray(sample.image).save(photos_dir / filename, quality=90)  # PNG would be 1.5 MB each
        photo_rows.append(label(filename, seed, sample))
        box_rows.append((filename, *(sample.box or ("", "", "", ""))))  # empty: no plate
    write_csv(crops_dir / "labels.csv", header, crop_rows)
    write_csv(photos_dir / "labels.csv", header, photo_rows)
    write_csv(photos_dir / "boxes.csv", ("filename", "x1", "y1", "x2", "y2"), box_rows)
    print(f"{crops} crops in {crops_dir}, {photos} photos in {photos_dir}")
    if us_street:
        us_dir.mkdir(parents=True, exist_ok=True)
        us_rows = []
        for i in range(us_street):
            sample, filename = make_crop(i, seed, backgrounds, fonts, us_street=True), f"us_{i:04d}.png"
            Image.fromarray(sample.image).save(us_dir / filename)
            us_rows.append(label(filename, seed, sample))
        write_csv(us_dir / "labels.csv", header, us_rows)
        print(f"{us_street} US street crops in {us_dir}")
    if camera:
        camera_dir = target / "camera"
        camera_dir.mkdir(parents=True, exist_ok=True)
        camera_rows = []
        for i in range(camera):
            sample, filename = make_camera_crop(i, seed, backgrounds, fonts), f"camera_{i:05d}.png"
            Image.fromarray(sample.image).save(camera_dir / filename)
            camera_rows.append(label(filename, seed, sample))
        write_csv(camera_dir / "labels.csv", header, camera_rows)
        print(f"{camera} camera crops in {camera_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=400, help="plate crops (default 400)")
    parser.add_argument("--photos", type=int, help="scenes (default: half of --count)")
    parser.add_argument(
        "--us-street",
        type=int,
        default=0,
        help="also this many US street crops (state colours, stickers, frames): us-street/",
    )
    parser.add_argument(
        "--camera",
        type=int,
        default=0,
        help="also this many crops of BR grey/Mercosur, HR, SK and two-row plates at night, in IR, "
        "blurred, tiny, compressed or oblique: camera/",
    )
    args = parser.parse_args()
    generate(
        args.target,
        args.seed,
        args.count,
        args.count // 2 if args.photos is None else args.photos,
        args.us_street,
        args.camera,
    )


if __name__ == "__main__":
    main()
