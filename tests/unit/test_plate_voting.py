"""The vote over a vehicle's readings: characters by weight, lengths aligned, agreement as evidence.
Readings are fakes built here (fake_reading), not model output."""

from __future__ import annotations

from services.plate_reader.plate_voting import vote
from services.plate_reader.types import BoundingBox, Candidate, PlateReading

THRESHOLD = 0.93


def fake_reading(plate: str, score: float) -> PlateReading:
    return PlateReading(
        plate=plate,
        score=score,
        dscore=0.9,
        box=BoundingBox(0, 0, 100, 30),
        candidates=(Candidate(plate, score, None, score),),
        review=score < THRESHOLD,
    )


def test_each_character_goes_to_the_heaviest_vote() -> None:
    # Every frame misreads a different character; the vote reads the plate none of them read.
    voted = vote(
        [fake_reading("AD799K8", 0.6), fake_reading("A0799KB", 0.6), fake_reading("AD7S9KB", 0.6)],
        review_threshold=THRESHOLD,
    )
    assert voted.plate == "AD799KB"
    assert voted.agreeing == 0
    assert voted.review  # stitched from frames that each read something else: a human looks


def test_a_sure_reading_outweighs_several_unsure_ones() -> None:
    voted = vote(
        [fake_reading("KRN301", 0.3), fake_reading("KRN301", 0.3), fake_reading("KRW301", 0.97)],
        review_threshold=THRESHOLD,
    )
    assert voted.plate == "KRW301"
    assert [c.plate for c in voted.candidates] == ["KRW301", "KRN301"]


def test_readings_of_other_lengths_vote_where_they_align() -> None:
    # A dropped and an extra character: both still vote on the characters they share.
    voted = vote(
        [
            fake_reading("AB12CDE", 0.5),
            fake_reading("AB12CD", 0.9),  # last character dropped
            fake_reading("XAB12CDE", 0.5),  # an extra one in front
            fake_reading("AB17CDE", 0.5),
        ],
        review_threshold=THRESHOLD,
    )
    assert voted.plate == "AB12CDE"


def test_agreement_across_frames_raises_the_score_past_the_threshold() -> None:
    one = vote([fake_reading("AD799KB", 0.85)], review_threshold=THRESHOLD)
    five = vote([fake_reading("AD799KB", 0.85)] * 5, review_threshold=THRESHOLD)
    assert one.review and one.score == 0.85
    assert not five.review and five.score > one.score and five.agreeing == 5


def test_disagreement_holds_the_score_down() -> None:
    split = vote(
        [fake_reading("AD799KB", 0.95)] * 3 + [fake_reading("AD799K8", 0.95)] * 2,
        review_threshold=THRESHOLD,
    )
    assert split.plate == "AD799KB"
    assert split.review  # 2 of 5 sure frames read another plate


def test_no_text_votes_for_nothing() -> None:
    voted = vote([fake_reading("", 0.0)], review_threshold=THRESHOLD)
    assert (voted.plate, voted.review, voted.candidates) == ("", True, ())
