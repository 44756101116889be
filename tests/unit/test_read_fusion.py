"""The vote between a plate's two reads (read_fusion.fuse) and between two recognisers
(fuse_equals). The candidate lists, recognisers and line finder are fakes built here
(fake_candidates, FakeOCR, FakeFinder), not model output; the real reads are measured in the
README."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.plate_reader.read_fusion import DISAGREE_CAP, agreed, fuse, fuse_equals, read_voted
from services.plate_reader.text_lines import TextLine
from services.plate_reader.types import Candidate, OcrResult

THRESHOLD = 0.93


def fake_candidates(*plates: tuple[str, float]) -> tuple[Candidate, ...]:
    """Ranked candidates, each (plate, sureness), as rank_candidates would give them."""
    return tuple(Candidate(plate, sure, "us-generic", sure) for plate, sure in plates)


def test_agreeing_reads_keep_the_first_reads_candidates_and_sureness() -> None:
    first = fake_candidates(("4TRY256", 0.96), ("4TRY2S6", 0.5))
    second = fake_candidates(("4TRY256", 0.9))
    assert fuse(first, second) == first


def test_a_confident_read_that_drops_a_middle_character_is_flagged_by_the_other_read() -> None:
    # The cut's known miss: KRW301 read KR301 at 0.985, while the stretched read saw the W.
    stretched = fake_candidates(("KRW301", 0.97))
    plain = fake_candidates(("KR301", 0.985), ("KR3O1", 0.4))
    fused = fuse(stretched, plain)
    assert fused[0].plate == "KR301"  # the better score ranks first ...
    assert "KRW301" in [c.plate for c in fused]  # ... the other read's plate is kept
    assert all(c.confidence <= DISAGREE_CAP < THRESHOLD for c in fused)  # ... and it is flagged


def test_the_better_scoring_read_ranks_first_when_they_disagree() -> None:
    fused = fuse(fake_candidates(("WEJ8538", 0.9)), fake_candidates(("WE8538", 0.6)))
    assert [c.plate for c in fused] == ["WEJ8538", "WE8538"]
    assert fused[0].confidence == DISAGREE_CAP


def test_a_read_that_found_nothing_does_not_outvote_one_that_did() -> None:
    first = fake_candidates(("AB12CDE", 0.99))
    assert fuse(first, ()) == first
    assert fuse((), first) == first


# Two recognisers as equals (read_fusion.fuse_equals, read_voted's ``tuned``).


def test_two_recognisers_that_agree_count_it_as_evidence() -> None:
    base = fake_candidates(("8GRF393", 0.8), ("8GRF398", 0.2))
    tuned = fake_candidates(("8GRF393", 0.75), ("BGRF393", 0.3))
    fused = fuse_equals(base, tuned)
    assert fused[0] == Candidate("8GRF393", 0.8, "us-generic", agreed(0.8, 0.75))
    # each alone would be flagged; agreeing, the plate is wrong only if both are: 1 - 0.2 * 0.25
    assert abs(fused[0].confidence - 0.95) < 1e-9 and fused[0].confidence >= THRESHOLD
    assert [c.plate for c in fused] == ["8GRF393", "8GRF398"]  # the surer reading's list


def test_two_recognisers_that_disagree_give_both_plates_flagged_the_surer_first() -> None:
    # The tuned recogniser's confident deletion (8GRF393 read 8GR393 at 0.996).
    base = fake_candidates(("8GRF393", 0.95))
    tuned = fake_candidates(("8GR393", 0.996))
    fused = fuse_equals(base, tuned)
    assert [c.plate for c in fused] == ["8GR393", "8GRF393"]
    assert all(c.confidence <= DISAGREE_CAP < THRESHOLD for c in fused)


class FakeOCR:
    """A fake recogniser: each call gives the next list of (text, sureness) it was built with,
    one per plate asked for, and it counts its calls. With ``tail``, its first read_both call
    also gives those as a grafted tuned tail's readings (PlateOCR.read_both)."""

    def __init__(self, *calls: list[tuple[str, float]], tail: list[tuple[str, float]] | None = None) -> None:
        self.answers, self.calls, self.tail = calls, 0, tail

    def read_lines(self, lines_per_crop: Sequence[Sequence[np.ndarray]]) -> list[OcrResult]:
        texts = self.answers[self.calls]
        self.calls += 1
        assert len(texts) == len(lines_per_crop)
        return [OcrResult(t, c, (c,) * len(t)) for t, c in texts]

    def read_both(
        self, lines_per_crop: Sequence[Sequence[np.ndarray]]
    ) -> tuple[list[OcrResult], list[OcrResult] | None]:
        tail = [OcrResult(t, c, (c,) * len(t)) for t, c in self.tail] if self.tail else None
        return self.read_lines(lines_per_crop), tail


