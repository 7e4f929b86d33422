"""Group commit: one writer per recorder commits many commands in one transaction.

Commands decide outside any lock, then hand their stored events, command record, event
metadata and read set to `GroupCommitter.commit`, which blocks until the writer thread has
committed them. The writer takes whatever commands are waiting and sends them to PostgreSQL
as ONE call of the function `posledger_commit_group` (its SQL in ledger/commit_function.py). In one
round trip and one implicit transaction, that function

1. takes the events table's EXCLUSIVE lock (so positions commit in order and a reader that
   tails the log never skips an event: the library's own reason for the lock),
2. finds, per command, whether its request id is already recorded (a duplicate), whether one
   of its events clashes with a stored version, or whether an aggregate it read has moved on
   since (a conflict),
3. draws the positions of the others' events, and inserts their command records, events
   and metadata rows, the rows and records with their events' positions (what a
   verification reads them by),
4. extends the audit hash chain over the events it inserted (`ledger/audit`): each event's
   hash covers its row, its metadata row and its command record (the writer thread encodes
   the event's fields and metadata before the call; the function adds the position, the
   payload and the command record as stored), and the chain links them in position order
   from the chain head, which it moves; so an event is chained in the transaction that
   appends it, under the lock that orders the log,
5. and returns their notification ids.

The lock is therefore held only while PostgreSQL itself works, never while Python does, and
the whole group shares one COMMIT (one WAL flush). Each command still succeeds or fails on
its own: a duplicate or a conflict answers only that command, never its neighbours.

A command may be decided on what an earlier command of this process wrote before that one
committed (a busy stock item: each sale decides on the one before it as soon as that one is
handed to the writer). It says so (`CommitRequest.after`), and the two may share a group:
the function takes such chains in order and skips a command whose predecessor it skipped,
so no version is written without the one before it and no decision stands on state that
did not commit. A predecessor in an earlier group must have committed, and the aggregate
must still be exactly at the version the command read. Otherwise two commands of one group
must not touch the same aggregate or request id (the function checks against the table,
not against its own group), so the writer defers such a command to the next group, where
it meets the first one's committed events like any other writer.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
import structlog
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from psycopg.sql import Composed

from ledger.commit_function import function_arguments

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CommandRecord:
    """The record of one successful command, committed with its events.

    A retry with the same request id finds it and is answered from the aggregate as it was
    at `aggregate_version`, with the ids in `result`; nothing is written again.
    """

    merchant_id: str
    request_id: str
    command: str
    fingerprint: str
    aggregate_id: UUID
    aggregate_version: int
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventMetadata:
    """Who and where, recorded for every event a command writes (never the API key itself).

    The server's time is each event's own `timestamp`; a device's time, where it reports
    one, is the event's `occurred_at`.
    """

    merchant_id: str
    app_id: str = ""
    key_id: str = ""
    device_id: str = ""
    request_id: str = ""
    # Location of each aggregate that has one (sales, stock items), by aggregate id.
    locations: dict[UUID, str] = field(default_factory=dict)


# Bounds one group: PostgreSQL holds the lock for as long as the group takes to insert.
MAX_GROUP_COMMANDS = 500
MAX_GROUP_EVENTS = 5_000
# A lost connection is retried on a fresh one; a group that committed before the loss is
# then answered as duplicates (their records exist) and replayed by the application.
MAX_ATTEMPTS = 5


class DuplicateCommand(IntegrityError):
    """The command's request id is already recorded: a twin committed first."""


class CommitConflict(IntegrityError):
    """An event clashed with a stored version, or an aggregate read has moved on."""


@dataclass(frozen=True)
class CommitRequest:
    """What one command asks to commit atomically."""

    events: Sequence[StoredEvent]
    command_record: CommandRecord | None = None
    metadata: EventMetadata | None = None
    # Aggregates the decision read, with the version it read them at (0: did not exist).
    # The commit fails with a conflict if any of them has moved on.
    reads: Sequence[tuple[UUID, int]] = ()
    # Aggregates the decision read as an earlier command of this process left them, before
    # that command committed: (aggregate, the version read, that command). The commit fails
    # with a conflict unless that command commits first and the version is still the latest.
    after: Sequence[tuple[UUID, int, Pending]] = ()

    def written(self) -> set[UUID]:
        return {e.originator_id for e in self.events}  # type: ignore[misc]

    def read(self) -> set[UUID]:
        return {aggregate_id for aggregate_id, _ in self.reads} | {a for a, _, _ in self.after}


