"""What matching a reading against a watchlist costs, for lists of 1k, 10k and 100k plates.

    nice -n 10 python tests/benchmarks/bench_watchlist.py [--readings 2000]

Plates: random, in the shapes of real formats (AB12CDE, AB123CD, 1ABC234, ABC1234). Readings:
a reading's plate and 4 candidates, as the reader gives them; half are listed plates as the OCR
misreads them (a look-alike, a dropped or an extra character), half are plates not listed.

For each list size and edit budget, in the same run: building the index (s), its numpy arrays
and everything the list holds in memory (tracemalloc, MB), and ms per reading for the index
(watchlist_match.WatchlistIndex.match) against a full scan of the list with rapidfuzz
(`process.extract`, C++, every plate's distance per text: what the index avoids). The best of 3
passes each (others' load on a shared machine only adds time). Checks the two agree.
"""

from __future__ import annotations

import argparse
import gc
import random
import string
import sys
import time
import tracemalloc
from pathlib import Path

from rapidfuzz import process

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, run as a script
from rich.console import Console
from rich.table import Table

from services.plate_reader.watchlist_match import ListedPlate, Tolerance, WatchlistIndex, fold_lookalikes
from tests.benchmarks.machine import describe_machine

SHAPES = ("AA99AAA", "AA999AA", "9AAA999", "AAA9999")
LOOKALIKE = {
    "O": "0",
    "0": "O",
    "B": "8",
    "8": "B",
    "I": "1",
    "1": "I",
    "S": "5",
    "5": "S",
    "Z": "2",
    "2": "Z",
}


def random_plate(rng: random.Random) -> str:
    return "".join(
        rng.choice(string.ascii_uppercase if c == "A" else string.digits) for c in rng.choice(SHAPES)
    )


def misread(plate: str, rng: random.Random) -> str:
    chars = list(plate)
    at = rng.randrange(len(chars))
    kind = rng.choice(("lookalike", "drop", "extra"))
    if kind == "lookalike":
        chars[at] = LOOKALIKE.get(chars[at], chars[at])
    elif kind == "drop":
        del chars[at]
    else:
        chars.insert(at, rng.choice("I1"))  # a bolt or the frame's edge read as a character
    return "".join(chars)


def readings(listed: list[str], count: int, rng: random.Random) -> list[list[str]]:
    out = []
    for i in range(count):
        plate = misread(rng.choice(listed), rng) if i % 2 else random_plate(rng)
        out.append([plate, *(misread(plate, rng) for _ in range(4))])
    return out


def best_ms_per_reading(run: object, reads: list[list[str]]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for texts in reads:
            run(texts)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(reads)


def full_scan(keys: list[str], tolerance: Tolerance):  # type: ignore[no-untyped-def]
    from rapidfuzz.distance import Indel, Levenshtein

    scorer = Levenshtein.distance if tolerance.substitutions else Indel.distance

    def run(texts: list[str]) -> set[int]:
        found = set()
        for text in texts:
            key = tolerance.key(text)
            for _, _, i in process.extract(
                key, keys, scorer=scorer, score_cutoff=tolerance.max_distance, limit=None
            ):
                found.add(i)
        return found

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    rng = random.Random(0)
    console = Console(width=150)
    console.print(describe_machine())
    table = Table(title=f"watchlist matching, {args.readings} readings of 5 texts each")
    for column in (
        "plates",
        "max_distance",
        "build s",
        "index MB",
        "list in memory MB",
        "index ms/reading",
        "full scan ms/reading",
        "scan / index",
        "matched readings",
    ):
        table.add_column(column, justify="right")
    for size in args.sizes:
        listed = list(dict.fromkeys(random_plate(rng) for _ in range(size)))
        while len(listed) < size:
            listed = list(dict.fromkeys([*listed, random_plate(rng)]))
        reads = readings(listed, args.readings, rng)
        position = {p: i for i, p in enumerate(listed)}
        for budget in (0, 1, 2):
            tolerance = Tolerance(max_distance=budget)
            plates = [ListedPlate(p) for p in listed]
            gc.collect()
            start = time.perf_counter()
            index = WatchlistIndex.build(plates, tolerance)
            build_s = time.perf_counter() - start
            del index, plates
            gc.collect()
            tracemalloc.start()  # again, traced (tracing slows the build), the plates included
            plates = [ListedPlate(p) for p in listed]
            index = WatchlistIndex.build(plates, tolerance)
            held = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            scan = full_scan([fold_lookalikes(p) for p in listed], tolerance)
            matched = sum(bool(index.match(texts)) for texts in reads)
            for texts in reads[:200]:  # the index finds exactly what the full scan finds
                assert {position[m.plate] for m in index.match(texts)} == scan(texts), texts
            index_ms = best_ms_per_reading(index.match, reads)
            scan_ms = best_ms_per_reading(scan, reads[: max(20, len(reads) // (size // 1000))])
            table.add_row(
                f"{size:,}",
                str(budget),
                f"{build_s:.2f}",
                f"{index.nbytes / 1e6:.1f}",
                f"{held / 1e6:.1f}",
                f"{index_ms:.3f}",
                f"{scan_ms:.2f}",
                f"{scan_ms / index_ms:.0f}x",
                f"{matched}/{len(reads)}",
            )
    console.print(table)
    console.print(
        "list in memory: the plates (as loaded from the database, without notes or tags), their keys "
        "and the index, traced. Full scan: on fewer readings for the large lists (same per reading)."
    )


if __name__ == "__main__":
    main()
