"""Watchlists: named lists of plates (a note and tags each), stored in the review queue's
database, matched against every reading. Routes: watchlist_api.py; storage: watchlist_store.py;
matching: watchlist_match.py.

For other parts of the reader (video and stream vehicle events), one call:

    from services.plate_reader.watchlists import watchlist_matches
    watchlist_matches("AB12CDE", ["A812CDE", "AB12CD"])   # the plate, then its other candidates
    # -> [{"list": "stolen", "plate": "AB12CDE", "distance": 0, "matched": "AB12CDE",
    #      "note": "blue Golf", "tags": ["police"]}]            # closest first; [] when none

It reads this process's in-memory indexes only (microseconds, never the database), so it is
safe on the event loop and in a hot loop. They are loaded by `start()` (the service does it
once) and kept current by a thread that reads one version number every `refresh_s`: a change
made through another worker or replica shows within that time; one made through this process
at once. Before `start()` (a script, a unit test) it answers [].
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import bentoml

from services.core.bounded_labels import BoundedLabels
from services.plate_reader.plate_text import normalise
from services.plate_reader.watchlist_match import Probes, Tolerance, WatchlistIndex
from services.plate_reader.watchlist_store import WatchlistSettings, WatchlistStore

logger = logging.getLogger("bentoml.modelport.watchlists")

MAX_MATCHES = 10  # per reading, closest first: a short plate could match many listed ones
MAX_LIST_LABELS = 200  # /metrics labels by list name; later names count as "other"

LISTS = bentoml.metrics.Gauge(
    name="modelport_watchlists", multiprocess_mode="livemax", documentation="Watchlists loaded"
)
PLATES = bentoml.metrics.Gauge(
    name="modelport_watchlist_plates",
    multiprocess_mode="livemax",
    documentation="Plates on all watchlists loaded",
)
MATCHES = bentoml.metrics.Counter(
    name="modelport_watchlist_matches",
    documentation="Readings or vehicle events that matched a listed plate, by list",
    labelnames=["list"],
)
REFRESH_FAILURES = bentoml.metrics.Counter(
    name="modelport_watchlist_refresh_failures",
    documentation="Times the watchlists could not be read from the database (the last ones loaded are kept)",
)
_list_label = BoundedLabels(MAX_LIST_LABELS)


class WatchlistBook:
    """Every list's index in this process, reloaded list by list when the database's version
    number moves. Matching reads a dict swapped whole, so it needs no lock."""

    def __init__(self, open_store: Callable[[], WatchlistStore]) -> None:
        self.open_store = open_store  # called at each refresh: a database down at start is opened later
        self._indexes: dict[str, WatchlistIndex] = {}
        self._versions: dict[str, int] = {}
        self._seen = -1
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Load what changed since the last refresh; True when anything did. Raises when the
        database cannot be read (the indexes loaded before stay)."""
        with self._lock:
            store = self.open_store()
            version = store.version()
            if version == self._seen:
                return False
            indexes, versions = {}, {}
            for name, listed_version in store.list_versions().items():
                if self._versions.get(name) == listed_version:
                    indexes[name], versions[name] = self._indexes[name], listed_version
                    continue
                loaded = store.load(name)
                if loaded is not None:
                    versions[name], tolerance, plates = loaded
                    indexes[name] = WatchlistIndex.build(plates, tolerance)
            self._indexes, self._versions, self._seen = indexes, versions, version
            LISTS.set(len(indexes))
            PLATES.set(sum(len(i) for i in indexes.values()))
            return True

    def match(self, plate: str, candidates: Sequence[str] = ()) -> list[dict[str, Any]]:
        texts = list(dict.fromkeys(t for t in map(normalise, [plate, *candidates]) if t))
        if not texts:
            return []
        probes: dict[Tolerance, Probes] = {}  # the texts' variants, hashed once per tolerance
        found = []
        for name, index in self._indexes.items():
            tolerance = index.tolerance
            if tolerance not in probes:
                probes[tolerance] = Probes.of(texts, tolerance)
            found += [(name, m) for m in index.match(texts, probes[tolerance])]
        found.sort(key=lambda item: (item[1].distance, texts.index(item[1].matched), item[0], item[1].plate))
        for name in {name for name, _ in found[:MAX_MATCHES]}:
            MATCHES.labels(list=_list_label(name)).inc()
        return [
            {
                "list": name,
                "plate": m.plate,
                "distance": m.distance,
                "matched": m.matched,
                "note": m.note,
                "tags": list(m.tags),
            }
            for name, m in found[:MAX_MATCHES]
        ]

    def keep_current(self, every_s: float) -> threading.Thread:
        """A daemon thread that refreshes every `every_s` seconds, logging (once a streak) and
        counting failures; reads go on with the lists last loaded."""

        def loop() -> None:
            failing = False
            while not stop.wait(every_s):
                try:
                    self.refresh()
                    failing = False
                except Exception:
                    REFRESH_FAILURES.inc()
                    if not failing:
                        logger.exception("watchlists could not be refreshed; matching with the last loaded")
                    failing = True

        stop = threading.Event()
        thread = threading.Thread(target=loop, name="watchlist-refresh", daemon=True)
        thread.start()
        return thread


_book: WatchlistBook | None = None


@functools.cache
def watchlist_store() -> WatchlistStore:
    """This process's store (the database is opened and migrated on first use)."""
    return WatchlistStore.from_settings(WatchlistSettings.from_env())


def start() -> WatchlistBook:
    """Load the lists and keep them current (the service calls it once per process). A database
    that cannot be reached now is logged and tried again every `refresh_s`; reads go on."""
    global _book
    if _book is None:
        settings = WatchlistSettings.from_env()
        book = WatchlistBook(watchlist_store)
        try:
            book.refresh()
        except Exception:
            REFRESH_FAILURES.inc()
            logger.exception("watchlists could not be loaded; trying again every %s s", settings.refresh_s)
        book.keep_current(settings.refresh_s)
        _book = book
    return _book


def changed() -> None:
    """After a change made through this process: its own reads see it at once."""
    if _book is not None:
        try:
            _book.refresh()
        except Exception:
            logger.exception("watchlists could not be refreshed after a change")


def watchlist_matches(plate: str, candidates: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The listed plates a reading matches (see the module docstring): `plate` is the reading's
    text, `candidates` its other readings (a look-alike candidate on a list matches too).
    Counted on /metrics by list."""
    return [] if _book is None else _book.match(plate, candidates)