@dataclass(eq=False)
class Pending:
    """A command handed to the writer: answered once `done` is set (failed if `error`)."""

    request: CommitRequest
    done: threading.Event = field(default_factory=threading.Event)
    notification_ids: list[int] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.done.is_set() and self.error is not None


@dataclass
class GroupStats:
    """What the writer has done, for benchmarks and metrics."""

    groups: int = 0
    commands: int = 0
    events: int = 0
    deferred: int = 0
    chained: int = 0  # commands in a group behind a predecessor of the same group
    seconds_in_database: float = 0.0  # the group call's round trips, as the writer saw them
    largest_group: int = 0
    lock_held_seconds: float = 0.0  # from lock granted to the end of the inserts
    longest_lock_held: float = 0.0
    locks_held_over_2ms: int = 0

    def lock_held(self, seconds: float) -> None:
        self.lock_held_seconds += seconds
        self.longest_lock_held = max(self.longest_lock_held, seconds)
        self.locks_held_over_2ms += seconds > 0.002

    def summary(self) -> dict[str, float]:
        groups = max(self.groups, 1)
        return {
            "groups": self.groups,
            "commands": self.commands,
            "events": self.events,
            "commands_per_group": round(self.commands / groups, 2),
            "largest_group": self.largest_group,
            "deferred": self.deferred,
            "chained": self.chained,
            "call_ms_mean": round(self.seconds_in_database / groups * 1000, 3),
            "lock_held_ms_mean": round(self.lock_held_seconds / groups * 1000, 3),
            "lock_held_ms_max": round(self.longest_lock_held * 1000, 3),
            "locks_held_over_2ms": self.locks_held_over_2ms,
        }


