"""Measure a plate reader on a folder of labelled images (``labels.csv``: ``filename,plate``).

    modelport evaluate plates /tmp/plates/photos            # detector + OCR, full photos
    modelport evaluate plates /tmp/plates/crops --crops     # OCR only, plate crops
    modelport evaluate plates /tmp/synth/photos --split test --json

``labels.csv`` may add ``split`` (``dev``/``test``: tune on dev, report test) and ``format``
(figures per plate format). An empty ``plate`` means the photo holds no plate: any plate
read there is wrong.

Beside accuracy it measures the ``review`` contract: of the answers returned without
``review`` (auto-accepted), how many are exactly right (precision), how many images need
no review (coverage), and how many wrong answers were flagged. Because ``review`` is
``score < review_threshold``, :meth:`Evaluation.at_threshold` gives the same figures for
any other threshold from one run.

In code, the service's pipeline, or any other reader returning PlateReadings main first:

    read = plate_reads(recognizer, crops=False, rules=True, min_score=0.25)
    print_report(evaluate(read, Path("/tmp/plates/photos")), "photos")
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from services.plate_reader.plate_text import normalise
from services.plate_reader.types import PlateReading

if TYPE_CHECKING:
    from services.plate_reader.pipeline import PlateRecognizer

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98)


@dataclass(frozen=True)
class ImageOutcome:
    filename: str
    truth: str  # "" when the image holds no plate
    found: tuple[str, ...]  # every plate read, the main one first
    score: float  # the main plate's score (0 when none)
    review: bool  # the main plate's review flag (True when none: nothing was accepted)
    seconds: float
    format: str = ""

    @property
    def answer(self) -> str:
        return self.found[0] if self.found else ""

    @property
    def right(self) -> bool:
        return self.answer == self.truth

    @property
    def accepted(self) -> bool:
        """A plate was returned without review: the caller may act on it unchecked."""
        return bool(self.found) and not self.review


@dataclass(frozen=True)
class Evaluation:
    outcomes: tuple[ImageOutcome, ...]

    @property
    def exact_accuracy(self) -> float:
        """Share of images whose main plate is the labelled one (no plate read where none is)."""
        return _share(o.right for o in self.outcomes)

    @property
    def char_accuracy(self) -> float:
        """Mean of 1 - edit distance / longer length, main plate against the label."""
        return (
            float(
                np.mean(
                    [
                        1 - _edit_distance(o.answer, o.truth) / max(len(o.answer), len(o.truth), 1)
                        for o in self.outcomes
                    ]
                )
            )
            if self.outcomes
            else 0.0
        )

    @property
    def detection_rate(self) -> float:
        """Share of images with a plate where the reader found any plate at all."""
        return _share(bool(o.found) for o in self.outcomes if o.truth)

    @property
    def plate_recall(self) -> float:
        """Share of images with a plate whose labelled plate is among all plates read."""
        return _share(o.truth in o.found for o in self.outcomes if o.truth)

    @property
    def accepted_precision(self) -> float | None:
        """Of the answers returned without review, the share exactly right (None: none accepted)."""
        accepted = [o.right for o in self.outcomes if o.accepted]
        return _share(accepted) if accepted else None

    @property
    def coverage(self) -> float:
        """Share of images answered without review."""
        return _share(o.accepted for o in self.outcomes)

    @property
    def wrong_flagged(self) -> float | None:
        """Of the wrong plates returned, the share flagged for review (None: no wrong plate)."""
        wrong = [o.review for o in self.outcomes if o.found and not o.right]
        return _share(wrong) if wrong else None

    @property
    def mean_ms(self) -> float:
        return 1000 * float(np.mean([o.seconds for o in self.outcomes])) if self.outcomes else 0.0

    def at_threshold(self, threshold: float) -> Evaluation:
        """The same reads with review = score < threshold. The main plate of a photo was
        chosen at the serving threshold (a sure reading ranks before a flagged one), so for
        other thresholds this is a close estimate, not a rerun."""
        return Evaluation(tuple(replace(o, review=o.score < threshold) for o in self.outcomes))

    def by_format(self) -> dict[str, Evaluation]:
        groups: dict[str, list[ImageOutcome]] = {}
        for o in self.outcomes:
            groups.setdefault(o.format or "-", []).append(o)
        return {name: Evaluation(tuple(group)) for name, group in sorted(groups.items())}

    def summary(self) -> dict[str, Any]:
        return {
            "images": len(self.outcomes),
            "exact": self.exact_accuracy,
            "char_accuracy": self.char_accuracy,
            "detection_rate": self.detection_rate,
            "plate_recall": self.plate_recall,
            "accepted_precision": self.accepted_precision,
            "coverage": self.coverage,
            "wrong_flagged": self.wrong_flagged,
            "ms_per_image": self.mean_ms,
        }


def load_labels(folder: Path, split: str | None = None) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as labels:
        rows = list(csv.DictReader(labels))
    if split is not None:
        if rows and "split" not in rows[0]:
            raise ValueError(f"{folder}/labels.csv has no 'split' column; drop --split")
        rows = [row for row in rows if row["split"] == split]
    return rows


def evaluate(
    read: Callable[[np.ndarray], Sequence[PlateReading]], folder: Path, *, split: str | None = None
) -> Evaluation:
    """Run ``read`` on every labelled image of ``folder`` (one untimed warm-up call first)."""
    rows = load_labels(folder, split)
    if not rows:
        return Evaluation(())
    images = [np.asarray(Image.open(folder / row["filename"]).convert("RGB")) for row in rows]
    read(images[0])  # ONNX Runtime's first call allocates; keep it out of the timings
    outcomes = []
    for row, image in zip(rows, images):
        start = time.perf_counter()
        readings = [r for r in read(image) if r.plate]
        seconds = time.perf_counter() - start
        main = readings[0] if readings else None
        outcomes.append(
            ImageOutcome(
                row["filename"],
                normalise(row["plate"]),
                tuple(normalise(r.plate) for r in readings),
                main.score if main else 0.0,
                main.review if main else True,
                seconds,
                row.get("format", ""),
            )
        )
    return Evaluation(tuple(outcomes))


def plate_reads(
    recognizer: PlateRecognizer,
    *,
    crops: bool = False,
    regions: Sequence[str] = (),
    rules: bool = True,
    min_score: float = 0.25,
) -> Callable[[np.ndarray], list[PlateReading]]:
    """``read`` for :func:`evaluate`, run by the service's own pipeline: photos through
    detector + OCR, or (``crops=True``) each image read as one plate crop, OCR only."""

    def read_crop(image: np.ndarray) -> list[PlateReading]:
        return recognizer.read_crops([image], regions=regions, rules=rules)

    def read_photo(image: np.ndarray) -> list[PlateReading]:
        [readings] = recognizer.read([image], min_score=min_score, regions=regions, rules=rules)
        return readings

    return read_crop if crops else read_photo


def print_report(evaluation: Evaluation, title: str, *, errors: bool = False, threshold: float = 0.8) -> None:
    console = Console()
    if errors:
        table = Table("image", "label", "read", "score", "review", title=f"{title}: misreads")
        for o in evaluation.outcomes:
            if not o.right:
                table.add_row(
                    o.filename,
                    o.truth or "(no plate)",
                    " | ".join(o.found) or "(none)",
                    f"{o.score:.3f}",
                    "yes" if o.review else "NO",
                )
        console.print(table)
    summary = Table(
        "",
        "images",
        "exact",
        "chars",
        "found",
        "accepted right",
        "coverage",
        "wrong flagged",
        "ms/img",
        title=title,
    )
    groups = evaluation.by_format()
    if len(groups) > 1:
        for name, group in groups.items():
            summary.add_row(name, *_figures(group))
    summary.add_row("all", *_figures(evaluation), style="bold")
    console.print(summary)
    calibration = Table(
        "review_threshold",
        "accepted right",
        "coverage",
        "wrong flagged",
        title=f"{title}: what each review_threshold gives (serving: {threshold})",
    )
    for t in sorted({*THRESHOLDS, threshold}):
        at = evaluation.at_threshold(t)
        calibration.add_row(
            f"{t:g}", _percent(at.accepted_precision), _percent(at.coverage), _percent(at.wrong_flagged)
        )
    console.print(calibration)
    console.print(
        "accepted right: of the plates returned without review, the share exactly right; "
        "coverage: share of images answered without review; wrong flagged: share of wrong "
        "plates returned with review."
    )


def calibration(evaluation: Evaluation) -> list[dict[str, Any]]:
    return [
        {
            "review_threshold": t,
            **{
                k: v
                for k, v in evaluation.at_threshold(t).summary().items()
                if k in ("accepted_precision", "coverage", "wrong_flagged")
            },
        }
        for t in THRESHOLDS
    ]


def _figures(e: Evaluation) -> list[str]:
    return [
        str(len(e.outcomes)),
        _percent(e.exact_accuracy),
        _percent(e.char_accuracy),
        _percent(e.detection_rate),
        _percent(e.accepted_precision),
        _percent(e.coverage),
        _percent(e.wrong_flagged),
        f"{e.mean_ms:.1f}",
    ]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


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
