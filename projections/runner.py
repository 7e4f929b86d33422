"""Keeping views up to date: catch-up in pages, live following, standby, rebuild, status.

Exactly once: a page of events and the view's new position commit in one transaction, under
a lock on the view's registry row, so a crash loses a whole page or nothing, and nothing is
ever applied twice. Two runners never apply the same view at once: each view is held with
a PostgreSQL advisory lock; a second runner waits as a standby and takes over when the first
one's session ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import structlog
from eventsourcing import persistence as es_persistence
from psycopg import Cursor
from psycopg.rows import DictRow, dict_row
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.store import StoreUnavailable, renew_pool, schema_lock
from projections import source
from projections.view import View

log = structlog.get_logger("posledger.projections")

CATCH_UP_PAGE = 1000  # events per transaction while behind
REBUILD_PAGE = 5000  # events per transaction while rebuilding a shadow copy
RECONNECT_FIRST_SECONDS = 0.5  # a runner that lost the database retries after this long,
RECONNECT_MAX_SECONDS = 5.0  # doubling up to this


def is_store_error(error: BaseException) -> bool:
    """A lost, refused or timed-out database (which a runner outlives), not a bug."""
    return isinstance(
        error,
        (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            es_persistence.OperationalError,
            es_persistence.InterfaceError,
            StoreUnavailable,
        ),
    )


class RunnerState:
    """What this process's runner is doing, for health, logs and `projections status`."""

    def __init__(self) -> None:
        self.state = "not started"  # running, reconnecting, stopped
        self.error = ""
        self.held: set[str] = set()
        self.since = time.monotonic()
        self.beat_at = 0.0
        self.listeners: list[Callable[[RunnerState], None]] = []

    def set(self, state: str, *, error: str = "", held: set[str] | None = None) -> None:
        changed = state != self.state
        self.state, self.error = state, error
        if held is not None:
            self.held = held
        if changed:
            self.since = time.monotonic()
            for listener in self.listeners:
                listener(self)

    def beat(self) -> None:
        self.beat_at = time.monotonic()

    @property
    def running(self) -> bool:
        return self.state == "running"


def view_schema(base: str, view: str, generation: int) -> str:
    return f"{base}__{view}_{generation}"


@dataclass(frozen=True)
class ViewStatus:
    view: str
    generation: int
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    rebuilding: bool


