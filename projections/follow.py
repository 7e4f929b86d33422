"""Following the log: each held view's next page, live, with standby and reconnect.

Exactly once: a page of events and the view's new position commit in one transaction, under
a lock on the view's registry row, so a crash loses a whole page or nothing, and nothing is
ever applied twice. Two followers never apply the same view at once: each view is held with
a PostgreSQL advisory lock; a second follower waits as a standby and takes over when the
first one's session ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import psycopg
import structlog
from eventsourcing import persistence as es_persistence
from psycopg.sql import SQL, Identifier

from ledger.event_log import EventLog
from ledger.store import StoreUnavailable, renew_pool, wait_for_notify
from projections import source
from projections.registry import Registry, lock_key, view_schema
from projections.view import View

log = structlog.get_logger("posledger.projections")

CATCH_UP_PAGE = 1000  # events per transaction while behind
RECONNECT_FIRST_SECONDS = 0.5  # a follower that lost the database retries after this long,
RECONNECT_MAX_SECONDS = 5.0  # doubling up to this


def is_store_error(error: BaseException) -> bool:
    """A lost, refused or timed-out database (which a follower outlives), not a bug."""
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
    """What this process's follower is doing, for health, logs and `projections status`."""

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


def step(
    log: EventLog,
    registry: Registry,
    view: View,
    page_size: int = CATCH_UP_PAGE,
    stop: int | None = None,
) -> int:
    """Applies the next page of events to the live view, up to the committed position
    `stop` (the head now, unless given); returns how many it read."""
    stop = log.head() if stop is None else stop
    with log.datastore.transaction(commit=True) as curs:
        row = registry.row(curs, view.name, lock=True)
        if row["position"] >= stop:
            return 0
        events = source.read_page(log, row["position"], stop, page_size, view.topics)
        # A short page means every event up to `stop` has been seen.
        position = events[-1].position if len(events) == page_size else stop
        view.apply(curs, view_schema(registry.base, view.name, row["generation"]), events)
        registry.advance(curs, view.name, position)
    return len(events)


def followed(log: EventLog, views: Iterable[str]) -> set[str]:
    """The views some follower (of any process) holds right now."""
    keys = {lock_key(log.schema, name): name for name in views}
    with log.datastore.transaction() as curs:
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


class Follower:
    """Follows the log for its views until stopped, holding what no other follower holds.

    `names` are its log events' prefixes (`<first>_connected`, `<second>_holding`, …);
    `batch_seconds` is how long it waits after a wake-up so one page takes many commits.
    """

    def __init__(
        self,
        log: EventLog,
        registry: Registry,
        views: Mapping[str, View],
        *,
        names: tuple[str, str] = ("projections", "projection"),
        batch_seconds: float = 0.0,
    ) -> None:
        self.log = log
        self.registry = registry
        self.views = views
        self.names = names
        self.batch_seconds = batch_seconds
        self.state = RunnerState()

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Follows the log for every view this process holds, until `stop` is set.

        A lost database does not end it: it logs, waits (backing off up to
        `RECONNECT_MAX_SECONDS`), reconnects, takes its views' locks again (or stands by
        if another follower took them meanwhile) and goes on from each view's recorded
        position, so every event is still applied exactly once.
        """
        delay = RECONNECT_FIRST_SECONDS
        ready = on_ready
        while not stop.is_set():
            try:
                self.registry.ensure(self.views.values())
                self._follow(stop, ready)
            except Exception as e:
                if self.state.running:
                    delay = RECONNECT_FIRST_SECONDS  # it had recovered since the last loss
                if not is_store_error(e):
                    self.state.set("stopped", error=repr(e))
                    log.exception(f"{self.names[0]}_failed")
                    raise
                self.state.set("reconnecting", error=str(e).strip() or type(e).__name__)
                log.warning(f"{self.names[0]}_reconnecting", error=self.state.error, delay=delay)
                if ready is not None:
                    ready()  # let the caller go on; the views follow once the store is back
                    ready = None
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                # The pool's connections died with the database, and it backs off for
                # seconds reconnecting them: take a fresh one once the database answers.
                with contextlib.suppress(Exception):
                    renew_pool(self.log.datastore, timeout=1.0)
            else:
                break
        self.state.set("stopped")

    def _follow(self, stop: threading.Event, on_ready: Callable[[], None] | None) -> None:
        with (
            psycopg.connect(self.log.url, autocommit=True) as locks,
            psycopg.connect(self.log.url, autocommit=True) as listener,
        ):
            listener.execute(SQL("LISTEN {}").format(Identifier(self.log.channel)))
            held: set[str] = set()
            self.state.set("running", held=held)
            log.info(f"{self.names[0]}_connected")
            while not stop.is_set():
                for name in self.views.keys() - held:
                    if self._try_hold(locks, name):
                        held.add(name)
                        log.info(f"{self.names[1]}_holding", view=name)
                if on_ready is not None:
                    on_ready()  # holding what it can: queries see the views followed
                    on_ready = None
                busy, head = False, 0
                if held:
                    # The views are held only while the lock session lives: if it died, a
                    # standby may hold them now, so this raises rather than apply any more.
                    # (Each page still applies once either way: `step` locks the view's row.)
                    locks.execute("SELECT 1")
                    head = self.log.head()  # one read of the head for all the views
                for name in sorted(held):
                    try:
                        applied = step(self.log, self.registry, self.views[name], stop=head)
                        busy |= applied == CATCH_UP_PAGE
                    except Exception as e:
                        if is_store_error(e):
                            raise
                        # The page rolled back; keep the other views going and retry it.
                        log.exception(f"{self.names[1]}_step_failed", view=name)
                        stop.wait(1.0)
                self.state.beat()
                if not busy:
                    # Woken by the writers' NOTIFY; the timeout also retries standby locks.
                    wait_for_notify(listener, stop, timeout=1.0 if held else 0.5)
                    if self.batch_seconds:
                        stop.wait(self.batch_seconds)  # let a page gather more events

    def _try_hold(self, conn: psycopg.Connection[tuple[object, ...]], view: str) -> bool:
        key = lock_key(self.log.schema, view)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        return bool(row and row[0])
