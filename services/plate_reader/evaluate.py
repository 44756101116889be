"""Measure a plate reader on a folder of labelled images (``labels.csv``: ``filename,plate``).

    modelport evaluate plates /tmp/plates/photos            # detector + OCR, full photos
    modelport evaluate plates /tmp/plates/crops --crops     # OCR only, plate crops

In code, the service's pipeline (``plate_reads`` makes ``read`` from a PlateRecognizer,
``rules=False`` for the raw OCR text), or any other reader:

    read = plate_reads(recognizer, crops=False, rules=True, min_score=0.25)
    print_report(evaluate(read, Path("/tmp/plates/photos")), "photos")

``read`` returns the plates found in one RGB image, best first; the first one is the
answer. Plates are compared after normalising both sides to A-Z0-9.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from services.plate_reader.plate_text import normalise

if TYPE_CHECKING:
    from services.plate_reader.pipeline import PlateRecognizer


@dataclass(frozen=True)
class ImageOutcome:
    filename: str
    truth: str
    found: tuple[str, ...]
    seconds: float

    @property
    def answer(self) -> str:
        return self.found[0] if self.found else ""


@dataclass(frozen=True)
class Evaluation:
    outcomes: tuple[ImageOutcome, ...]

    @property
    def exact_accuracy(self) -> float:
        """Share of images whose first plate is the labelled one."""
        return _share(o.answer == o.truth for o in self.outcomes)

    @property
    def char_accuracy(self) -> float:
        """Mean of 1 - edit distance / longer length, first plate against the label."""
        return float(np.mean([1 - _edit_distance(o.answer, o.truth) / max(len(o.answer), len(o.truth), 1)
                              for o in self.outcomes]))

    @property
    def detection_rate(self) -> float:
        """Share of images where the reader found any plate at all."""
        return _share(bool(o.found) for o in self.outcomes)

    @property
    def plate_recall(self) -> float:
        """Share of images whose labelled plate is among all the plates found (any rank)."""
        return _share(o.truth in o.found for o in self.outcomes)

    @property
    def mean_ms(self) -> float:
        return 1000 * float(np.mean([o.seconds for o in self.outcomes]))


def evaluate(read: Callable[[np.ndarray], Sequence[str]], folder: Path) -> Evaluation:
    """Run ``read`` on every labelled image of ``folder`` (one untimed warm-up call first)."""
    with open(folder / "labels.csv", newline="") as labels:
        rows = [(row["filename"], normalise(row["plate"])) for row in csv.DictReader(labels)]
    images = [np.asarray(Image.open(folder / name).convert("RGB")) for name, _ in rows]
    read(images[0])  # ONNX Runtime's first call allocates; keep it out of the timings
    outcomes = []
    for (name, truth), image in zip(rows, images):
        start = time.perf_counter()
        found = tuple(normalise(plate) for plate in read(image))
        outcomes.append(ImageOutcome(name, truth, found, time.perf_counter() - start))
    return Evaluation(tuple(outcomes))


def plate_reads(recognizer: PlateRecognizer, *, crops: bool = False, regions: Sequence[str] = (),
                rules: bool = True, min_score: float = 0.25) -> Callable[[np.ndarray], list[str]]:
    """``read`` for :func:`evaluate`, run by the service's own pipeline.

    Photos (detector + OCR): the best plate of each detected box, boxes whose text held no
    A-Z0-9 left out. Crops (``crops=True``, OCR only): the crop's ranked candidates.
    """
    def read_crop(image: np.ndarray) -> list[str]:
        [candidates] = recognizer.read_crops([image], regions=regions, rules=rules)
        return [c.plate for c in candidates]

    def read_photo(image: np.ndarray) -> list[str]:
        [readings] = recognizer.read([image], min_score=min_score, regions=regions, rules=rules)
        return [r.plate for r in readings if r.plate]

    return read_crop if crops else read_photo


def print_report(evaluation: Evaluation, title: str, *, errors: bool = False) -> None:
    console = Console()
    if errors:
        table = Table("image", "label", "read", title=f"{title}: misreads")
        for o in evaluation.outcomes:
            if o.answer != o.truth:
                table.add_row(o.filename, o.truth, " | ".join(o.found) or "(none)")
        console.print(table)
    summary = Table("images", "exact plate", "char accuracy", "plate found", "plate in any", "ms / image",
                    title=title)
    summary.add_row(
        str(len(evaluation.outcomes)),
        f"{evaluation.exact_accuracy:.1%}",
        f"{evaluation.char_accuracy:.1%}",
        f"{evaluation.detection_rate:.1%}",
        f"{evaluation.plate_recall:.1%}",
        f"{evaluation.mean_ms:.1f}",
    )
    console.print(summary)


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else 0.0


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]
