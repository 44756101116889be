"""Watchlists in the database (the review queue's: services.core.database): lists, their
plates with a note and tags, and a version number that every change raises. What a client
sends is checked here (names, plates, limits). Matching: watchlists.py, watchlist_match.py.

    store = WatchlistStore.from_settings(WatchlistSettings.from_env())
    plates, merged = merge([("ab 12-cde", "blue Golf", ["police"])])
    store.create("stolen", Tolerance(), plates, replace=False)
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from services.core.api_errors import ApiError
from services.core.database import database_engine
from services.core.env_settings import read_env
from services.plate_reader.review_store import ReviewSettings
from services.plate_reader.watchlist_match import ListedPlate, Tolerance

# The schema itself is made by services/core/migrations/versions/0003_watchlists.py.
_metadata = sa.MetaData()
lists_table = sa.Table(
    "watchlists",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("lookalikes", sa.Boolean),
    sa.Column("max_distance", sa.Integer),
    sa.Column("substitutions", sa.Boolean),
    sa.Column("version", sa.BigInteger),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
plates_table = sa.Table(
    "watchlist_plates",
    _metadata,
    sa.Column("list_name", sa.String(64), primary_key=True),
    sa.Column("plate", sa.String(16), primary_key=True),
    sa.Column("note", sa.String(500)),
    sa.Column("tags", sa.JSON),
)
state_table = sa.Table(
    "watchlist_state",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger),
)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_PLATE_LENGTH = 16  # longer than any format in plate_formats.yaml (12)
SEPARATORS = frozenset(" -.\u00b7")  # written between groups on plates and in spreadsheets


@dataclass(frozen=True)
class WatchlistSettings:
    """Read from `MODELPORT_WATCHLIST_<FIELD>`, e.g. `MODELPORT_WATCHLIST_MAX_PLATES=50000`."""

    # Plates in one list. Each worker holds every list in memory: 25 MB per 100,000 plates at
    # max_distance 1, 50 MB at 2 (bench_watchlist.py); a 100,000-plate JSON upload is ~1-5 MB.
    max_plates: int = 100_000
    max_total_plates: int = 300_000  # all lists together: bounds each worker's memory
    max_lists: int = 100
    refresh_s: float = 1.0  # how often each process checks for changes made elsewhere
    database_url: str = ""  # default: the review queue's (MODELPORT_REVIEW_DATABASE_URL, ...)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WatchlistSettings:
        return cls(**read_env(cls, "MODELPORT_WATCHLIST_", dict(environ) if environ is not None else None))


# --- what a client sends -------------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ApiError(
            400,
            f"watchlist name {name[:80]!r} is not allowed: use 1-64 characters of A-Z, a-z, 0-9, "
            "'_', '-' and '.', starting with a letter or digit",
            code="invalid_watchlist_name",
            param="name",
        )
    return name


def normalise_plate(text: str, where: str = "plate") -> str:
    """``"ab 12-cde"`` -> ``"AB12CDE"``. Full-width and other compatibility forms are taken as
    the ASCII they stand for (NFKC); a character still not A-Z0-9 is a 400 naming it: a Cyrillic
    "\u0410" typed for a Latin "A" would never match what the camera reads, so it is not guessed."""
    if text.isascii() and text.isalnum() and len(text) <= MAX_PLATE_LENGTH:  # the usual case, fast
        return text.upper()
    plate = []
    for char in text:
        folded = unicodedata.normalize("NFKC", char).upper()
        if folded in SEPARATORS or folded.isspace():
            continue
        if len(folded) != 1 or not ("A" <= folded <= "Z" or "0" <= folded <= "9"):
            name = unicodedata.name(char, "unnamed character")
            raise ApiError(
                400,
                f"`{where}` {text[:40]!r} has {char!r} (U+{ord(char):04X} {name}): plates are "
                "Latin letters A-Z and digits 0-9 (full-width forms are read as these); retype it "
                "in Latin letters",
                code="invalid_plate",
                param=where,
            )
        plate.append(folded)
    if not plate:
        raise ApiError(
            400, f"`{where}` is empty: give the plate's letters and digits", code="empty_plate", param=where
        )
    if len(plate) > MAX_PLATE_LENGTH:
        raise ApiError(
            400,
            f"`{where}` {text[:40]!r} has {len(plate)} letters and digits; "
            f"a plate has at most {MAX_PLATE_LENGTH}",
            code="invalid_plate",
            param=where,
        )
    return "".join(plate)


def merge(entries: Iterable[tuple[str, str | None, Sequence[str]]]) -> tuple[list[ListedPlate], int]:
    """Checked plates, each once, and how many duplicates were merged into them. The same plate
    twice (after normalising: "AB 12" and "ab12") is one: tags together, the later note when
    given."""
    merged: dict[str, ListedPlate] = {}
    duplicates = 0
    for i, (text, note, tags) in enumerate(entries):
        plate = normalise_plate(text, f"plates[{i}].plate")
        old = merged.get(plate)
        if old is not None:
            duplicates += 1
            note = note if note is not None else old.note
            tags = [*old.tags, *(t for t in tags if t not in old.tags)]
        merged[plate] = ListedPlate(plate, note, tuple(dict.fromkeys(tags)))
    return list(merged.values()), duplicates


# --- the database ----------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    name: str
    tolerance: Tolerance
    plates: int
    version: int
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lookalikes": self.tolerance.lookalikes,
            "max_distance": self.tolerance.max_distance,
            "substitutions": self.tolerance.substitutions,
            "plates": self.plates,
            "created_at": _utc(self.created_at).isoformat(),
            "updated_at": _utc(self.updated_at).isoformat(),
        }


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite gives them back naive


def not_found(name: str) -> ApiError:
    return ApiError(
        404, f"no watchlist {name!r}: GET /v1/watchlists lists them", code="watchlist_not_found", param="name"
    )


class WatchlistStore:
    """Lists and plates in the database. Every change is one transaction that also raises
    `watchlist_state.version` (first, so concurrent writers take turns and the limits they
    check hold): a failed upload leaves nothing behind."""

    def __init__(self, engine: sa.Engine, settings: WatchlistSettings) -> None:
        self.engine, self.settings = engine, settings

    @classmethod
    def from_settings(cls, settings: WatchlistSettings) -> WatchlistStore:
        return cls(database_engine(settings.database_url or ReviewSettings.from_env().database_url), settings)

    def create(
        self, name: str, tolerance: Tolerance, plates: Sequence[ListedPlate], *, replace: bool
    ) -> Summary:
        """A new list (409 if `name` exists, unless `replace`: then its plates and tolerance are
        these instead)."""
        check_name(name)
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            self._bump(connection)
            old = connection.execute(sa.select(lists_table).where(lists_table.c.name == name)).first()
            if old is not None and not replace:
                raise ApiError(
                    409,
                    f"watchlist {name!r} exists: PUT /v1/watchlists/{name} replaces it, "
                    f"POST /v1/watchlists/{name}/plates adds to it",
                    code="watchlist_exists",
                    param="name",
                )
            if old is None and self._count_lists(connection) >= self.settings.max_lists:
                raise ApiError(
                    400,
                    f"this server holds at most {self.settings.max_lists} watchlists "
                    "(MODELPORT_WATCHLIST_MAX_LISTS): delete one or add to an existing one",
                    code="too_many_watchlists",
                    param="name",
                )
            self._check_size(connection, name, len(plates))
            values = dict(
                lookalikes=tolerance.lookalikes,
                max_distance=tolerance.max_distance,
                substitutions=tolerance.substitutions,
                updated_at=now,
            )
            if old is None:
                connection.execute(
                    lists_table.insert().values(name=name, version=1, created_at=now, **values)
                )
            else:
                connection.execute(
                    lists_table.update()
                    .where(lists_table.c.name == name)
                    .values(version=lists_table.c.version + 1, **values)
                )
                connection.execute(plates_table.delete().where(plates_table.c.list_name == name))
            self._insert(connection, name, plates)
        return self._summary_or_404(name)

    def add(self, name: str, plates: Sequence[ListedPlate]) -> tuple[Summary, int]:
        """Add plates to a list; one already there is merged (tags together, the new note when
        given). Returns the list and how many of `plates` were on it already."""
        with self.engine.begin() as connection:
            self._bump(connection)
            self._touch(connection, name)
            wanted = {p.plate for p in plates}
            existing = {
                row.plate: ListedPlate(row.plate, row.note, tuple(row.tags))
                for row in connection.execute(sa.select(plates_table).where(plates_table.c.list_name == name))
                if row.plate in wanted
            }
            self._check_size(connection, name, self._count(connection, name) + len(wanted - set(existing)))
            rows = []
            for plate in plates:
                old = existing.get(plate.plate)
                if old is not None:
                    note = plate.note if plate.note is not None else old.note
                    plate = ListedPlate(plate.plate, note, tuple(dict.fromkeys((*old.tags, *plate.tags))))
                rows.append(plate)
            if existing:
                connection.execute(
                    plates_table.delete().where(
                        plates_table.c.list_name == name, plates_table.c.plate.in_(list(existing))
                    )
                )
            self._insert(connection, name, rows)
        return self._summary_or_404(name), len(existing)

    def remove_plate(self, name: str, plate: str) -> Summary:
        with self.engine.begin() as connection:
            self._bump(connection)
            self._touch(connection, name)
            gone = connection.execute(
                plates_table.delete().where(plates_table.c.list_name == name, plates_table.c.plate == plate)
            ).rowcount
            if not gone:
                raise ApiError(
                    404,
                    f"{plate!r} is not on watchlist {name!r}: GET /v1/watchlists/{name} lists its plates",
                    code="plate_not_listed",
                    param="plate",
                )
        return self._summary_or_404(name)

    def set_tolerance(self, name: str, tolerance: Tolerance) -> Summary:
        with self.engine.begin() as connection:
            self._bump(connection)
            self._touch(
                connection,
                name,
                lookalikes=tolerance.lookalikes,
                max_distance=tolerance.max_distance,
                substitutions=tolerance.substitutions,
            )
        return self._summary_or_404(name)

    def delete(self, name: str) -> None:
        with self.engine.begin() as connection:
            self._bump(connection)
            if not connection.execute(lists_table.delete().where(lists_table.c.name == name)).rowcount:
                raise not_found(name)
            connection.execute(plates_table.delete().where(plates_table.c.list_name == name))

    def summaries(self) -> list[Summary]:
        counts = (
            sa.select(plates_table.c.list_name, sa.func.count().label("n"))
            .group_by(plates_table.c.list_name)
            .subquery()
        )
        query = (
            sa.select(lists_table, sa.func.coalesce(counts.c.n, 0).label("n"))
            .outerjoin(counts, counts.c.list_name == lists_table.c.name)
            .order_by(lists_table.c.name)
        )
        with self.engine.connect() as connection:
            return [_summary(row, row.n) for row in connection.execute(query)]

    def summary(self, name: str) -> Summary | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(lists_table).where(lists_table.c.name == name)).first()
            return _summary(row, self._count(connection, name)) if row else None

    def plates(self, name: str, *, limit: int, after: str = "") -> list[ListedPlate]:
        """A page of a list's plates in plate order, those after `after`."""
        query = (
            sa.select(plates_table)
            .where(plates_table.c.list_name == name, plates_table.c.plate > after)
            .order_by(plates_table.c.plate)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [ListedPlate(r.plate, r.note, tuple(r.tags)) for r in connection.execute(query)]

    def version(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(state_table.c.version)).scalar_one())

    def list_versions(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return {
                r.name: r.version
                for r in connection.execute(sa.select(lists_table.c.name, lists_table.c.version))
            }

    def load(self, name: str) -> tuple[int, Tolerance, list[ListedPlate]] | None:
        """A list's version, tolerance and plates, read together."""
        with self.engine.begin() as connection:  # one transaction: the plates of that version
            row = connection.execute(sa.select(lists_table).where(lists_table.c.name == name)).first()
            if row is None:
                return None
            plates = connection.execute(
                sa.select(plates_table.c.plate, plates_table.c.note, plates_table.c.tags).where(
                    plates_table.c.list_name == name
                )
            )
            return row.version, _tolerance(row), [ListedPlate(p, n, tuple(t)) for p, n, t in plates]

    # --- inside a transaction

    @staticmethod
    def _bump(connection: sa.Connection) -> None:
        connection.execute(state_table.update().values(version=state_table.c.version + 1))

    @staticmethod
    def _touch(connection: sa.Connection, name: str, **values: Any) -> None:
        """The list's version up (404 when there is no such list)."""
        changed = connection.execute(
            lists_table.update()
            .where(lists_table.c.name == name)
            .values(version=lists_table.c.version + 1, updated_at=datetime.now(UTC), **values)
        ).rowcount
        if not changed:
            raise not_found(name)

    @staticmethod
    def _count(connection: sa.Connection, name: str) -> int:
        return int(
            connection.execute(
                sa.select(sa.func.count()).select_from(plates_table).where(plates_table.c.list_name == name)
            ).scalar_one()
        )

    @staticmethod
    def _count_lists(connection: sa.Connection) -> int:
        return int(connection.execute(sa.select(sa.func.count()).select_from(lists_table)).scalar_one())

    def _check_size(self, connection: sa.Connection, name: str, plates: int) -> None:
        """413 when the list would hold more than max_plates, or all lists more than max_total_plates."""
        limit = self.settings.max_plates
        if plates > limit:
            raise ApiError(
                413,
                f"a watchlist holds at most {limit:,} plates (MODELPORT_WATCHLIST_MAX_PLATES); "
                f"{name!r} would hold {plates:,}: split it into several lists",
                code="watchlist_too_large",
                param="plates",
            )
        others = connection.execute(
            sa.select(sa.func.count()).select_from(plates_table).where(plates_table.c.list_name != name)
        ).scalar_one()
        total = self.settings.max_total_plates
        if others + plates > total:
            raise ApiError(
                413,
                f"all watchlists together hold at most {total:,} plates "
                f"(MODELPORT_WATCHLIST_MAX_TOTAL_PLATES); with {name!r} they would hold "
                f"{others + plates:,}: delete plates or lists first",
                code="watchlists_too_large",
                param="plates",
            )

    @staticmethod
    def _insert(connection: sa.Connection, name: str, plates: Sequence[ListedPlate]) -> None:
        """The driver's own executemany: SQLAlchemy's per-row work made 100,000 rows take 3.6 s
        where this takes 1.3 s (SQLite, the same run), and on SQLite the write lock (which the
        API key counts and the review recorder wait for) is held that long."""
        if not plates:
            return
        marks = ", ".join(["?" if connection.dialect.paramstyle == "qmark" else "%s"] * 4)  # SQLite, psycopg
        connection.exec_driver_sql(
            f"INSERT INTO watchlist_plates (list_name, plate, note, tags) VALUES ({marks})",
            [(name, p.plate, p.note, json.dumps(list(p.tags))) for p in plates],
        )

    def _summary_or_404(self, name: str) -> Summary:
        summary = self.summary(name)
        if summary is None:  # deleted by someone else just now
            raise not_found(name)
        return summary


def _tolerance(row: Any) -> Tolerance:
    return Tolerance(
        lookalikes=bool(row.lookalikes),
        max_distance=int(row.max_distance),
        substitutions=bool(row.substitutions),
    )


def _summary(row: Any, plates: int) -> Summary:
    return Summary(row.name, _tolerance(row), int(plates), int(row.version), row.created_at, row.updated_at)
