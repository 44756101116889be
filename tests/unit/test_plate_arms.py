"""Coats of arms inside Croatian and Slovak plates (ZG [arms] 1234-AB, BA [arms] 302OZ): the
formats' "|" in plate_formats.yaml, plate_text's rules around it and read_fusion's vote.

Each reading here is the recogniser's own output (the served PP-OCRv4 model, text lines on) on a
dev camera crop (.bench/synth2/camera: synth_plates.py --seed 2 --camera 280), or on the real dev
photo named, written out at 3 decimals with the alternatives under 0.01 left out: measured
inputs, not made-up ones. tests/unit/test_ocr.py reads drawn plates with the model itself.
"""

from __future__ import annotations

from statistics import fmean

import numpy as np
import pytest

from services.plate_reader.ocr import PLATE_ALPHABET, _join, decode
from services.plate_reader.plate_text import rank_candidates
from services.plate_reader.read_fusion import fuse
from services.plate_reader.types import CharAlternative, OcrResult

THRESHOLD = 0.93  # settings.review_threshold


def measured(
    text: str,
    confidences: tuple[float, ...],
    symbols: tuple[float, ...],
    foreign: float = 0.0,
    alternatives: dict[int, tuple[tuple[str, float], ...]] | None = None,
) -> OcrResult:
    """A recorded reading; ``alternatives`` maps a position to the model's next-best characters."""
    offered = tuple(
        (CharAlternative(char, p), *(CharAlternative(a, q) for a, q in (alternatives or {}).get(i, ())))
        for i, (char, p) in enumerate(zip(text, confidences))
    )
    return OcrResult(text, fmean(confidences), confidences, offered, foreign, symbols)


