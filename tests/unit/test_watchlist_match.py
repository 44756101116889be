"""Watchlist matching (pure logic) and the store on SQLite: look-alikes, one missing or extra
character, per-list tolerance, plate checks, merges, limits, all-or-nothing uploads, and
a second process seeing a change through the version number."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.core.api_errors import ApiError
from services.core.database import database_engine
from services.plate_reader.watchlist_match import (
    ListedPlate,
    Tolerance,
    WatchlistIndex,
    deletions,
    fold_lookalikes,
)
from services.plate_reader.watchlist_store import (
    WatchlistSettings,
    WatchlistStore,
    merge,
    normalise_plate,
    plates_table,
)
from services.plate_reader.watchlists import WatchlistBook


def index(*plates: str, **tolerance: object) -> WatchlistIndex:
    return WatchlistIndex.build([ListedPlate(p) for p in plates], Tolerance(**tolerance))  # type: ignore[arg-type]


def found(idx: WatchlistIndex, *texts: str) -> list[tuple[str, int, str]]:
    return [(m.plate, m.distance, m.matched) for m in idx.match(texts)]


@pytest.mark.parametrize(
    ("listed", "read"),
    [("AB12CDE", "A812CDE"), ("KO51ZIB", "K05121B"), ("AB12CDE", "AB1ZCDE"), ("QX11", "0X11"), ("G6", "6G")],
)
def test_lookalikes_cost_nothing(listed: str, read: str) -> None:
    assert found(index(listed), read) == [(listed, 0, read)]


def test_lookalikes_off_makes_them_edits() -> None:
    strict = index("AB12CDE", lookalikes=False, max_distance=0)
    assert found(strict, "A812CDE") == [] and found(strict, "AB12CDE") == [("AB12CDE", 0, "AB12CDE")]
    # Without look-alikes O for 0 is a wrong character: one edit with substitutions on.
    assert found(index("AB12CDE", lookalikes=False, substitutions=True), "A812CDE") == [
        ("AB12CDE", 1, "A812CDE")
    ]


@pytest.mark.parametrize(
    ("read", "distance"),
    [("AB12CD", 1), ("B12CDE", 1), ("AB12CDEX", 1), ("XAB12CDE", 1), ("AB112CDE", 1), ("A812CD", 1)],
)
def test_one_missing_or_extra_character(read: str, distance: int) -> None:
    assert found(index("AB12CDE"), read) == [("AB12CDE", distance, read)]


def test_the_edit_budget_is_per_list() -> None:
    assert found(index("AB12CDE", max_distance=0), "AB12CD") == []
    assert found(index("AB12CDE", max_distance=1), "AB2CD") == []
    assert found(index("AB12CDE", max_distance=2), "AB2CD") == [("AB12CDE", 2, "AB2CD")]


def test_a_wrong_character_matches_only_with_substitutions() -> None:
    # AB12CDF is usually another car: off by default; on, it is one edit.
    assert found(index("AB12CDE"), "AB12CDF") == []
    assert found(index("AB12CDE", substitutions=True), "AB12CDF") == [("AB12CDE", 1, "AB12CDF")]


def test_short_plates_match_only_exactly() -> None:
    idx = index("AB1", "XY99")
    assert found(idx, "AB1") == [("AB1", 0, "AB1")] and found(idx, "A81") == [("AB1", 0, "A81")]
    assert found(idx, "AB12") == [] and found(idx, "AB") == []
    assert found(idx, "XY9") == []  # one side under MIN_FUZZY_LENGTH: no edits either


def test_candidates_match_and_the_closest_text_wins() -> None:
    idx = index("KRW301", "AD799KB")
    # The plate read KRN301 is off by a wrong character; a candidate, KRW3O1, is the listed
    # plate with a look-alike: that is the match, at distance 0.
    assert found(idx, "KRN301", "KRW3O1") == [("KRW301", 0, "KRW3O1")]
    # Each listed plate once, at its smallest distance, the plate's own text before a candidate.
    assert found(idx, "AD799K", "AD799KB") == [("AD799KB", 0, "AD799KB")]
    assert found(idx, "AD799KB", "AD799K8") == [("AD799KB", 0, "AD799KB")]


def test_matches_carry_note_and_tags_and_come_closest_first() -> None:
    idx = WatchlistIndex.build(
        [ListedPlate("AB12CDE", "blue Golf", ("police",)), ListedPlate("AB12CD")], Tolerance()
    )
    [first, second] = idx.match(["AB12CD"])
    assert (first.plate, first.distance) == ("AB12CD", 0)
    assert (second.plate, second.distance, second.note, second.tags) == (
        "AB12CDE",
        1,
        "blue Golf",
        ("police",),
    )


def test_the_index_finds_what_a_full_scan_finds() -> None:
    """The symmetric-delete index against the brute-force answer (every plate's distance), on
    random plates and reads made from them by look-alikes, drops, inserts and substitutions."""
    rng = random.Random(7)
    alphabet = string.ascii_uppercase + string.digits
    plates = list({"".join(rng.choice(alphabet) for _ in range(rng.randint(4, 8))) for _ in range(2000)})
    for tolerance in (
        Tolerance(),
        Tolerance(max_distance=2, substitutions=True),
        Tolerance(lookalikes=False),
    ):
        idx = WatchlistIndex.build([ListedPlate(p) for p in plates], tolerance)
        for _ in range(300):
            read = list(rng.choice(plates))
            for _ in range(rng.randint(0, 2)):
                at = rng.randrange(len(read))
                edit = rng.choice("dis")
                if edit == "d":
                    del read[at]
                elif edit == "i":
                    read.insert(at, rng.choice(alphabet))
                else:
                    read[at] = rng.choice(alphabet)
            text = "".join(read)
            expected = sorted(
                (p, d)
                for p in plates
                if min(len(p), len(text)) >= 4
                and (d := tolerance.distance(tolerance.key(text), tolerance.key(p))) <= tolerance.max_distance
            ) + ([(text, 0)] if len(text) < 4 and text in plates else [])
            assert sorted((m.plate, m.distance) for m in idx.match([text])) == sorted(expected), text


def test_deletions_and_folding() -> None:
    assert deletions("ABC", 1) == {"ABC", "BC", "AC", "AB"}
    assert len(deletions("ABCDEFGH", 2)) == 1 + 8 + 28
    assert fold_lookalikes("OQ0 I1 Z2 S5 B8 G6 D") == "000 11 22 55 88 66 D"


# --- what a client sends


def test_plates_are_normalised_and_unicode_lookalikes_refused() -> None:
    assert normalise_plate("ab 12-cde") == "AB12CDE"
    assert normalise_plate("\uff21\uff22\uff11\uff12") == "AB12"  # full-width: NFKC makes it ASCII
    with pytest.raises(ApiError) as cyrillic:
        normalise_plate("\u0410B12CDE", "plates[3].plate")  # Cyrillic capital A
    assert cyrillic.value.status == 400 and cyrillic.value.param == "plates[3].plate"
    assert "U+0410 CYRILLIC CAPITAL LETTER A" in cyrillic.value.message
    with pytest.raises(ApiError, match="U\\+0391 GREEK CAPITAL LETTER ALPHA"):
        normalise_plate("\u0391B12")
    with pytest.raises(ApiError, match="U\\+00DF"):  # NFKC makes "ss" of it: two letters for one
        normalise_plate("STRA\u00dfE")
    with pytest.raises(ApiError) as empty:
        normalise_plate(" - ")
    assert empty.value.code == "empty_plate"
    with pytest.raises(ApiError, match="at most 16"):
        normalise_plate("A" * 17)


def test_duplicates_merge() -> None:
    plates, merged = merge([("AB 12", "first", ["a"]), ("ab12", None, ["b", "a"]), ("AB-12", "last", [])])
    assert merged == 2 and plates == [ListedPlate("AB12", "last", ("a", "b"))]


# --- the store on SQLite


@pytest.fixture
def store(tmp_path: Path) -> WatchlistStore:
    engine = database_engine(f"sqlite:///{tmp_path / 'watchlists.sqlite3'}")
    return WatchlistStore(engine, WatchlistSettings(max_plates=5, max_total_plates=8, max_lists=3))


def listed(*plates: str) -> list[ListedPlate]:
    return [ListedPlate(p) for p in plates]


def test_limits_are_4xx_naming_them(store: WatchlistStore) -> None:
    store.create("a", Tolerance(), listed("AB12", "AB13", "AB14", "AB15", "AB16"), replace=False)
    with pytest.raises(ApiError, match="at most 5 plates") as too_many:
        store.create("b", Tolerance(), listed(*(f"XY{i}0" for i in range(6))), replace=False)
    assert too_many.value.status == 413
    with pytest.raises(ApiError, match="at most 8 plates") as too_many_in_all:
        store.create("b", Tolerance(), listed("XY10", "XY20", "XY30", "XY40"), replace=False)
    assert too_many_in_all.value.status == 413
    with pytest.raises(ApiError, match="at most 5 plates"):
        store.add("a", listed("ZZ99"))
    store.add("a", listed("AB12"))  # already there: merged, not a sixth
    with pytest.raises(ApiError) as exists:
        store.create("a", Tolerance(), listed("AB12"), replace=False)
    assert exists.value.status == 409
    store.create("b", Tolerance(), [], replace=False)
    store.create("c", Tolerance(), [], replace=False)
    with pytest.raises(ApiError, match="at most 3 watchlists"):
        store.create("d", Tolerance(), [], replace=False)
    assert [s.plates for s in store.summaries()] == [5, 0, 0]


def test_a_failed_upload_stores_nothing(store: WatchlistStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def insert_then_fail(connection: sa.Connection, name: str, plates: list[ListedPlate]) -> None:
        connection.execute(plates_table.insert(), [{"list_name": name, "plate": "AB12", "tags": []}])
        raise RuntimeError("the database went away mid-upload")

    store.create("kept", Tolerance(), listed("KEPT1"), replace=False)
    monkeypatch.setattr(WatchlistStore, "_insert", staticmethod(insert_then_fail))
    with pytest.raises(RuntimeError):
        store.create("new", Tolerance(), listed("AB12"), replace=False)
    with pytest.raises(RuntimeError):
        store.create("kept", Tolerance(), listed("AB12"), replace=True)
    monkeypatch.undo()
    assert [(s.name, s.plates) for s in store.summaries()] == [("kept", 1)]
    assert store.plates("kept", limit=10) == listed("KEPT1")


def test_another_process_sees_each_change(store: WatchlistStore) -> None:
    """Two books on one database, as two workers: a change through one shows in the other at
    its next refresh, and an unchanged database is one number read."""
    this, other = WatchlistBook(lambda: store), WatchlistBook(lambda: store)
    this.refresh(), other.refresh()
    store.create("stolen", Tolerance(), [ListedPlate("AB12CDE", "blue Golf", ("police",))], replace=False)
    assert other.match("A812CDE") == []  # not refreshed yet
    assert other.refresh() is True and other.refresh() is False
    assert other.match("A812CDE") == [
        {
            "list": "stolen",
            "plate": "AB12CDE",
            "distance": 0,
            "matched": "A812CDE",
            "note": "blue Golf",
            "tags": ["police"],
        }
    ]
    store.set_tolerance("stolen", Tolerance(lookalikes=False, max_distance=0))
    other.refresh()
    assert other.match("A812CDE") == []
    store.delete("stolen")
    other.refresh()
    assert other.match("AB12CDE") == []