class GroupCommitter:
    """The one writer of a recorder: commits waiting commands in groups, in order."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        call: Composed,
        *,
        lock_timeout_seconds: float,
        commit_timeout_seconds: float = 30.0,
    ) -> None:
        self._connect = connect
        self._call = call
        self._lock_timeout = f"{int(lock_timeout_seconds * 1000)}ms"
        self._commit_timeout = commit_timeout_seconds
        self._queue: deque[Pending] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = None
        self.stats = GroupStats()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def commit(
        self, request: CommitRequest, handed: Callable[[Pending], None] | None = None
    ) -> list[int]:
        """Commits one command's request; returns its events' notification ids.

        `handed` is called with the queued command before this waits for its commit: from
        then on a later command may be decided on its state (see `CommitRequest.after`).
        Raises `DuplicateCommand` or `CommitConflict` for this command alone, and the
        store's error when the database could not be reached.
        """
        pending = Pending(request)
        with self._wake:
            if self._closed:
                raise OperationalError("the event store is closed")
            self._queue.append(pending)
            self._wake.notify()
        if handed is not None:
            handed(pending)
        if not pending.done.wait(self._commit_timeout):
            # The writer is stuck on the database; the group may still commit, in which
            # case a retry with the same request id is answered from its record.
            raise OperationalError(
                f"the event store did not confirm the commit within {self._commit_timeout} s"
            )
        if pending.error is not None:
            raise pending.error
        return pending.notification_ids

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=self._commit_timeout)
        if self.stats.groups:
            # Also runs from the application's __del__, when logging may be gone already.
            with contextlib.suppress(Exception):
                log.info("group_commit_summary", **self.stats.summary())
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()

    # ---- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:
                    return  # closed and drained
                group = self._take_group()
            if group:  # empty when every waiting command failed behind its predecessor
                self._commit_group(group)

    def _take_group(self) -> list[Pending]:
        """The waiting commands that can share a transaction, oldest first.

        A command that reads or writes what an earlier one in the group writes, or has its
        request id, stays queued, in order, for the next group: the function checks each
        command against the table as it was before the group. (Writing what an earlier one
        only read is fine: that is the order they commit in.) The exception is a command
        decided on that earlier one's state (`after`): it joins the group behind it, and one
        whose predecessor failed already fails here, without a round trip.
        """
        group: list[Pending] = []
        taken: set[int] = set()
        deferred: list[Pending] = []
        writer_of: dict[UUID, Pending] = {}  # the last command of the group writing each
        requests: set[tuple[str, str]] = set()
        events = 0
        while self._queue and len(group) < MAX_GROUP_COMMANDS:
            pending = self._queue.popleft()
            request = pending.request
            if any(before.failed for _, _, before in request.after):
                self._fail([pending], CommitConflict("it was decided on state that did not commit"))
                continue
            writes, reads = request.written(), request.read()
            record = request.command_record
            key = (record.merchant_id, record.request_id) if record else None
            too_big = group and events + len(request.events) > MAX_GROUP_EVENTS
            waiting = [b for _, _, b in request.after if not b.done.is_set() and id(b) not in taken]
            behind = {aggregate_id: before for aggregate_id, _, before in request.after}
            overlaps = [a for a in (writes | reads) if a in writer_of]
            chained = all(behind.get(a) is writer_of[a] for a in overlaps)
            if too_big or waiting or not chained or (key is not None and key in requests):
                deferred.append(pending)
                if too_big:
                    break
                continue
            group.append(pending)
            taken.add(id(pending))
            self.stats.chained += bool(overlaps)
            writer_of.update(dict.fromkeys(writes, pending))
            events += len(request.events)
            if key is not None:
                requests.add(key)
        self._queue.extendleft(reversed(deferred))
        self.stats.deferred += len(deferred)
        return group

    def _commit_group(self, group: list[Pending]) -> None:
        arguments = function_arguments([p.request for p in group], self._lock_timeout)
        for attempt in range(MAX_ATTEMPTS):
            started = time.perf_counter()
            try:
                rows = self._execute(arguments)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                self._drop_connection()
                if attempt + 1 < MAX_ATTEMPTS and not self._closed:
                    log.warning("group_commit_retry", error=str(e), attempt=attempt + 1)
                    time.sleep(0.05 * 2**attempt)
                    continue
                self._fail(group, OperationalError(str(e)))
                return
            except psycopg.Error as e:
                self._drop_connection()
                log.error("group_commit_failed", error=str(e), commands=len(group))
                self._fail(group, _store_error(e))
                return
            except BaseException as e:
                self._drop_connection()
                self._fail(group, e)
                raise
            self._record_stats(group, time.perf_counter() - started)
            self._answer(group, rows)
            return

    def _execute(self, arguments: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        with self._conn.cursor() as curs:
            curs.execute(self._call, arguments, prepare=True)
            return curs.fetchall()

    def _answer(self, group: list[Pending], rows: list[tuple[Any, ...]]) -> None:
        owner = {
            (e.originator_id, e.originator_version): pending
            for pending in group
            for e in pending.request.events
        }
        refused: dict[int, str] = {}
        for kind, n, originator_id, version, notification_id in rows:
            if kind == "event":
                owner[originator_id, version].notification_ids.append(notification_id)
            elif kind == "held":
                self.stats.lock_held(notification_id / 1e6)
            elif n not in refused or kind == "known":  # a known twin outranks a clash
                refused[n] = kind
        for n, pending in enumerate(group):
            kind = refused.get(n)
            if kind == "clashed":
                pending.error = CommitConflict("an aggregate has moved on since it was read")
            elif kind is not None:
                pending.error = DuplicateCommand("the request id is already recorded")
            pending.notification_ids.sort()
            pending.done.set()

    def _fail(self, group: list[Pending], error: BaseException) -> None:
        for pending in group:
            pending.error = error
            pending.done.set()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _record_stats(self, group: list[Pending], seconds: float) -> None:
        s = self.stats
        s.groups += 1
        s.commands += len(group)
        s.events += sum(len(p.request.events) for p in group)
        s.seconds_in_database += seconds
        s.largest_group = max(s.largest_group, len(group))


def _store_error(e: psycopg.Error) -> Exception:
    from eventsourcing import persistence

    mapping: list[tuple[type[psycopg.Error], type[Exception]]] = [
        (psycopg.IntegrityError, persistence.IntegrityError),
        (psycopg.DataError, persistence.DataError),
        (psycopg.ProgrammingError, persistence.ProgrammingError),
        (psycopg.InternalError, persistence.InternalError),
    ]
    for source, target in mapping:
        if isinstance(e, source):
            error = target(str(e))
            error.__cause__ = e
            return error
    error = persistence.PersistenceError(str(e))
    error.__cause__ = e
    return error
