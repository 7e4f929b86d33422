"""Benchmark: the call time of one group commit (`posledger_commit_group`), median.

    POSLEDGER_DATABASE_URL=postgresql://root@127.0.0.1:5432/test \\
      .venv/bin/python bench/commit_group.py [--calls 200] [--sizes 1,8] \\
      [--baseline [NAME=]OTHER_TREE ...]

Works in fresh schemas that it drops afterwards. Each call commits a group of new
commands shaped like a sale's (two events of ~300 bytes each, their metadata and the
command record, one read), through the same SQL the writer thread sends. Prints the
median and 90th percentile call time per group size, and the median and least time the
function held the events table's lock (its own `held` row, before the COMMIT; the least is
the one a busy machine disturbs least).

`--baseline` (repeatable) names another version's source tree (say, a git worktree of an
older commit, or one with a local patch): its function, as that tree's own code renders it,
is installed in a schema of its own and all versions are called in turns, call by call, so
they see the same load on a noisy machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.commit_function import FUNCTION_NAME, commit_call_sql, function_arguments
from ledger.group_commit import CommandRecord, CommitRequest, EventMetadata
from ledger.store import Settings, database_url

STATE = b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-11-27T03:06:00+00:00"},' + (
    b'"note":"' + b"x" * 220 + b'"}'
)


def command() -> CommitRequest:
    sale = uuid.uuid4()
    events = [StoredEvent(sale, version, f"posledger.Event{version}", STATE) for version in (1, 2)]
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


# Run with the other tree first on the path: prints its CREATE FUNCTION for a schema.
RENDER = """
import sys
try:
    from ledger.audit.schema import chain_sql
except ImportError:  # a tree from before the chain's SQL had a module of its own
    from ledger.audit.store import chain_sql
try:
    from ledger.commit_function import commit_function_sql
except ImportError:  # a tree from before the function had a module of its own
    from ledger.group_commit import commit_function_sql
print(commit_function_sql(sys.argv[1], sys.argv[2], sys.argv[3],
                          chain_sql(sys.argv[1])).as_string(None))
"""


def install_baseline(url: str, schema: str, tree: str) -> tuple[Any, Any]:
    """Replaces the schema's function with the one the source tree `tree` renders; returns
    that tree's call statement and argument builder (from its `commit_function` and
    `group_commit` modules)."""
    ledger = Ledger.open(Settings(database_url=url, schema=schema, pool_size=1))
    recorder = ledger.ledger_recorder
    done = subprocess.run(
        [sys.executable, "-c", RENDER, schema, recorder.events_table_name, recorder.channel_name],
        env=dict(os.environ, PYTHONPATH=os.path.abspath(tree)),
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        # Another version may take other arguments: drop every overload first.
        for (signature,) in conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n"
            " ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = %s",
            (schema, FUNCTION_NAME),
        ).fetchall():
            conn.execute(f"DROP FUNCTION {signature}")
        conn.execute(done.stdout.encode())
    ledger.close()
    writer = load_module(f"baseline_{schema}", os.path.join(tree, "ledger", "group_commit.py"))
    function_path = os.path.join(tree, "ledger", "commit_function.py")
    function = writer
    if os.path.exists(function_path):
        function = load_module(f"baseline_function_{schema}", function_path)
    # Older trees build the arguments in the writer's module, newer ones beside the function.
    build = getattr(function, "function_arguments", None) or writer._arguments
    return function.commit_call_sql(schema), build


def load_module(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--sizes", default="1,8")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="[NAME=]TREE",
        help="another version's source tree (repeatable)",
    )
    args = parser.parse_args()
    url = database_url(Settings.from_env())
    tag = uuid.uuid4().hex[:8]
    schemas = {"this": f"bench_commit_{tag}"}
    trees = {}
    for n, spec in enumerate(args.baseline):
        name, _, tree = spec.rpartition("=")
        name = name or f"base{n + 1}"
        schemas[name] = f"bench_commit_{tag}_{n + 1}"
        trees[name] = tree
    ledger = Ledger.open(Settings(database_url=url, schema=schemas["this"], pool_size=1))
    try:
        calls = {"this": commit_call_sql(schemas["this"])}
        builders = {"this": function_arguments}
        for name, tree in trees.items():
            calls[name], builders[name] = install_baseline(url, schemas[name], tree)
        conns = {
            name: psycopg.connect(url, autocommit=True, row_factory=tuple_row) for name in schemas
        }
        for size in (int(s) for s in args.sizes.split(",")):
            times: dict[str, list[float]] = {name: [] for name in schemas}
            held: dict[str, list[float]] = {name: [] for name in schemas}
            for i in range(args.warmup + args.calls):
                for name in schemas:
                    arguments = builders[name]([command() for _ in range(size)], "5000ms")
                    started = time.perf_counter()
                    rows: list[Any] = (
                        conns[name].execute(calls[name], arguments, prepare=True).fetchall()
                    )
                    elapsed = time.perf_counter() - started
                    assert sum(r[0] == "event" for r in rows) == 2 * size, rows
                    if i >= args.warmup:
                        times[name].append(elapsed)
                        held[name] += [r[4] / 1000 for r in rows if r[0] == "held"]
            for name in schemas:
                t = sorted(times[name])
                print(
                    f"{name:8s} group of {size:3d} commands ({2 * size:3d} events): median "
                    f"{statistics.median(t) * 1000:6.3f} ms, p90 "
                    f"{t[int(len(t) * 0.9)] * 1000:6.3f} ms over {args.calls} calls; "
                    f"lock held (in the function) median {statistics.median(held[name]):6.3f} ms,"
                    f" min {min(held[name]):6.3f} ms"
                )
        for conn in conns.values():
            conn.close()
    finally:
        ledger.close()
        with psycopg.connect(url, autocommit=True) as conn:
            for schema in schemas.values():
                conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))


if __name__ == "__main__":
    main()
