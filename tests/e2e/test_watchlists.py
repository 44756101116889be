"""Watchlists for real: a plate reader served with API keys (`bentoml serve`), lists made over
HTTP, a photo of a known plate read and matched; the admin role, the 4xx answers and the
limits; and the store on PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport_client import Client
from services.core.database import database_engine
from services.plate_reader.watchlist_match import ListedPlate, Tolerance
from services.plate_reader.watchlist_store import WatchlistSettings, WatchlistStore
from services.plate_reader.watchlists import WatchlistBook
from tests.postgres import postgres_server
from tests.scenes import plate_on_street
from tests.servers import serve

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": "Bearer admin-k3y-for-the-watchlists"}
READER = {"Authorization": "Bearer reader-k3y-for-the-watchlists"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's folder: its keys, log and data (the SQLite database)."""
    return tmp_path_factory.mktemp("watchlists")


@pytest.fixture(scope="module")
def server(plate_models: dict[str, Path], home: Path) -> Iterator[str]:
    tmp = home
    (tmp / "keys").write_text(f"{ADMIN['Authorization'][7:]} admin\n{READER['Authorization'][7:]} reader\n")
    env = {"MODELPORT_API_KEYS_FILE": str(tmp / "keys"), "MODELPORT_DATA_DIR": str(tmp / "data")}
    with serve("services.plate_reader.service:PlateReader", env=env, log_path=tmp / "server.log") as url:
        yield url


def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, headers=kwargs.pop("headers", ADMIN), timeout=60, **kwargs)


def read_photo(url: str, route: str = "/v1/plate-reader") -> dict[str, Any]:
    response = httpx.post(
        f"{url}{route}", files={"upload": ("car.jpg", plate_on_street().jpeg)}, headers=READER, timeout=60
    )
    assert response.status_code == 200, response.text
    [plate] = response.json()["results"]
    return plate


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_read_plate_matches_its_lists_by_each_lists_tolerance(server: str) -> None:
    lists = [
        # look-alikes free: the plate as a person typed it, B as 8, with spaces
        {
            "name": "stolen",
            "plates": [{"plate": "AD 799 K8", "note": "blue Golf", "tags": ["police"]}, "KRW301"],
        },
        {"name": "dropped", "plates": ["AD799K"]},  # one missing character: distance 1
        {"name": "strict", "plates": ["AD799K"], "max_distance": 0, "lookalikes": False},
    ]
    for body in lists:
        created = call("POST", f"{server}/v1/watchlists", json=body)
        assert created.status_code == 201, created.text
    plate = read_photo(server)
    assert plate["plate"] == "AD799KB"
    assert "AD799K" not in [c["plate"] for c in plate["candidates"]]  # so "strict" cannot match
    assert plate["watchlist"] == [
        {
            "list": "stolen",
            "plate": "AD799K8",
            "distance": 0,
            "matched": "AD799KB",
            "note": "blue Golf",
            "tags": ["police"],
        },
        {"list": "dropped", "plate": "AD799K", "distance": 1, "matched": "AD799KB", "note": None, "tags": []},
    ]
    with Client(server, api_key=READER["Authorization"][7:]) as client:  # the Python client: typed
        [read] = client.read_plates(plate_on_street().jpeg).results
        assert [(m["list"], m["distance"]) for m in read.watchlist] == [("stolen", 0), ("dropped", 1)]
    # Plate Recognizer's route: its fields as before, the matches beside them.
    snapshot = read_photo(server, "/v1/plate-reader/")
    assert snapshot["plate"] == "ad799kb" and snapshot["vehicle"]["type"] == "Unknown"
    assert [(m["list"], m["plate"], m["matched"]) for m in snapshot["watchlist"]] == [
        ("stolen", "ad799k8", "ad799kb"),  # lowercase, as the plate on this route
        ("dropped", "ad799k", "ad799kb"),
    ]

    # The tolerance changes; so do the matches, at once.
    call("PATCH", f"{server}/v1/watchlists/dropped", json={"max_distance": 0}).raise_for_status()
    assert [m["list"] for m in read_photo(server)["watchlist"]] == ["stolen"]
    metrics = httpx.get(f"{server}/metrics").text
    assert re.search(r'modelport_watchlist_matches_total\{list="stolen"\} [3-9]', metrics), metrics
    assert re.search(r"modelport_watchlists(\{[^}]*\})? 3\.0", metrics)
    assert re.search(r"modelport_watchlist_plates(\{[^}]*\})? 4\.0", metrics)

    listing = call("GET", f"{server}/v1/watchlists").json()["data"]
    assert [(w["name"], w["plates"], w["max_distance"]) for w in listing] == [
        ("dropped", 1, 0),
        ("stolen", 2, 1),
        ("strict", 1, 0),
    ]
    for name in ("dropped", "strict"):
        assert call("DELETE", f"{server}/v1/watchlists/{name}").json() == {"name": name, "deleted": True}
    removed = call("DELETE", f"{server}/v1/watchlists/stolen/plates/ad799k8")
    assert removed.json()["plates"] == 1 and removed.json()["removed"] == "AD799K8"
    assert read_photo(server)["watchlist"] == []


