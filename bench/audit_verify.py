"""Benchmark: extending and verifying the audit hash chain over a large log.

    POSLEDGER_DATABASE_URL=postgresql://root@127.0.0.1:5432/test \\
      .venv/bin/python bench/audit_verify.py [--events 1000000] [--payload 300]

Works in a fresh schema that it drops afterwards. The log is synthetic (the chain only
needs rows): events of about `--payload` bytes of JSON, like the ledger's own, loaded with
COPY, one id in 1,000 left out as a gap. It then times `ChainKeeper.extend` (chaining the
whole log), `ChainKeeper.verify` in process, and `posledger audit verify --checkpoint` as a
subprocess (the command an operator runs, signature check included), and prints events/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.audit import checkpoint as checkpoints
from ledger.audit import take_checkpoint
from ledger.bootstrap import build_chain_keeper
from ledger.store import Settings, database_url

GAP_EVERY = 1000


def load_synthetic(url: str, schema: str, count: int, payload: int) -> None:
    """`count` events (one aggregate per 10) with ids 1.. except every GAP_EVERY-th, each
    with its metadata row, and one command record per aggregate, with their positions (as
    a ledger writes them), loaded unchained: the chain head is then set to need the
    migration (`extend`)."""
    table = Identifier(schema, "ledger_events")
    metadata_rows = []
    command_rows = []
    filler = "x" * max(0, payload - 200)
    aggregate = uuid.uuid4()
    with psycopg.connect(url) as conn, conn.cursor() as curs:
        copy_sql = SQL(
            "COPY {} (notification_id, originator_id, originator_version, topic, state) FROM STDIN"
        ).format(table)
        with curs.copy(copy_sql) as copy:
            position = 0
            for i in range(count):
                position += 1
                if position % GAP_EVERY == 0:
                    position += 1
                if i % 10 == 0:
                    aggregate = uuid.uuid4()
                    request = str(uuid.uuid4())
                    merchant = f"merchant-{i % 17}"
                    command_rows.append(
                        (
                            merchant,
                            request,
                            "CreateSale",
                            "f" * 64,
                            aggregate,
                            10,
                            json.dumps({"ids": {}, "aggregates": [[str(aggregate), 10]]}),
                            position,  # of the command's first event
                        )
                    )
                metadata_rows.append(
                    (
                        aggregate,
                        i % 10 + 1,
                        merchant,
                        "till",
                        "key-1",
                        "loc-1",
                        "device-7",
                        request,
                        True,
                        position,
                    )
                )
                state = (
                    '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-11-27T03:06:00.'
                    f'{i % 1_000_000:06d}+00:00"}},"merchant_id":"merchant-{i % 17}",'
                    f'"amount":{i * 7 % 100_000},"note":"{filler}"}}'
                ).encode()
                copy.write_row((position, aggregate, i % 10 + 1, "posledger.Synthetic", state))
        with curs.copy(
            SQL(
                "COPY {} (originator_id, originator_version, merchant_id, app_id, key_id,"
                " location_id, device_id, request_id, command_recorded, position) FROM STDIN"
            ).format(Identifier(schema, "event_metadata"))
        ) as copy:
            for row in metadata_rows:
                copy.write_row(row)
        commands = Identifier(schema, "processed_commands")
        with curs.copy(
            SQL(
                "COPY {} (merchant_id, request_id, command, fingerprint, aggregate_id,"
                " aggregate_version, result, position) FROM STDIN"
            ).format(commands)
        ) as copy:
            for row in command_rows:
                copy.write_row(row)
        curs.execute(
            SQL("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)"),
            (f"{schema}.ledger_events", position),
        )
        curs.execute(
            SQL("UPDATE {} SET live = false").format(Identifier(schema, "event_chain_head"))
        )
        for name in ("ledger_events", "event_metadata", "processed_commands"):
            curs.execute(SQL("ANALYZE {}").format(Identifier(schema, name)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--payload", type=int, default=300, help="bytes of JSON per event")
    parser.add_argument("--verify-rounds", type=int, default=1, help="in-process verifies")
    args = parser.parse_args()

    base = Settings.from_env()
    url = database_url(base)
    schema = f"bench_audit_{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=url, schema=schema, pool_size=2)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; events: {args.events:,} of ~{args.payload} bytes"
    )
    ledger = Ledger.open(settings)
    try:
        started = time.perf_counter()
        load_synthetic(url, schema, args.events, args.payload)
        print(f"load (COPY):        {time.perf_counter() - started:6.1f} s")
        keeper = build_chain_keeper(settings)

        extended = keeper.extend()
        print(
            f"extend (migration, chain all): {extended.seconds:6.1f} s  "
            f"{extended.events / extended.seconds:9,.0f} events/s"
        )
        assert extended.events == args.events

        for _ in range(args.verify_rounds):
            cpu = time.process_time()
            report = keeper.verify()
            cpu = time.process_time() - cpu
            assert report.finding is None
            assert report.events == args.events
            print(
                f"verify (in proc):   {report.seconds:6.1f} s  {report.rate:9,.0f} events/s"
                f"  (this process's CPU: {cpu / report.events * 1e6:.2f} us/event)"
            )

        with tempfile.TemporaryDirectory() as tmp:
            key_path = Path(tmp) / "audit.key"
            key = checkpoints.generate_key(key_path)
            started = time.perf_counter()
            signed, _ = take_checkpoint(keeper, key)
            assert signed is not None
            seconds = time.perf_counter() - started
            print(
                f"checkpoint:         {seconds:6.1f} s  {args.events / seconds:9,.0f} events/s"
                " (extend + verify + sign)"
            )
            checkpoint_path = Path(tmp) / "checkpoint.json"
            checkpoint_path.write_text(signed.to_json())
            env = dict(os.environ, POSLEDGER_DATABASE_URL=url, POSLEDGER_DB_SCHEMA=schema)
            command = [
                *(sys.executable, "-m", "ledger.cli", "audit", "verify", "--json"),
                *("--checkpoint", str(checkpoint_path)),
                *("--public-key", f"{key_path}.pub"),
            ]
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - started
            result = json.loads(done.stdout)
            assert result["clean"]
            assert result["events"] == args.events
            print(
                f"posledger audit verify --checkpoint: {seconds:.1f} s wall "
                f"({args.events / seconds:,.0f} events/s, process start included); "
                f"its own measure: {result['events_per_second']:,} events/s; peak memory "
                f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB"
            )
    finally:
        ledger.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))


if __name__ == "__main__":
    main()
