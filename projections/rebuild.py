"""Rebuilding a view from the start of the log into a new generation, then switching to it.

The live generation keeps serving queries and following the log meanwhile. Progress is
saved with every page, so an interrupted rebuild resumes where it stopped. The switch is one
transaction: it holds the view's registry row (the live follower waits), brings the copy to
the head and points queries at it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.event_log import EventLog
from projections import source
from projections.registry import Registry, lock_key, view_schema
from projections.view import View

REBUILD_PAGE = 5000  # events per transaction while filling the shadow copy
# A copy this close to the head is finished inside the switch's transaction: the live
# follower waits for that transaction, so it is kept to about one catch-up page.
SWITCH_WITHIN = 1000


@dataclass(frozen=True)
class RebuildReport:
    view: str
    generation: int
    position: int
    events: int
    seconds: float
    resumed: bool
    differences: list[str]


def rebuild_view(
    log: EventLog,
    registry: Registry,
    view: View,
    *,
    verify: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildReport:
    """Rebuilds `view` (registered already) into a new generation and switches to it.

    Rebuilds of one view run one at a time (two filling one shadow copy would apply pages
    twice): a second one waits for the first, then rebuilds again.
    """
    with psycopg.connect(log.url, autocommit=True) as guard:
        key = lock_key(registry.base, f"{view.name}:rebuild")
        guard.execute("SELECT pg_advisory_lock(%s)", (key,))
        return _rebuild(log, registry, view, verify, progress)


def _rebuild(
    log: EventLog,
    registry: Registry,
    view: View,
    verify: bool,
    progress: Callable[[int, int], None] | None,
) -> RebuildReport:
    started = time.perf_counter()
    name, base = view.name, registry.base
    with log.datastore.transaction(commit=True) as curs:
        row = registry.row(curs, name, lock=True)
        generation = row["rebuild_generation"]
        resumed = generation is not None
        if generation is None:
            generation = row["generation"] + 1
            schema = view_schema(base, name, generation)
            curs.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))
            registry.create_generation(curs, view, generation)
            registry.start_rebuild(curs, name, generation)
    schema = view_schema(base, name, generation)
    applied = 0
    while True:  # catch the shadow copy up, page by page, without blocking anyone
        stop = log.head()
        with log.datastore.transaction(commit=True) as curs:
            position = registry.row(curs, name)["rebuild_position"]
            if stop - position <= SWITCH_WITHIN:
                break
            events = source.read_page(log, position, stop, REBUILD_PAGE, view.topics)
            new_position = events[-1].position if len(events) == REBUILD_PAGE else stop
            view.apply(curs, schema, events)
            registry.advance_rebuild(curs, name, new_position)
        applied += len(events)
        if progress is not None:
            progress(new_position, stop)
    differences: list[str] = []
    with log.datastore.transaction(commit=True) as curs:
        row = registry.row(curs, name, lock=True)
        stop = log.head()
        applied += _catch_up(log, curs, view, schema, row["rebuild_position"], stop)
        old = view_schema(base, name, row["generation"])
        if verify:
            _catch_up(log, curs, view, old, row["position"], stop)
            differences = _compare(curs, view, old, schema)
        registry.switch(curs, name, generation, stop)
        if progress is not None:
            progress(stop, stop)
    with log.datastore.transaction(commit=True) as curs:
        curs.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(old)))
    return RebuildReport(
        view=name,
        generation=generation,
        position=stop,
        events=applied,
        seconds=time.perf_counter() - started,
        resumed=resumed,
        differences=differences,
    )


def _catch_up(
    log: EventLog, curs: Cursor[DictRow], view: View, schema: str, position: int, stop: int
) -> int:
    applied = 0
    while position < stop:
        events = source.read_page(log, position, stop, REBUILD_PAGE, view.topics)
        view.apply(curs, schema, events)
        applied += len(events)
        position = events[-1].position if len(events) == REBUILD_PAGE else stop
    return applied


def _compare(curs: Cursor[DictRow], view: View, live: str, rebuilt: str) -> list[str]:
    """Rows that differ between two generations, per table (both at the same position)."""
    differences = []
    for table in view.tables:
        for first, second, label in (
            (live, rebuilt, "only in live"),
            (rebuilt, live, "missing from live"),
        ):
            curs.execute(
                SQL(
                    "SELECT count(*) AS n FROM (SELECT * FROM {} EXCEPT SELECT * FROM {}) d"
                ).format(Identifier(first, table), Identifier(second, table))
            )
            row = curs.fetchone()
            if row and row["n"]:
                differences.append(f"{table}: {row['n']} rows {label}")
    return differences