def test_a_change_made_by_another_process_shows_within_the_refresh(server: str, home: Path) -> None:
    """Another worker or replica, here this test process, changes the server's database: the
    server's readings show it within MODELPORT_WATCHLIST_REFRESH_S (1 s), a version number read."""
    elsewhere = WatchlistStore(
        database_engine(f"sqlite:///{home / 'data' / 'modelport.sqlite3'}"), WatchlistSettings()
    )
    assert read_photo(server)["watchlist"] == []
    elsewhere.create("replica", Tolerance(), [ListedPlate("AD799KB", "from elsewhere")], replace=False)
    changed_at = time.monotonic()
    while not (matches := read_photo(server)["watchlist"]):
        assert time.monotonic() - changed_at < 10, "the server never saw the list made elsewhere"
    assert [(m["list"], m["note"]) for m in matches] == [("replica", "from elsewhere")]
    elsewhere.delete("replica")
    changed_at = time.monotonic()
    while read_photo(server)["watchlist"]:
        assert time.monotonic() - changed_at < 10, "the server kept a list deleted elsewhere"


def test_only_admin_keys_change_or_see_lists(server: str) -> None:
    assert error(call("GET", f"{server}/v1/watchlists", headers={}), 401)["code"]
    denied = error(
        call("POST", f"{server}/v1/watchlists", headers=READER, json={"name": "x", "plates": []}), 403
    )
    assert denied["code"] == "insufficient_role" and "admin" in denied["message"]
    assert call("GET", f"{server}/v1/watchlists/x", headers=READER).status_code == 403


def test_plates_are_checked_merged_and_never_half_stored(server: str) -> None:
    url = f"{server}/v1/watchlists"
    # Unicode look-alikes: full-width letters are the letters; a Cyrillic "A" is refused, named.
    fullwidth = call("POST", url, json={"name": "fw", "plates": ["\uff21\uff22\uff11\uff12\uff23\uff24"]})
    assert fullwidth.status_code == 201
    assert call("GET", f"{url}/fw").json()["data"][0]["plate"] == "AB12CD"
    good = [f"GD{i:05d}" for i in range(1000)]
    cyrillic = error(call("POST", url, json={"name": "half", "plates": [*good, "\u0410B12CDE"]}), 400)
    assert (
        cyrillic["param"] == "plates[1000].plate"
        and "U+0410 CYRILLIC CAPITAL LETTER A" in cyrillic["message"]
    )
    assert error(call("GET", f"{url}/half"), 404)["code"] == "watchlist_not_found"  # nothing of it stored
    added = error(call("POST", f"{url}/fw/plates", json={"plates": ["ZZ99ZZZ", " - "]}), 400)
    assert added["code"] == "empty_plate" and added["param"] == "plates[1].plate"
    assert call("GET", f"{url}/fw").json()["plates"] == 1

    merged = call(
        "POST", f"{url}/fw/plates", json={"plates": ["ab 12 cd", {"plate": "AB-12-CD", "tags": ["t"]}]}
    )
    assert merged.json()["merged"] == 2 and merged.json()["plates"] == 1
    assert call("GET", f"{url}/fw").json()["data"] == [{"plate": "AB12CD", "note": None, "tags": ["t"]}]

    assert error(call("POST", url, json={"name": "fw", "plates": []}), 409)["code"] == "watchlist_exists"
    assert error(call("POST", url, json={"name": "no spaces", "plates": []}), 400)["param"] == "name"
    assert error(call("POST", url, json={"name": "d", "plates": [], "max_distance": 3}), 400)["param"]
    assert error(
        call("POST", url, content=b"{not json", headers={**ADMIN, "content-type": "application/json"}), 400
    )
    assert error(call("DELETE", f"{url}/nothing"), 404)["code"] == "watchlist_not_found"
    assert error(call("DELETE", f"{url}/fw/plates/XX11XX"), 404)["code"] == "plate_not_listed"
    call("DELETE", f"{url}/fw").raise_for_status()


def test_a_list_holds_at_most_100000_plates(server: str) -> None:
    url = f"{server}/v1/watchlists"
    plates = [f"W{i:06d}" for i in range(100_001)]
    too_many = error(call("PUT", f"{url}/fleet", json={"plates": plates}), 413)
    assert (
        "at most 100,000 plates" in too_many["message"]
        and "MODELPORT_WATCHLIST_MAX_PLATES" in too_many["message"]
    )
    assert call("GET", f"{url}/fleet").status_code == 404
    full = call("PUT", f"{url}/fleet", json={"plates": plates[:100_000]})
    assert full.status_code == 200 and full.json()["plates"] == 100_000, full.text
    page = call("GET", f"{url}/fleet", params={"limit": 2, "after": "W000001"}).json()
    assert [p["plate"] for p in page["data"]] == ["W000002", "W000003"] and page["next_after"] == "W000003"
    assert read_photo(server)["plate"] == "AD799KB"  # a reading with the large list loaded
    one_more = error(call("POST", f"{url}/fleet/plates", json={"plates": ["X1234567"]}), 413)
    assert "100,000" in one_more["message"]
    call("DELETE", f"{url}/fleet").raise_for_status()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def test_the_store_on_postgresql(postgres_url: str) -> None:
    store = WatchlistStore(database_engine(postgres_url), WatchlistSettings())
    this, other = WatchlistBook(lambda: store), WatchlistBook(lambda: store)  # two workers
    store.create("pg", Tolerance(), [ListedPlate("AB12CDE", "note", ("a",))], replace=False)
    store.add("pg", [ListedPlate("AB12CDE", None, ("b",)), ListedPlate("KRW301")])
    assert other.refresh() and this.refresh()
    assert [m["tags"] for m in other.match("A812CD")] == [["a", "b"]]
    assert [(s.name, s.plates) for s in store.summaries()] == [("pg", 2)]
    store.delete("pg")
    assert other.refresh() and other.match("AB12CDE") == []
