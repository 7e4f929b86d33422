"""Benchmark: the call time of one group commit (`posledger_commit_group`), median.

    POSLEDGER_DATABASE_URL=postgresql://root@127.0.0.1:5432/test \\
      .venv/bin/python bench/commit_group.py [--calls 200] [--sizes 1,8]

Works in a fresh schema that it drops afterwards. Each call commits a group of new
commands shaped like a sale's (two events of ~300 bytes each, their metadata and the
command record, one read), through the same SQL the writer thread sends. Prints the
median and 90th percentile call time per group size, and the median time the
function held the events table's lock (its own `held` row, before the COMMIT).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.group_commit import (
    CommandRecord,
    CommitRequest,
    EventMetadata,
    _arguments,
    commit_call_sql,
)
from ledger.store import Settings, database_url

STATE = b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-11-27T03:06:00+00:00"},' + (
    b'"note":"' + b"x" * 220 + b'"}'
)


def command(n: int) -> CommitRequest:
    sale = uuid.uuid4()
    events = [
        StoredEvent(sale, version, f"posledger.Event{version}", STATE) for version in (1, 2)
    ]
    request_id = str(uuid.uuid4())
    return CommitRequest(
        events=events,
        command_record=CommandRecord(
            merchant_id="merchant-bench",
            request_id=request_id,
            command="CreateSale",
            fingerprint="f" * 64,
            aggregate_id=sale,
            aggregate_version=2,
            result={"ids": {"sale_id": str(sale)}, "aggregates": [[str(sale), 2]]},
        ),
        metadata=EventMetadata(
            merchant_id="merchant-bench",
            app_id="till",
            key_id="key-1",
            device_id="device-7",
            request_id=request_id,
            locations={sale: "loc-1"},
        ),
        reads=[(uuid.uuid4(), 0)],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--sizes", default="1,8")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    url = database_url(Settings.from_env())
    schema = f"bench_commit_{uuid.uuid4().hex[:8]}"
    ledger = Ledger.open(Settings(database_url=url, schema=schema, pool_size=2))
    try:
        call = commit_call_sql(schema)
        with psycopg.connect(url, autocommit=True, row_factory=tuple_row) as conn:
            for size in (int(s) for s in args.sizes.split(",")):
                times = []
                held = []
                for i in range(args.warmup + args.calls):
                    arguments = _arguments([command(n) for n in range(size)], "5000ms")
                    started = time.perf_counter()
                    rows = conn.execute(call, arguments, prepare=True).fetchall()
                    elapsed = time.perf_counter() - started
                    assert sum(r[0] == "event" for r in rows) == 2 * size, rows
                    if i >= args.warmup:
                        times.append(elapsed)
                        held += [r[4] / 1000 for r in rows if r[0] == "held"]
                times.sort()
                print(
                    f"group of {size:3d} commands ({2 * size:3d} events): median "
                    f"{statistics.median(times) * 1000:6.3f} ms, p90 "
                    f"{times[int(len(times) * 0.9)] * 1000:6.3f} ms over {args.calls} calls; "
                    f"lock held (in the function) median {statistics.median(held):6.3f} ms"
                )
    finally:
        ledger.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))


if __name__ == "__main__":
    main()