class FakeFinder:
    """A fake text-line finder that finds no line: each crop is read whole."""

    def find(self, crops: Sequence[np.ndarray]) -> list[list[TextLine]]:
        return [[] for _ in crops]


def fake_rank(reading: OcrResult, index: int, hint: object) -> tuple[Candidate, ...]:
    return fake_candidates((reading.text, min(reading.char_confidences)))


def test_the_tuned_recogniser_reads_every_plate_in_one_more_call_and_votes_as_an_equal() -> None:
    crops = [np.full((40, 160, 3), 200, np.uint8) for _ in range(2)]
    # base: the first read of both, then the flagged plate again at its own width
    base = FakeOCR([("AB123CD", 0.99), ("KRW301", 0.99)], [("KRW301", 0.97)])
    tuned = FakeOCR([("AB123CD", 0.95), ("KR301", 0.999)])
    agree, disagree = read_voted(base, FakeFinder(), crops, fake_rank, tuned)
    assert tuned.calls == 1 and base.calls == 2
    assert agree[0] == Candidate("AB123CD", 0.99, "us-generic", agreed(0.99, 0.95))
    assert [c.plate for c in disagree] == ["KR301", "KRW301"]
    assert max(c.confidence for c in disagree) <= DISAGREE_CAP


def test_a_tuned_tail_reads_in_the_first_reads_own_call_and_votes_as_an_equal() -> None:
    crops = [np.full((40, 160, 3), 200, np.uint8) for _ in range(2)]
    # base: the first read of both (the tail's readings from the same call), then the flagged
    # plate again at its own width: two calls, as the base alone makes
    base = FakeOCR(
        [("AB123CD", 0.99), ("KRW301", 0.99)], [("KRW301", 0.97)], tail=[("AB123CD", 0.95), ("KR301", 0.999)]
    )
    agree, disagree = read_voted(base, FakeFinder(), crops, fake_rank)
    assert base.calls == 2
    assert agree[0] == Candidate("AB123CD", 0.99, "us-generic", agreed(0.99, 0.95))
    assert [c.plate for c in disagree] == ["KR301", "KRW301"]
    assert max(c.confidence for c in disagree) <= DISAGREE_CAP


class TiltedFinder:
    """A fake text-line finder: one line tilted 10 degrees across the first crop, none in the
    others (read whole)."""

    def find(self, crops: Sequence[np.ndarray]) -> list[list[TextLine]]:
        return [[TextLine(80, 20, 150, 20, 10.0, 0.9)], *([] for _ in crops[1:])]


def test_the_tails_reading_of_the_cut_that_won_is_the_one_voted(monkeypatch) -> None:
    # The first call reads both crops, then the tilted line sheared (a third line set). The
    # sheared cut reads surer, so it is the plate's: the tail's reading of that cut (index 2),
    # not of the rotated one (index 0), is fused with it.
    monkeypatch.setattr("services.plate_reader.read_fusion.CHECK_ENDS", False)
    crops = [np.full((40, 160, 3), 200, np.uint8) for _ in range(2)]
    base = FakeOCR(
        [("AB12CDE", 0.6), ("KR301", 0.99), ("AB12CDE", 0.99)],
        tail=[("XY99", 0.99), ("KR301", 0.99), ("AB12CDE", 0.97)],
    )
    tilted, whole = read_voted(base, TiltedFinder(), crops, fake_rank)
    assert tilted[0] == Candidate("AB12CDE", 0.99, "us-generic", agreed(0.99, 0.97))
    assert whole[0].plate == "KR301" and base.calls == 1


def test_agreeing_on_a_reading_no_format_fits_never_makes_it_sure() -> None:
    # Both recognisers read only a two-row plate's lower row, "PZ" (no format): their agreement
    # is no evidence that it is a plate, so it keeps the surer reading's score and stays flagged.
    base = (Candidate("PZ", 0.778, None, 0.778),)
    tuned = (Candidate("PZ", 0.744, None, 0.744),)
    assert fuse_equals(base, tuned) == base
    assert agreed(0.778, 0.744) > THRESHOLD  # what agreement would have made of it
