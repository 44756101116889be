"""The vote between a plate's two reads (read_fusion.fuse). The candidate lists are fakes built
here (fake_candidates), not model output; the real reads are measured in the README."""

from __future__ import annotations

from services.plate_reader.read_fusion import DISAGREE_CAP, fuse
from services.plate_reader.types import Candidate

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