def test_the_arms_read_as_a_letter_are_dropped_and_the_plate_flagged() -> None:
    # camera_00143, KA [arms] 325-AO, stretched read: the checkerboard read as an E at 0.59.
    read = measured(
        "KAE 325-AO",
        (1.0, 1.0, 0.59, 0.534, 0.999, 1.0, 1.0, 0.99, 0.999, 0.933),
        (0.0, 0.0, 0.09, 0.001, 0.002, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        alternatives={2: (("3", 0.012),), 9: (("0", 0.064),)},
    )
    best = rank_candidates(read)[0]
    assert (best.plate, best.region) == ("KA325AO", "hr")
    # Right only if the E was no letter: at most 1 - 0.59 sure, so a person checks it.
    assert best.confidence <= 1 - 0.59 < THRESHOLD


def test_the_arms_read_as_a_3_are_dropped() -> None:
    # camera_00137, VZ [arms] 0857 / TM (two rows), stretched read: the arms read as a 3 at 0.59.
    read = measured(
        "VZ30857 TM",
        (0.978, 0.999, 0.594, 0.989, 0.993, 0.999, 0.997, 1.0, 0.996, 0.999),
        (0.0, 0.0, 0.0, 0.028, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    )
    best = rank_candidates(read)[0]
    assert (best.plate, best.region) == ("VZ0857TM", "hr")
    assert best.confidence <= 1 - 0.594


def test_the_arms_where_the_format_has_them_keep_a_sure_plate_sure() -> None:
    # camera_00040, BA [arms] 167FM: the arms seen as a symbol (0.17) between BA and 167.
    read = measured(
        "BA167FM",
        (0.998, 0.998, 1.0, 0.998, 0.999, 0.999, 0.999),
        (0.02, 0.0, 0.166, 0.0, 0.0, 0.0, 0.0, 0.0),
    )
    best = rank_candidates(read)[0]
    # A format with arms there (Slovak AA|999AA, or Croatian AA|999AA alike), not France's
    # AA999AA, and as sure as its weakest character.
    assert best.plate == "BA167FM" and best.region in {"hr", "sk"}
    assert best.confidence > THRESHOLD


def test_a_symbol_where_the_format_has_no_arms_flags_the_plate() -> None:
    # camera_00118, BB [arms] 671 / LM: the lower row was left out (text_lines.ROW_SHARE), so
    # BB671 fits Germany's layout and was auto-accepted at 0.99. The arms at 0.72 say otherwise.
    read = measured(
        "BB671",
        (0.999, 0.996, 0.998, 1.0, 0.999),
        (0.0, 0.0, 0.722, 0.0, 0.0, 0.0),
        foreign=0.722,
    )
    best = rank_candidates(read)[0]
    assert best.plate == "BB671"
    assert best.confidence <= 1 - 0.722
    # camera_00083, MI [arms] 623 / QK read M623 QK (the I lost beside the arms): fits NL's
    # A999AA and was auto-accepted at 0.96; a symbol after one letter fits no format's arms.
    read = measured(
        "M623 QK",
        (0.998, 0.996, 0.999, 0.999, 1.0, 0.984, 0.996),
        (0.001, 0.15, 0.0, 0.0, 0.0, 0.0, 0.0, 0.013),
        alternatives={5: (("O", 0.013),)},
    )
    best = rank_candidates(read)[0]
    assert best.plate == "M623QK" and best.confidence <= 1 - 0.15 < THRESHOLD


def test_a_format_with_arms_where_they_were_seen_ranks_first() -> None:
    # camera_00171, ZG [arms] 9062-OT: the arms seen at 0.39 between ZG and 9062. India's
    # AA99A{0,3}9999 (ZG906207, one look-alike) fits without the arms; Croatia's, with them.
    read = measured(
        "ZG 9062-0T",
        (0.999, 0.993, 0.517, 0.989, 0.992, 0.976, 0.995, 0.996, 0.986, 0.96),
        (0.0, 0.0, 0.386, 0.002, 0.001, 0.0, 0.0, 0.0, 0.0, 0.0, 0.001),
        foreign=0.386,
        alternatives={9: (("1", 0.014),)},
    )
    best = rank_candidates(read)[0]
    assert (best.plate, best.region) == ("ZG9062OT", "hr")
    assert best.confidence < THRESHOLD  # the O is the look-alike table's guess


def test_a_us_state_emblem_between_letters_and_digits_keeps_the_us_layout() -> None:
    # US street crop us_0050 (synth2/us-street), ZXV5774, read at the line's own width: a symbol
    # (0.11) between ZXV and 5774. With arms only in the Czech 9A*|9999, the 2 that the OCR half
    # offered for the Z (0.175) made 2XV5774 rank first; US layouts may hold an emblem there too.
    read = measured(
        "ZXV5774",
        (0.689, 0.377, 0.434, 0.929, 0.985, 0.985, 0.969),
        (0.001, 0.003, 0.0, 0.108, 0.0, 0.0, 0.0, 0.0),
        alternatives={
            0: (("2", 0.175), ("D", 0.062)),
            1: (("N", 0.156), ("I", 0.118)),
            2: (("N", 0.223), ("W", 0.028)),
            3: (("S", 0.057),),
        },
    )
    assert rank_candidates(read)[0].plate == "ZXV5774"


def test_a_symbol_before_the_plate_lowers_it() -> None:
    # camera_00130, BJ [arms] 520 / ZZ at night: a symbol (0.29) read before the B.
    read = measured(
        "BJ 520 ",
        (0.845, 0.838, 0.85, 0.944, 0.909, 0.98, 1.0),
        (0.294, 0.0, 0.0, 0.033, 0.0, 0.001, 0.0, 0.0),
        foreign=0.41,
        alternatives={1: (("U", 0.031), ("I", 0.02)), 2: (("-", 0.011),), 4: (("0", 0.01),)},
    )
    assert rank_candidates(read)[0].confidence <= 1 - 0.294


def test_arms_read_as_a_sure_symbol_are_no_foreign_text() -> None:
    # camera_00034, PO [arms] 110 / AX: the arms read at 0.963 as a symbol no plate carries,
    # which capped the plate at 1 - 0.963 like the "%" of a "SALE 50%" sign. At the arms' place
    # it is the plate's own; the O/0 doubt (0.735 against 0.254) still flags it.
    read = measured(
        "PO110 AX",
        (0.997, 0.735, 0.999, 1.0, 0.999, 1.0, 0.999, 0.999),
        (0.0, 0.0, 0.963, 0.0, 0.0, 0.0, 0.0, 0.0, 0.004),
        foreign=0.963,
        alternatives={1: (("0", 0.254),)},
    )
    best = rank_candidates(read)[0]
    assert best.plate == "PO110AX"
    assert best.confidence > 1 - 0.963 + 0.1


def test_the_czech_inspection_sticker_is_no_missing_letter() -> None:
    # Real dev photo fast_alpr__test_image.png, 5AU 5341: the sticker between the groups read as
    # a symbol at 0.66. Czech formats mark it ("9A*|9999"), so the plate stays accepted.
    read = measured(
        "5AU5341",
        (0.999, 0.998, 0.987, 0.997, 0.999, 0.996, 0.997),
        (0.0, 0.0, 0.0, 0.66, 0.0, 0.0, 0.0, 0.0),
        foreign=0.66,
        alternatives={2: (("0", 0.01),)},
    )
    best = rank_candidates(read)[0]
    assert (best.plate, best.region) == ("5AU5341", "cz")
    assert best.confidence > THRESHOLD


def test_two_reads_that_agree_keep_the_surer_ones_sureness() -> None:
    # camera_00137, VZ [arms] 0857 / TM. The stretched read took the arms for a 3 (0.594):
    # dropped by the rules, so at most 0.41 sure. The read at the cut's own width saw them as a
    # symbol (0.134) and read the plate surely. Both say VZ0857TM: the surer one stands.
    stretched = measured(
        "VZ30857 TM",
        (0.978, 0.999, 0.594, 0.989, 0.993, 0.999, 0.997, 1.0, 0.996, 0.999),
        (0.0, 0.0, 0.0, 0.028, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    )
    own_width = measured(
        "VZ0857 TM",
        (0.987, 0.946, 0.997, 1.0, 1.0, 1.0, 1.0, 0.993, 0.999),
        (0.0, 0.0, 0.134, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.001),
        alternatives={1: (("2", 0.015),)},
    )
    first, second = rank_candidates(stretched), rank_candidates(own_width)
    assert first[0].plate == second[0].plate == "VZ0857TM"
    assert first[0].confidence < THRESHOLD <= second[0].confidence
    fused = fuse(first, second)
    assert fused[0].plate == "VZ0857TM" and fused[0].confidence == second[0].confidence


def frames(*steps: tuple[str, float]) -> np.ndarray:
    """Made-up (time, blank + plate alphabet + foreign) probabilities, one frame per step: a
    character read surely, or a blank ("") frame with that much probability of a foreign symbol."""
    out = np.zeros((len(steps), len(PLATE_ALPHABET) + 2), dtype=np.float32)
    for t, (char, foreign) in enumerate(steps):
        column = 1 + PLATE_ALPHABET.index(char) if char else 0
        out[t, column], out[t, -1] = 1.0 - foreign, foreign
    return out


def test_the_decoder_says_in_which_gap_a_symbol_sits_and_a_row_break_holds_none() -> None:
    top = decode(frames(("A", 0.0), ("", 0.6), ("1", 0.0), ("", 0.3)))
    assert (top.text, top.symbol_gaps) == ("A1", (0.0, pytest.approx(0.6), pytest.approx(0.3)))
    bottom = decode(frames(("", 0.4), ("B", 0.0)))
    joined = _join([top, bottom])
    # "A1 B": the symbol between A and 1 stays; the rows' ends (0.3 and 0.4) are no gap inside
    # the plate, or every two-row plate with noise at a row's end would be flagged.
    assert joined.text == "A1 B"
    assert joined.symbol_gaps == (0.0, pytest.approx(0.6), 0.0, 0.0, 0.0)


def test_a_lost_code_letter_is_put_back_only_after_a_symbol_at_the_start() -> None:
    # tests/unit/test_ocr.py's drawn VŽ [arms] 123-AB, read V123-AB: the Ž and the arms one symbol.
    gaps = (0.0, 0.89, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    read = measured("V123-AB", (0.576, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), gaps)
    best = rank_candidates(read)[0]
    assert (best.plate, best.region) == ("VZ123AB", "hr")
    assert best.confidence <= 0.5 < THRESHOLD  # the Z was not read
    # No symbol after the V: an Austrian-style V123AB is not made Croatian.
    plain = measured("V123-AB", (0.576, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), (0.0,) * 8)
    assert all(c.plate != "VZ123AB" for c in rank_candidates(plain))
    # The letter is only put back at the start: MI [symbol] 634XB (a Slovak dev camera crop's
    # reading, camera_00922) keeps its M, not Šibenik's SI with the M dropped.
    slovak = measured(
        "MI634XB", (0.99, 0.98, 1.0, 1.0, 1.0, 1.0, 1.0), (0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0)
    )
    assert all(not c.plate.startswith("SI") for c in rank_candidates(slovak, regions=["hr"]))
    # A reading that fits Croatia as read gets no letter put back (PU049L stays Pula's PU).
    pozega = measured(
        "PU049-L", (0.99, 0.98, 1.0, 1.0, 1.0, 1.0, 1.0), (0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0)
    )
    assert rank_candidates(pozega, regions=["hr"])[0].plate == "PU049L"
