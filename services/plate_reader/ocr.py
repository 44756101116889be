"""Plate-text recogniser: a CTC text-line model (PP-OCRv6 small by default) on ONNX Runtime.

    ocr = PlateOCR("models/PP-OCRv6_rec_small.onnx")
    [result] = ocr.read([crop])          # crop: H x W x 3 RGB uint8, one plate
    result.text, result.confidence      # "30E-653.73", 0.97
    ocr.read_plates([(photo, box)])      # box: the detector's BoundingBox

All crops of one call go through the model in one batch. Two-row plates are read as
two text lines (top row first). The model's output is folded onto the plate alphabet
(A-Z, 0-9 and a few separators): lowercase and full-width forms count for their
uppercase ASCII letter, and no Chinese or other character can be emitted (on the 31
test crops this read the same as PP-OCRv4's full 6,625-class dictionary; it guards other plates).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from services.plate_reader.crops import crop_plate, padded_width, split_rows, to_batch, trim_bands
from services.plate_reader.onnx_session import indices_by_shape, onnx_session
from services.plate_reader.stage_timing import timed
from services.plate_reader.tuned_tail import TAIL_OUTPUT, TUNED_CHARACTER, graft_files
from services.plate_reader.types import BoundingBox, CharAlternative, OcrResult

# Plate characters plus the separators printed on plates: the separators stay possible
# outputs so that a dash or dot is not forced into the nearest letter or digit.
PLATE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-. "
# Alternatives kept per read character, for the plate-format rules.
TOP_K = 3


class PlateOCR:
    """Reads plate crops with a CTC recogniser whose dictionary is in its ONNX metadata; with a
    plate-tuned tail (tuned_tail.py), the same call also gives the tuned version's reading."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        temperature: float = 1.0,
        as_exported: bool = False,  # onnx_session's: the graph without onnx_folding's rewrites
        tail_path: str | Path | None = None,
        tail_temperature: float = 1.0,
    ) -> None:
        graph = graft_files(model_path, tail_path) if tail_path else model_path
        self._session = onnx_session(graph, providers, as_exported=as_exported)
        del graph
        # Calibration: each frame's plate-alphabet probabilities are raised to 1 / temperature
        # and renormalised (softmax of logits / temperature over the folded classes). The read
        # text is the same at any temperature; only how sure it is changes.
        self.temperature = temperature
        self.tail_temperature = tail_temperature
        self._input_name = self._session.get_inputs()[0].name
        metadata = self._session.get_modelmeta().custom_metadata_map
        outputs = [output.name for output in self._session.get_outputs()]
        self._heads = [_Head(outputs[0], metadata["character"])]
        if tail_path:
            self._heads.append(_Head(TAIL_OUTPUT, metadata[TUNED_CHARACTER]))

    @property
    def has_tail(self) -> bool:
        return len(self._heads) > 1

    def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        """Read every crop (RGB uint8); one result per crop, same order."""
        return self.read_lines([split_rows(trim_bands(crop)) for crop in crops])

    def read_lines(self, lines_per_crop: Sequence[Sequence[np.ndarray]]) -> list[OcrResult]:
        """Read each plate given as its text lines (RGB uint8, top row first), all lines
        together (folded); one result per plate, its lines joined by a space. (With a tail,
        ONNX Runtime computes it too; it is not decoded.)"""
        return self._read(lines_per_crop, self._heads[:1])[0]

    def read_both(
        self, lines_per_crop: Sequence[Sequence[np.ndarray]]
    ) -> tuple[list[OcrResult], list[OcrResult] | None]:
        """read_lines(), and the tuned tail's reading of the same lines from the same call (None
        without a tail)."""
        readings = self._read(lines_per_crop, self._heads)
        return readings[0], readings[1] if self.has_tail else None

    def _read(
        self, lines_per_crop: Sequence[Sequence[np.ndarray]], heads: Sequence[_Head]
    ) -> list[list[OcrResult]]:
        """Each of `heads`' readings of every plate, from the same model calls."""
        lines = [line for crop_lines in lines_per_crop for line in crop_lines]
        results = []
        for per_line in self._folded(lines, heads):
            decoded = iter(decode(folded) for folded in per_line)
            results.append([_join([next(decoded) for _ in crop_lines]) for crop_lines in lines_per_crop])
        return results

    def folded(self, lines: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each line's (time, 1 + plate alphabet + foreign) probabilities, at this reader's
        temperature: one model call per padded width (crops.padded_width), so a line reads the
        same in any batch."""
        return self._folded(lines, self._heads[:1])[0]

    def _folded(self, lines: Sequence[np.ndarray], heads: Sequence[_Head]) -> list[list[np.ndarray]]:
        """folded() for each of `heads` (the base's, the tail's), from the same model calls."""
        by_width = indices_by_shape(padded_width(line) for line in lines)
        out = [[np.empty(0)] * len(lines) for _ in heads]
        temperatures = [self.temperature, self.tail_temperature]
        with timed("recognise"):
            for width, indices in by_width.items():
                batch = to_batch([lines[i] for i in indices], min_width=width)
                probabilities = self._session.run([h.output for h in heads], {self._input_name: batch})
                for k, (head, head_probs) in enumerate(zip(heads, probabilities)):
                    for i, line_probs in zip(indices, head_probs):
                        out[k][i] = with_temperature(head.fold(line_probs), temperatures[k])
        return out

    def read_plates(self, plates: Sequence[tuple[np.ndarray, BoundingBox]]) -> list[OcrResult]:
        """Read the plate in each (RGB image, detector box) pair, all together."""
        return self.read([crop_plate(image, (b.xmin, b.ymin, b.xmax, b.ymax)) for image, b in plates])


class _Head:
    """One of the model's outputs (the base's probabilities, a tuned tail's) and how its classes
    fold onto the plate alphabet."""

    def __init__(self, output: str, dictionary: str) -> None:
        self.output = output
        fold = _fold_matrix(dictionary)
        # Only the classes that fold into the blank or the plate alphabet are multiplied; the
        # foreign column is the rest of each frame's sum. The dense (frames x 6,625) @ (6,625 x
        # 41) product took 21% of a served read under load: OpenBLAS's threads fought ONNX
        # Runtime's for the 2 cores (0.42 s a call profiled, 1.8 ms a line on one idle thread).
        self._known = np.flatnonzero(fold[:, :-1].any(axis=1))
        self._fold_known = np.ascontiguousarray(fold[self._known, :-1])

    def fold(self, probabilities: np.ndarray) -> np.ndarray:
        known = probabilities[:, self._known] @ self._fold_known
        foreign = np.maximum(probabilities.sum(axis=1) - known.sum(axis=1), 0.0)
        return np.concatenate([known, foreign[:, None]], axis=1)


def _fold_matrix(dictionary: str) -> np.ndarray:
    """(model classes, 1 + plate alphabet + 1) 0/1 matrix summing look-alike classes; column 0
    is the blank, the last column every class no plate carries (%, @, Chinese characters)."""
    # The model's classes are: blank, the dictionary lines, then a space (PaddleOCR's layout).
    characters = ["", *dictionary.splitlines(), " "]
    fold = np.zeros((len(characters), 2 + len(PLATE_ALPHABET)), dtype=np.float32)
    fold[0, 0] = 1.0
    for index, character in enumerate(characters[1:], start=1):
        folded = unicodedata.normalize("NFKC", character).upper()
        if len(folded) == 1 and folded in PLATE_ALPHABET:
            fold[index, 1 + PLATE_ALPHABET.index(folded)] = 1.0
        else:
            fold[index, -1] = 1.0
    return fold


def with_temperature(folded: np.ndarray, temperature: float) -> np.ndarray:
    """(time, classes) probabilities as a softmax of their logits divided by ``temperature``."""
    if temperature == 1.0:
        return folded
    scaled = np.power(np.maximum(folded, 1e-12), 1.0 / temperature)
    return scaled / scaled.sum(axis=1, keepdims=True)


def decode(folded: np.ndarray) -> OcrResult:
    """Greedy CTC decoding of (time, 1 + alphabet + foreign) probabilities: the text over the
    alphabet (renormalised to it), and how surely a foreign symbol was read somewhere."""
    foreign_frames = folded.argmax(axis=1) == folded.shape[1] - 1
    foreign = float(folded[foreign_frames, -1].max()) if foreign_frames.any() else 0.0
    probabilities = folded[:, :-1]
    probabilities = probabilities / np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-9)
    best = probabilities.argmax(axis=1)
    text, confidences, alternatives = [], [], []
    gaps = [0.0]  # the foreign symbol's probability in the blank frames before the next character
    step = 0
    while step < len(best):
        end = step
        while end + 1 < len(best) and best[end + 1] == best[step]:
            end += 1
        if best[step] == 0:
            gaps[-1] = max(gaps[-1], float(folded[step : end + 1, -1].max()))
        else:
            run = probabilities[step : end + 1]
            peak = run[run[:, best[step]].argmax()]
            text.append(PLATE_ALPHABET[best[step] - 1])
            # The run's peak. Its weakest frame would catch some collapsed doubles (a 0 read as
            # the G before it) but measured worse: 35% vs 54% of synthetic dev crops accepted
            # at the same 95% precision.
            confidences.append(float(peak[best[step]]))
            top = np.argsort(peak[1:])[::-1][:TOP_K]
            alternatives.append(tuple(CharAlternative(PLATE_ALPHABET[i], float(peak[1 + i])) for i in top))
            gaps.append(0.0)
        step = end + 1
    return OcrResult(
        "".join(text), _mean(confidences), tuple(confidences), tuple(alternatives), foreign, tuple(gaps)
    )


def _join(lines: list[OcrResult]) -> OcrResult:
    """One result for a plate read as several lines (rows joined by a space)."""
    if len(lines) == 1:
        return lines[0]
    # The space between rows is certain; it stays out of the overall confidence.
    confidences = sum(((*line.char_confidences, 1.0) for line in lines), ())[:-1]
    alternatives = sum(((*line.alternatives, (CharAlternative(" ", 1.0),)) for line in lines), ())
    overall = _mean([c for line in lines for c in line.char_confidences])
    # Each row's gaps, end to end (the joining space sits between one row's last gap and the
    # next one's first); a row's ends are no gap inside the plate: the row break holds no symbol.
    gaps: list[float] = []
    for index, line in enumerate(lines):
        row = list(line.symbol_gaps) or [0.0] * (len(line.text) + 1)
        if index > 0:
            row[0] = 0.0
        if index < len(lines) - 1:
            row[-1] = 0.0
        gaps += row
    return OcrResult(
        " ".join(line.text for line in lines),
        overall,
        confidences,
        alternatives[:-1],
        max(line.foreign for line in lines),
        tuple(gaps),
    )


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0
