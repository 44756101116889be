"""Look-alikes the layouts decide (issue 19): a plate read with a 0 where an O makes a plate of a
country's layout, and the read itself fits only a generic one, is flagged, and at RANK_ODDS or
more read as the country's plate."""

from __future__ import annotations

import pytest

from services.plate_reader.plate_text import (
    RANK_ODDS,
    layout_prior,
    load_formats,
    rank_candidates,
)
from services.plate_reader.types import CharAlternative, OcrResult


def read_with_rival(text: str, at: int, rival: str, p: float) -> OcrResult:
    """``text`` read at 0.995 a character, the OCR giving ``rival`` probability ``p`` at ``at``."""
    confidences = tuple(0.995 - p if i == at else 0.995 for i in range(len(text)))
    offered = tuple(
        (CharAlternative(c, confidences[i]), *((CharAlternative(rival, p),) if i == at else ()))
        for i, c in enumerate(text)
    )
    return OcrResult(text, 0.99, confidences, offered)


def test_a_country_layout_makes_a_plate_far_likelier_than_a_generic_one() -> None:
    formats = load_formats()
    regions = tuple(formats.patterns)
    generic_only = layout_prior("Q0467PW", regions, formats)  # A9999AA: eu-generic alone
    french = layout_prior("QO467PW", regions, formats)  # AA999AA: fr, it, sk, ar, eu-generic
    assert generic_only > 0 and french / generic_only > 1e5
    assert layout_prior("Q0467PW!", regions, formats) == 0.0


def test_a_zero_whose_o_would_make_a_country_plate_is_read_as_that_plate() -> None:
    # Dev seed 5, camera_00488: QO467PW read Q0467PW, the O at 0.4%; accepted at 0.987 before the
    # layouts weighed look-alikes, then flagged; at odds of RANK_ODDS or more, read as QO467PW,
    # still flagged.
    formats = load_formats()
    regions = tuple(formats.patterns)
    odds = (
        0.0044
        / (0.995 - 0.0044)
        * layout_prior("QO467PW", regions, formats)
        / layout_prior("Q0467PW", regions, formats)
    )
    assert odds >= RANK_ODDS
    best, *rest = rank_candidates(read_with_rival("Q0467PW", 1, "O", 0.0044))
    assert best.plate == "QO467PW" and best.region == "fr"
    assert best.confidence < 0.5  # flagged: the OCR's 0 contests its O
    read = rest[0]  # the plate as read comes next, as sure as its share of the odds
    assert read.plate == "Q0467PW" and read.confidence == pytest.approx(1 / (1 + odds))


def test_the_issues_ba302oz_read_with_a_zero_for_its_o_is_read_right() -> None:
    # BA302OZ read BA3020Z, unflagged, twice on the issue's real photos; now read right, for
    # review: AA999AA (Slovakia, France, Italy, Argentina) against generic layouts alone.
    [best, *_] = rank_candidates(read_with_rival("BA3020Z", 5, "O", 0.01))
    assert best.plate == "BA302OZ" and best.confidence < 0.5


def test_a_swap_the_layouts_favour_under_rank_odds_is_flagged_not_read_first() -> None:
    formats = load_formats()
    regions = tuple(formats.patterns)
    prior_ratio = layout_prior("QO467PW", regions, formats) / layout_prior("Q0467PW", regions, formats)
    rival = 10 / prior_ratio  # odds ~10: the O likelier than the 0, not by RANK_ODDS
    [best, *_] = rank_candidates(read_with_rival("Q0467PW", 1, "O", rival))
    assert best.plate == "Q0467PW" and best.confidence < 0.1


def test_a_look_alike_both_layouts_allow_alike_is_left_to_the_rival_alone() -> None:
    # DDE070 and DDEO70 are both German (and generic): the layouts do not tell them apart, so only
    # CONTEST_WEIGHT's 2 x 0.4% counts.
    [best, *_] = rank_candidates(read_with_rival("DDE070", 3, "O", 0.004), regions=["de"])
    assert best.plate == "DDE070" and best.confidence > 0.98


def test_a_country_plate_whose_zero_would_make_a_generic_one_stays_sure() -> None:
    # France's AB-012-CD with an O rival at the 0: ABO12CD fits only eu-generic, far less likely,
    # so only CONTEST_WEIGHT's 2 x 2% counts.
    [best, *_] = rank_candidates(read_with_rival("AB012CD", 2, "O", 0.02))
    assert best.plate == "AB012CD" and best.confidence == pytest.approx(0.975 - 2 * 0.02)
