"""What a full command cache costs the garbage collector, and what a cold read costs.

Fills a `CommandCache` with sales (each with a card payment), as a busy server's would be,
then times full collections (`gc.collect()`: every Python thread waits while one runs),
with every entry live and with the two tiers of `ledger.application.command_cache`. Then
times a read of a live entry and of a cold one, and a write that pushes one entry cold.

    .venv/bin/python bench/command_cache_gc.py --entries 20000
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from copy import deepcopy
from pathlib import Path
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.application.command_cache import LIVE_ENTRIES, CommandCache
from ledger.heap import freeze_startup_objects
from tests.unit.test_command_cache import paid_sale  # a sale with a card payment


def full_collection_ms(rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def filled(entries: int, live: int) -> tuple[CommandCache, list[int]]:
    """The cache, and the ids of its sales as ints (which the collector does not track)."""
    cache = CommandCache(maxsize=entries, live=live)
    ids = []
    for _ in range(entries):
        sale = paid_sale()
        cache.put(sale.id, sale)
        ids.append(sale.id.int)
    return cache, ids


def read_micros(cache: CommandCache, ids: list[int], n: int = 1000) -> tuple[float, float]:
    """A read of the most recent sale with the copy a command takes of it, and a read of a
    cold one (unpickled and made live, which pushes another cold), in µs."""
    hot = UUID(int=ids[-1])
    started = time.perf_counter()
    for _ in range(n):
        entry = cache.get(hot)
        assert entry is not None
        deepcopy(entry.aggregate)
    live = time.perf_counter() - started
    started = time.perf_counter()
    for cold in ids[:n]:
        assert cache.get(UUID(int=cold)) is not None
    return live / n * 1e6, (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000, help="sales in the cache")
    parser.add_argument("--rounds", type=int, default=5, help="collections timed per case")
    args = parser.parse_args()

    freeze_startup_objects()  # as `posledger serve` does before serving
    print(f"empty heap, startup frozen: {full_collection_ms(args.rounds):.1f} ms per collection")
    rows = []
    live_read = cold_read = 0.0
    for label, live in (("all live", args.entries), (f"{LIVE_ENTRIES:,} live", LIVE_ENTRIES)):
        cache, ids = filled(args.entries, live)
        gc.collect()
        tracked = len(gc.get_objects())
        rows.append((label, full_collection_ms(args.rounds), tracked))
        if live == LIVE_ENTRIES:
            live_read, cold_read = read_micros(cache, ids)
        del cache, ids
        gc.collect()
    print(f"\n{args.entries:,} sales in the cache:\n")
    print("| entries kept | full collection ms (median) | objects the collector tracks |")
    print("|---|---|---|")
    for label, ms, tracked in rows:
        print(f"| {label} | {ms:.1f} | {tracked:,} |")
    print(
        f"\nA read of a live sale, with the copy a command takes: {live_read:.1f} µs;"
        f" of a cold one (unpickled, made live, which cools another): {cold_read:.1f} µs."
    )
    print(
        f"\nMeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}:"
        f" {os.cpu_count()} cores, Python {platform.python_version()}."
    )
    print(f"Command: `.venv/bin/python bench/command_cache_gc.py --entries {args.entries}`")


if __name__ == "__main__":
    main()
