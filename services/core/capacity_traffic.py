"""Requests that look like the real thing, for `modelport capacity`.

- `PhotoTraffic`: gate cameras posting photos to the plate reader, one photo per request,
  taking turns over the user's photos (`--images DIR`) or the checkout's test scenes (a real
  plate crop on a real street photo, 1280x720, one plate or four).
- `TypingTraffic`: editors typing and asking /v1/suggest every few characters for the text so
  far, with their session (a newer request supersedes the older), as bench_typing.py does; or
  plain /v1/completions of `max_tokens` on the same texts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from services.core.capacity import CapacityError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")

# Editors' texts when --texts is not given: plain business English, ~300 characters each.
TEXTS = (
    (
        "Hi Sam, thanks for sending the quarterly report so quickly. I had a look at the numbers "
        "for the northern region and they seem a little lower than we expected. Could we meet on "
        "Thursday afternoon to go through them together? I would also like to invite Maria from "
        "finance, since she prepared the budget for next year."
    ),
    (
        "Dear customer, we are sorry to hear that your order arrived damaged. Please send us a photo "
        "of the package and the items inside, and we will arrange a replacement or a full refund, "
        "whichever you prefer. Our courier can collect the parcel from your address at no cost to you."
    ),
    (
        "The meeting with the board went well. They agreed to fund the pilot for another six months, "
        "on the condition that we report progress every month and keep the costs within the plan. "
        "Next week I will draft the first report and share it with the team for comments."
    ),
    (
        "Reminder: the office will be closed on Monday for maintenance work on the heating system. "
        "Please take your laptop home on Friday if you plan to work remotely, and make sure that all "
        "windows are closed before you leave. The building will open again on Tuesday morning."
    ),
)


@dataclass
class PhotoTraffic:
    photos: list[tuple[str, bytes]]  # (file name, bytes)
    path: str = "/v1/plate-reader"
    name: str = "plate-reader"
    _next: int = 0

    @classmethod
    def from_folder(cls, folder: Path) -> PhotoTraffic:
        if not folder.is_dir():
            raise CapacityError(f"--images {folder}: not a folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        if not files:
            raise CapacityError(f"--images {folder}: no photos in it ({', '.join(PHOTO_SUFFIXES)})")
        return cls([(p.name, p.read_bytes()) for p in files])

    @classmethod
    def test_scenes(cls) -> PhotoTraffic:
        """The test suite's scenes: needs the modelport checkout (tests/) and fetches its two
        assets from pinned packages on first use, as the tests do."""
        # The `modelport` script runs with its own folder on sys.path, not the checkout's root,
        # so the checkout this (editable) install points at is added when it has the scenes.
        checkout = str(Path(__file__).resolve().parents[2])
        if Path(checkout, "tests", "scenes.py").is_file() and checkout not in sys.path:
            sys.path.append(checkout)
        try:
            from tests.scenes import plate_on_street, street_with_plates
        except ImportError:
            raise CapacityError(
                "give --images DIR (photos from your cameras): the bundled scenes "
                "come with the modelport checkout's tests/"
            ) from None
        four = [
            ("plate_ad799kb", (500, 450), 1.5),
            ("plate_krw301", (120, 520), 1.2),  # bench_plate_reader's
            ("plate_ad799kb", (900, 380), 0.9),
            ("plate_krw301", (1000, 550), 1.2),
        ]
        return cls(
            [
                ("one-plate.jpg", plate_on_street(canvas=(1280, 720), at=(500, 450), scale=1.5).jpeg),
                ("four-plates.jpg", street_with_plates(four).jpeg),
            ]
        )

    async def call(self, session: aiohttp.ClientSession, worker: int) -> int:
        name, data = self.photos[self._next % len(self.photos)]
        self._next += 1
        form = aiohttp.FormData()
        form.add_field(
            "upload",
            data,
            filename=name,
            content_type="image/png" if name.lower().endswith(".png") else "image/jpeg",
        )
        form.add_field("camera_id", f"capacity-{worker % 8}")
        async with session.post(self.path, data=form) as response:
            await response.read()
            return response.status


@dataclass
class TypingTraffic:
    texts: tuple[str, ...] = TEXTS
    every: int = 6  # characters typed between two requests
    completions_tokens: int | None = None  # plain /v1/completions of this length instead of suggest
    name: str = "autocomplete"
    _typed: dict[int, int] = field(default_factory=dict)  # worker -> characters typed so far

    def __post_init__(self) -> None:
        if not self.texts or not all(t.strip() for t in self.texts):
            raise CapacityError("--texts: the file holds no text (one text per paragraph)")
        if self.every < 1:
            raise CapacityError("--every must be at least 1 character")

    @classmethod
    def from_file(cls, path: Path, **options: Any) -> TypingTraffic:  # options: the other fields
        texts = tuple(t.strip() for t in path.read_text().split("\n\n") if t.strip())
        return cls(texts, **options)

    def text_so_far(self, worker: int) -> str:
        text = self.texts[worker % len(self.texts)]
        typed = self._typed.get(worker, 0) + self.every
        if typed > len(text):  # the editor starts the next message
            typed = self.every
        self._typed[worker] = typed
        return text[:typed]

    async def call(self, session: aiohttp.ClientSession, worker: int) -> int:
        text = self.text_so_far(worker)
        if self.completions_tokens is not None:
            path, body = "/v1/completions", {"prompt": text, "max_tokens": self.completions_tokens}
        else:
            path, body = "/v1/suggest", {"text": text, "session": f"capacity-editor-{worker}"}
        async with session.post(path, json=body) as response:
            await response.read()
            return response.status