class Projections:
    """The views of one ledger database and the registry that tracks them."""

    # Its log events: projections_connected, projection_holding, …
    log_names = ("projections", "projection")
    # Views apply each commit at once (queries read their writes); a follower that need not
    # hurry waits this long after a wake-up, so one page takes many commits.
    batch_seconds = 0.0

    def __init__(self, ledger: Ledger, views: Sequence[View]) -> None:
        self.ledger = ledger
        self.views = {v.name: v for v in views}
        self.datastore = ledger.ledger_recorder.datastore
        self.base = self.datastore.schema
        self.registry = Identifier(self.base, "projection_views")
        self.url: str = ledger.database_url
        self.state = RunnerState()

    # ---- set-up ---------------------------------------------------------------------------

    def ensure(self) -> None:
        """Creates the registry and each view's live generation if missing."""
        with schema_lock(self.url, self.base), self.datastore.transaction(commit=True) as curs:
            self.create_registry(curs)
            for view in self.views.values():
                curs.execute(
                    SQL("INSERT INTO {} (view) VALUES (%s) ON CONFLICT DO NOTHING").format(
                        self.registry
                    ),
                    (view.name,),
                )
                row = self._row(curs, view.name)
                self._create_generation(curs, view, row["generation"])

    def create_registry(self, curs: Cursor[DictRow]) -> None:
        curs.execute(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " view text PRIMARY KEY,"
                " generation int NOT NULL DEFAULT 1,"
                " position bigint NOT NULL DEFAULT 0,"
                " applied_at timestamptz,"
                " rebuild_generation int,"
                " rebuild_position bigint)"
            ).format(self.registry)
        )

    def _create_generation(self, curs: Cursor[DictRow], view: View, generation: int) -> str:
        schema = view_schema(self.base, view.name, generation)
        curs.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(schema)))
        view.create(curs, schema)
        return schema

    def _row(self, curs: Cursor[DictRow], view: str, *, lock: bool = False) -> DictRow:
        statement = SQL("SELECT * FROM {} WHERE view = %s").format(self.registry)
        if lock:
            statement += SQL(" FOR UPDATE")
        curs.execute(statement, (view,))
        row = curs.fetchone()
        assert row is not None, f"view {view} is not registered"
        return row

    def live_schema(self, view: str) -> tuple[str, int]:
        """The schema queries read for `view`, and the position it has reached."""
        with self.datastore.transaction() as curs:
            row = self._row(curs, view)
        return view_schema(self.base, view, row["generation"]), row["position"]

    # ---- applying -------------------------------------------------------------------------

    def step(self, view: View, page_size: int = CATCH_UP_PAGE) -> int:
        """Applies the next page of events to the live view; returns how many it read."""
        stop = source.head(self.ledger)
        with self.datastore.transaction(commit=True) as curs:
            row = self._row(curs, view.name, lock=True)
            if row["position"] >= stop:
                return 0
            events = source.read_page(self.ledger, row["position"], stop, page_size, view.topics)
            # A short page means every event up to `stop` has been seen.
            position = events[-1].position if len(events) == page_size else stop
            view.apply(curs, view_schema(self.base, view.name, row["generation"]), events)
            curs.execute(
                SQL("UPDATE {} SET position = %s, applied_at = now() WHERE view = %s").format(
                    self.registry
                ),
                (position, view.name),
            )
        return len(events)

    def positions(self) -> dict[str, int]:
        """How far each view has applied the log (one query for every parked wait)."""
        with self.datastore.transaction() as curs:
            curs.execute(SQL("SELECT view, position FROM {}").format(self.registry))
            return {row["view"]: row["position"] for row in curs.fetchall()}

    def wait_for(self, view: str, position: int, timeout: float) -> bool:
        """Waits until `view` has applied the log up to `position`; False on timeout."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            if self.live_schema(view)[1] >= position:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    # ---- running --------------------------------------------------------------------------

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Follows the log for every view this process holds, until `stop` is set.

        A lost database does not end it: it logs, waits (backing off up to
        `RECONNECT_MAX_SECONDS`), reconnects, takes its views' locks again (or stands by
        if another runner took them meanwhile) and goes on from each view's recorded
        position, so every event is still applied exactly once.
        """
        delay = RECONNECT_FIRST_SECONDS
        ready = on_ready
        while not stop.is_set():
            try:
                self.ensure()
                self._follow(stop, ready)
            except Exception as e:
                if self.state.running:
                    delay = RECONNECT_FIRST_SECONDS  # it had recovered since the last loss
                if not is_store_error(e):
                    self.state.set("stopped", error=repr(e))
                    log.exception(f"{self.log_names[0]}_failed")
                    raise
                self.state.set("reconnecting", error=str(e).strip() or type(e).__name__)
                log.warning(
                    f"{self.log_names[0]}_reconnecting", error=self.state.error, delay=delay
                )
                if ready is not None:
                    ready()  # let the caller go on; the views follow once the store is back
                    ready = None
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                # The pool's connections died with the database, and it backs off for
                # seconds reconnecting them: take a fresh one once the database answers.
                with contextlib.suppress(Exception):
                    renew_pool(self.datastore, timeout=1.0)
            else:
                break
        self.state.set("stopped")

    def _follow(self, stop: threading.Event, on_ready: Callable[[], None] | None) -> None:
        with (
            psycopg.connect(self.url, autocommit=True) as locks,
            psycopg.connect(self.url, autocommit=True) as listener,
        ):
            channel = self.ledger.ledger_recorder.channel_name
            listener.execute(SQL("LISTEN {}").format(Identifier(channel)))
            held: set[str] = set()
            self.state.set("running", held=held)
            log.info(f"{self.log_names[0]}_connected")
            while not stop.is_set():
                for name in self.views.keys() - held:
                    if self._try_hold(locks, name):
                        held.add(name)
                        log.info(f"{self.log_names[1]}_holding", view=name)
                if on_ready is not None:
                    on_ready()  # holding what it can: queries see the views followed
                    on_ready = None
                busy = False
                for name in sorted(held):
                    # The views are held only while the lock session lives: if it died, a
                    # standby may hold them now, so this raises rather than apply any more.
                    locks.execute("SELECT 1")
                    try:
                        busy |= self.step(self.views[name]) == CATCH_UP_PAGE
                    except Exception as e:
                        if is_store_error(e):
                            raise
                        # The page rolled back; keep the other views going and retry it.
                        log.exception(f"{self.log_names[1]}_step_failed", view=name)
                        stop.wait(1.0)
                self.state.beat()
                if not busy:
                    # Woken by the writers' NOTIFY; the timeout also retries standby locks.
                    for _ in listener.notifies(timeout=1.0 if held else 0.5, stop_after=1):
                        pass
                    if self.batch_seconds:
                        stop.wait(self.batch_seconds)  # let a page gather more events

    def followed(self) -> set[str]:
        """The views some runner (of any process) holds right now."""
        keys = {self._lock_key(name): name for name in self.views}
        with self.datastore.transaction() as curs:
            curs.execute(
                "SELECT classid::bigint AS high, objid::bigint AS low FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND objsubid = 1"
                " AND database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())"
            )
            rows = curs.fetchall()
        held = set()
        for row in rows:
            key = (row["high"] << 32) | row["low"]
            if key >= 2**63:
                key -= 2**64
            if key in keys:
                held.add(keys[key])
        return held

    def _try_hold(self, conn: psycopg.Connection[tuple[object, ...]], view: str) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key(view),)).fetchone()
        return bool(row and row[0])

    def _lock_key(self, view: str) -> int:
        return zlib.crc32(f"posledger-view:{self.base}:{view}".encode()) - 2**31

    @contextmanager
    def running(self) -> Iterator[None]:
        """Runs every view in a background thread for the duration of the block."""
        stop = threading.Event()
        ready = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop, ready.set), name="projections", daemon=True
        )
        thread.start()
        ready.wait(30)
        try:
            yield
        finally:
            stop.set()
            thread.join(10)

    # ---- rebuild --------------------------------------------------------------------------

    def rebuild(
        self,
        name: str,
        *,
        verify: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> RebuildReport:
        """Rebuilds `name` from the start of the log into a new generation, then switches.

        The live generation keeps serving queries and following the log meanwhile. Progress
        is saved with every page: an interrupted rebuild resumes where it stopped. Rebuilds
        of one view run one at a time (two filling one shadow copy would apply pages twice):
        a second one waits for the first, then rebuilds again.
        """
        view = self.views[name]
        self.ensure()
        with psycopg.connect(self.url, autocommit=True) as guard:
            guard.execute("SELECT pg_advisory_lock(%s)", (self._lock_key(f"{name}:rebuild"),))
            return self._rebuild(view, name, verify, progress)

    def _rebuild(
        self,
        view: View,
        name: str,
        verify: bool,
        progress: Callable[[int, int], None] | None,
    ) -> RebuildReport:
        started = time.perf_counter()
        with self.datastore.transaction(commit=True) as curs:
            row = self._row(curs, name, lock=True)
            generation = row["rebuild_generation"]
            resumed = generation is not None
            if generation is None:
                generation = row["generation"] + 1
                schema = view_schema(self.base, name, generation)
                curs.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))
                self._create_generation(curs, view, generation)
                curs.execute(
                    SQL(
                        "UPDATE {} SET rebuild_generation = %s, rebuild_position = 0"
                        " WHERE view = %s"
                    ).format(self.registry),
                    (generation, name),
                )
        schema = view_schema(self.base, name, generation)
        applied = 0
        while True:  # catch the shadow copy up, page by page, without blocking anyone
            stop = source.head(self.ledger)
            with self.datastore.transaction(commit=True) as curs:
                position = self._row(curs, name)["rebuild_position"]
                if stop - position <= CATCH_UP_PAGE:
                    break
                events = source.read_page(self.ledger, position, stop, REBUILD_PAGE, view.topics)
                new_position = events[-1].position if len(events) == REBUILD_PAGE else stop
                view.apply(curs, schema, events)
                self._set_rebuild_position(curs, name, new_position)
            applied += len(events)
            if progress is not None:
                progress(new_position, stop)
        differences: list[str] = []
        with self.datastore.transaction(commit=True) as curs:
            # The switch: hold the registry row (the live runner waits), bring the copy to
            # the head, and point queries at it, all in one transaction.
            row = self._row(curs, name, lock=True)
            stop = source.head(self.ledger)
            applied += self._catch_up(curs, view, schema, row["rebuild_position"], stop)
            old = view_schema(self.base, name, row["generation"])
            if verify:
                self._catch_up(curs, view, old, row["position"], stop)
                differences = self._compare(curs, view, old, schema)
            curs.execute(
                SQL(
                    "UPDATE {} SET generation = %s, position = %s, applied_at = now(),"
                    " rebuild_generation = NULL, rebuild_position = NULL WHERE view = %s"
                ).format(self.registry),
                (generation, stop, name),
            )
            if progress is not None:
                progress(stop, stop)
        with self.datastore.transaction(commit=True) as curs:
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

    def _set_rebuild_position(self, curs: Cursor[DictRow], name: str, position: int) -> None:
        curs.execute(
            SQL("UPDATE {} SET rebuild_position = %s WHERE view = %s").format(self.registry),
            (position, name),
        )

    def _catch_up(
        self, curs: Cursor[DictRow], view: View, schema: str, position: int, stop: int
    ) -> int:
        applied = 0
        while position < stop:
            events = source.read_page(self.ledger, position, stop, REBUILD_PAGE, view.topics)
            view.apply(curs, schema, events)
            applied += len(events)
            position = events[-1].position if len(events) == REBUILD_PAGE else stop
        return applied

    def _compare(self, curs: Cursor[DictRow], view: View, live: str, rebuilt: str) -> list[str]:
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

    # ---- status ---------------------------------------------------------------------------

    def status(self) -> list[ViewStatus]:
        self.ensure()
        stop = source.head(self.ledger)
        result = []
        events_table = Identifier(self.base, self.ledger.ledger_recorder.events_table_name)
        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            # Only this runner's views (the deliveries' outbox shares the registry).
            rows = conn.execute(
                SQL("SELECT * FROM {} WHERE view = ANY(%s) ORDER BY view").format(self.registry),
                (list(self.views),),
            )
            for row in rows.fetchall():
                lag = conn.execute(
                    SQL("SELECT count(*) AS n FROM {} WHERE notification_id > %s").format(
                        events_table
                    ),
                    (row["position"],),
                ).fetchone()
                result.append(
                    ViewStatus(
                        view=row["view"],
                        generation=row["generation"],
                        position=row["position"],
                        head=stop,
                        lag_events=int(lag["n"]) if lag else 0,
                        lag_seconds=self._lag_seconds(row["position"], stop),
                        rebuilding=row["rebuild_generation"] is not None,
                    )
                )
        return result

    def _lag_seconds(self, position: int, stop: int) -> float:
        """Age of the oldest event the view has not applied yet (0 when caught up)."""
        events = source.read_page(self.ledger, position, stop, 1, ())
        if not events:
            return 0.0
        recorded: datetime = events[0].event.timestamp
        return max(0.0, (datetime.now(UTC) - recorded).total_seconds())


@dataclass(frozen=True)
class RebuildReport:
    view: str
    generation: int
    position: int
    events: int
    seconds: float
    resumed: bool
    differences: list[str]
