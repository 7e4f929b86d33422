"""The shape every command shares: validate → (replay) → load → decide → save, retried.

Around every command it provides what DESIGN.md promises everywhere:
- idempotency: the command's record commits in the same transaction as its events; a retry
  with the same request id is answered from that record and writes nothing;
- tenancy: an aggregate of another merchant answers exactly like a missing one;
- optimistic concurrency: `expected_version` is checked against the command's main
  aggregate, and a command that lost a race to another writer is re-run on fresh state a
  bounded number of times; re-run, it checks `expected_version` again, so a caller that gave
  one gets a VersionConflict only if the main aggregate itself moved on.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from copy import deepcopy
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording

from ledger.application.command_cache import TURN_TIMEOUT_SECONDS, CommandCache, Handed, Turn
from ledger.application.context import Context, Decision, Outcome
from ledger.application.fingerprint import request_fingerprint
from ledger.domain import commands as c
from ledger.domain.errors import DomainError, NotFound, RequestIdReused, VersionConflict
from ledger.domain.validation import Checks
from ledger.event_log import EventLog
from ledger.group_commit import CommandRecord, Pending
from ledger.keys import ApiKeys
from ledger.store import (
    LedgerRecorder,
    Settings,
    StoreGate,
    bound_pool,
    bounded_url,
    database_url,
    eventsourcing_env,
    is_duplicate_command,
    schema_lock,
    select_position,
)

# Sales of one product at one location all write its stock item, so a busy item sees many
# writers at once; each lost race means another writer got in, and 5 attempts lost about 1
# in 7 of 16 simultaneous completions. Backoff is capped so 10 attempts stay well under 0.5 s.
MAX_ATTEMPTS = 10
MAX_BACKOFF_SECONDS = 0.05
A = TypeVar("A", bound=Aggregate)


class LedgerBase(Application[UUID]):
    """Opens the store and runs commands. The command methods live in the mixins."""

    database_url: str = ""  # set by `open`; projections open connections of their own
    store_gate: StoreGate  # set by `open`; closed while the database is unreachable
    settings: Settings  # set by `open`

    @classmethod
    def open(cls, settings: Settings | None = None) -> Any:
        """Connects to the configured database and creates missing tables safely."""
        settings = settings or Settings.from_env()
        url = database_url(settings)
        ledger = cls(env=eventsourcing_env(url, settings))
        ledger.database_url = bounded_url(url, settings)
        ledger.store_gate = bound_pool(ledger.ledger_recorder.datastore, settings)
        ledger.settings = settings
        with schema_lock(url, settings.schema):
            ledger.ledger_recorder.create_table()
            if ledger.snapshots is not None:
                ledger.snapshots.recorder.create_table()  # type: ignore[attr-defined]
            ledger.api_keys.create_table()
        return ledger

    def close(self) -> None:
        self.ledger_recorder.close_writer()
        super().close()

    @property
    def ledger_recorder(self) -> LedgerRecorder:
        assert isinstance(self.recorder, LedgerRecorder)
        return self.recorder

    @property
    def event_log(self) -> EventLog:
        """The log as its readers (views, deliveries) see it, without the commands."""
        return EventLog(self.ledger_recorder, self.mapper, self.database_url)

    @cached_property
    def api_keys(self) -> ApiKeys:
        return ApiKeys(self.ledger_recorder.datastore)

    # ---- loading, with tenancy ------------------------------------------------------------

    @cached_property
    def command_cache(self) -> CommandCache:
        return CommandCache()

    def _find(
        self,
        cls: type[A],
        merchant_id: str,
        aggregate_id: UUID,
        version: int | None = None,
        *,
        copy: bool = True,
    ) -> A | None:
        """The merchant's aggregate of type `cls`, or None. Foreign ones look missing.

        Inside a command's decision (`_reading`), the latest version is taken from this
        process's command cache without a round trip, and what was read joins the command's
        read set, which the commit checks: a decision made on a version that has moved on
        fails as a conflict and is made again on fresh state. `copy=False` hands out the
        cached object itself, for callers that only read it.
        """
        reads = _current_reads.get()
        found: object
        if reads is not None and version is None:
            found = self._read_for_command(reads, aggregate_id, copy=copy)
        else:
            try:
                found = self.repository.get(aggregate_id, version=version)
            except AggregateNotFoundError:
                return None
        if not isinstance(found, cls) or getattr(found, "merchant_id", None) != merchant_id:
            return None
        return found

    def _read_for_command(self, reads: ReadSet, aggregate_id: UUID, *, copy: bool) -> object:
        handed = self._handed_state(reads, aggregate_id)
        if handed is not None:
            # Decided on what the command before it handed to the writer: it commits only
            # behind that command (`CommitRequest.after`).
            reads.used_cache = True
            reads.chained[aggregate_id] = (handed.version, handed.commit)
            return deepcopy(handed.aggregate) if copy else handed.aggregate
        cached = None if reads.fresh else self.command_cache.get(aggregate_id)
        if cached is None:
            try:
                aggregate: Aggregate | None = self.repository.get(aggregate_id)
            except AggregateNotFoundError:
                aggregate = None
            cached = self.command_cache.put(aggregate_id, aggregate)
        else:
            reads.used_cache = True
        reads.versions[aggregate_id] = cached.version
        if cached.aggregate is None:
            return None
        return deepcopy(cached.aggregate) if copy else cached.aggregate

    def _handed_state(self, reads: ReadSet, aggregate_id: UUID) -> Handed | None:
        """The state the previous writer of an aggregate whose turn this command holds left,
        while its commit is not known; on fresh reads none (they wait for that commit)."""
        if reads.turn is None or aggregate_id not in reads.turn.held:
            return None
        handed = self.command_cache.in_flight(aggregate_id)
        if handed is None or not reads.fresh:
            return handed
        # Fresh (a refusal to confirm, a conflict to retry): the committed state only, read
        # from the store once the writer has answered. (Handing back the handed state here
        # would count as a cached read until `settled` runs, and a refusal would be
        # confirmed again and again.) Should the answer not come in time, the store's state
        # is read all the same: the commit's version checks refuse a decision made on it
        # if the command before commits after all.
        handed.commit.done.wait(TURN_TIMEOUT_SECONDS)
        return None

    @contextmanager
    def _reading(self, *, fresh: bool) -> Iterator[ReadSet]:
        """Collects what a decision reads (see `_find`)."""
        reads = ReadSet(fresh=fresh)
        token = _current_reads.set(reads)
        try:
            yield reads
        finally:
            _current_reads.reset(token)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """The library's `save`, minus its runtime protocol checks for our own aggregates.

        `ProcessingEvent.collect_events` tests every object against two `typing` runtime
        protocols, which Python 3.11 makes slow (they showed in import profiles); our
        aggregates are known to be aggregates. Anything else goes the library's way.
        """
        if not all(isinstance(obj, Aggregate) for obj in objs):
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in objs:
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._snapshot_in_hand(processing_event)
        self._notify(recordings)
        return recordings

    def _snapshot_in_hand(self, saved: ProcessingEvent[UUID]) -> None:
        """Snapshots each aggregate whose events just saved reached its interval, from the
        aggregate in hand: it is exactly the state those events leave.

        The library's `_take_snapshots` reads the aggregate back from the store and replays
        up to an interval of events on the command's own thread (a busy stock item's every
        hundredth write paid for it). A snapshot may land a version or two past the multiple
        when one save carries several events; a snapshot at any version is as good.
        """
        if self.snapshots is None or not self.snapshotting_intervals:
            return
        due: dict[UUID, Aggregate] = {}
        for event in saved.events:
            aggregate = saved.aggregates.get(event.originator_id)
            if not isinstance(aggregate, Aggregate):
                continue
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is not None and event.originator_version % interval == 0:
                due[event.originator_id] = aggregate
        if due:
            self.snapshots.put([type(a).Snapshot.take(a) for a in due.values()])

    def _save_decision(
        self, aggregates: list[Any], reads: ReadSet, **kwargs: Any
    ) -> list[Recording[UUID]]:
        """Saves what a decision changed, checking what it read; keeps the cache current.

        Holding the turn to write (`reads.turn`), it passes the turn on as soon as the writer
        has its request, and the next command decides on the state this one left.
        """
        cache = self.command_cache
        writes = [a for a in aggregates if a.pending_events]
        written = {a.id for a in writes}
        handed: list[Pending] = []

        def hand_over(commit: Pending) -> None:
            handed.append(commit)
            if reads.turn is not None:
                cache.handed(reads.turn, writes, commit)

        try:
            recordings = self.save(
                *aggregates,
                reads=[(i, v) for i, v in reads.versions.items() if i not in written],
                after=[(i, v, commit) for i, (v, commit) in reads.chained.items()],
                handed=hand_over,
                **kwargs,
            )
        except IntegrityError:
            cache.evict([*reads.versions, *reads.chained, *written])
            raise
        else:
            for aggregate in aggregates:
                cache.put(aggregate.id, aggregate)
        finally:
            if handed:
                cache.settled(written, handed[0])
        return recordings

    def _load(
        self,
        cls: type[A],
        merchant_id: str,
        aggregate_id: str | UUID,
        reason: str,
        version: int | None = None,
    ) -> A:
        try:
            key = aggregate_id if isinstance(aggregate_id, UUID) else UUID(aggregate_id)
        except ValueError:
            key = None
        found = None if key is None else self._find(cls, merchant_id, key, version)
        if found is None:
            noun = reason.removesuffix("_NOT_FOUND").lower().replace("_", " ")
            raise NotFound(f"{noun} {aggregate_id} not found", reason=reason)
        return found

    def owned_aggregate_id(self, merchant_id: str, aggregate_id: str) -> UUID:
        """The id of any aggregate of the merchant (sale, product, customer, stock item)."""
        checks = Checks()
        checks.uuid("aggregate_id", aggregate_id)
        checks.raise_if_any()
        return self._load(Aggregate, merchant_id, aggregate_id, "AGGREGATE_NOT_FOUND").id

    @staticmethod
    def _check_version(ctx: Context, aggregate: Aggregate) -> None:
        """Refuses to act on an aggregate that moved on since the caller read it."""
        if ctx.expected_version is not None and aggregate.version != ctx.expected_version:
            raise VersionConflict(
                f"{type(aggregate).__name__.lower()} {aggregate.id} is at version "
                f"{aggregate.version}, not the expected {ctx.expected_version}"
            )

    # ---- running a command ----------------------------------------------------------------

    def _execute(
        self,
        ctx: Context,
        cmd: Any,
        decide: Callable[[], Decision],
        likely_writes: Callable[[], frozenset[UUID]] | None = None,
    ) -> Outcome:
        """Runs a validated command: decides and saves; a known request is replayed.

        A retry is not looked up first: its record is found when the commit meets it
        (`DuplicateCommand`), or its decision fails on the state the original left, and
        either way it is answered as the original was.

        Commands of this process that write the same aggregate (a busy stock item) take
        turns from decision to hand-off: one that had to wait decides again on what the one
        before it handed to the writer, and commits behind it, in the same group if it can
        (ledger/group_commit.py), instead of failing at commit and starting over. When
        `likely_writes` (what the command is expected to write, from cached state) names an
        aggregate that is busy so, the command waits for its turn first and decides once.
        """
        c.check_request_id(ctx.request_id)
        c.check_expected_version(ctx.expected_version)
        fingerprint = request_fingerprint(cmd, ctx.expected_version)
        fresh = False
        for attempt in range(MAX_ATTEMPTS):
            expected = likely_writes() if likely_writes is not None else frozenset()
            decided: Decided | None = None
            if expected and self.command_cache.busy(expected):
                turns = self.command_cache.writing(expected)
            else:
                first = self._decide(ctx, fingerprint, decide, fresh=fresh)
                if isinstance(first, Outcome):
                    return first
                decided = first
                turns = self.command_cache.writing(decided.written())
            with turns as turn:
                if (
                    decided is None
                    or turn.waited
                    or any(self.command_cache.in_flight(i) for i in turn.held)
                ):
                    again = self._decide(ctx, fingerprint, decide, fresh=fresh, turn=turn)
                    if isinstance(again, Outcome):
                        return again
                    decided = again
                    if not decided.written() <= turn.held:
                        likely_writes = None  # the guess fell short: decide first from now on
                        continue  # it now writes more than it holds: take turns again
                decided.reads.turn = turn  # passed on once the writer has the request
                aggregates, ids = decided.aggregates, decided.ids
                record = CommandRecord(
                    merchant_id=ctx.merchant_id,
                    request_id=ctx.request_id,
                    command=type(cmd).__name__,
                    fingerprint=fingerprint,
                    aggregate_id=aggregates[0].id,
                    aggregate_version=aggregates[0].version,
                    result={
                        "ids": ids,
                        "aggregates": [[str(a.id), a.version] for a in aggregates],
                    },
                )
                try:
                    recordings = self._save_decision(
                        aggregates,
                        decided.reads,
                        command_record=record,
                        event_metadata=ctx.event_metadata(aggregates),
                    )
                except IntegrityError as e:
                    if is_duplicate_command(e):
                        # A twin of this request committed first: answer as it was answered.
                        replayed = self._replay(ctx, fingerprint)
                        assert replayed is not None
                        return replayed
                    # Decided again on fresh state, which checks `expected_version` again: a
                    # conflict on the main aggregate is then a VersionConflict, while one on
                    # another aggregate it moves (a sale's stock items) is simply retried.
                    fresh = True
                    if attempt:
                        backoff = min(MAX_BACKOFF_SECONDS, 0.005 * 2**attempt)
                        time.sleep(random.uniform(0, backoff))  # noqa: S311
                    continue
            position = max((r.notification.id for r in recordings), default=0)
            return Outcome(
                aggregates=tuple(aggregates),
                ids=ids,
                position=position or self._position(aggregates),
            )
        raise VersionConflict(
            f"gave up after {MAX_ATTEMPTS} attempts: the data is changing too fast",
            reason="CONCURRENT_MODIFICATION",
        )

    def _decide(
        self,
        ctx: Context,
        fingerprint: str,
        decide: Callable[[], Decision],
        *,
        fresh: bool,
        turn: Turn | None = None,
    ) -> Decided | Outcome:
        """The command's decision, or the answer to a twin that committed first."""
        with self._reading(fresh=fresh) as reads:
            reads.turn = turn
            try:
                aggregates, ids = decide()
            except DomainError:
                if not reads.used_cache:
                    # A twin of this request may have committed first and changed the state
                    # so that this copy fails: answer as the twin was answered.
                    replayed = self._replay(ctx, fingerprint)
                    if replayed is not None:
                        return replayed
                    raise
            else:
                return Decided(aggregates, ids, reads)
        # Refused on cached state, which may be behind, or on state not yet committed:
        # confirm on fresh state.
        return self._decide(ctx, fingerprint, decide, fresh=True, turn=turn)

    def _replay(self, ctx: Context, fingerprint: str) -> Outcome | None:
        record = self.ledger_recorder.select_command_record(ctx.merchant_id, ctx.request_id)
        if record is None:
            return None
        if record.fingerprint != fingerprint:
            raise RequestIdReused(
                f"request_id {ctx.request_id!r} was already used for a different request "
                f"({record.command})"
            )
        aggregates = []
        for aggregate_id, version in record.result["aggregates"]:
            found = self._find(Aggregate, ctx.merchant_id, UUID(aggregate_id), version)
            assert found is not None, "a recorded command's aggregates exist"
            aggregates.append(found)
        return Outcome(
            aggregates=tuple(aggregates),
            ids=record.result["ids"],
            replayed=True,
            position=self._position(aggregates),
        )

    def _position(self, aggregates: list[Any]) -> int:
        """Where the aggregates' current versions stand in the log (for no-ops and replays)."""
        return select_position(self.ledger_recorder, [(a.id, a.version) for a in aggregates])


@dataclass(frozen=True)
class Decided:
    """What a decision changed and what it read."""

    aggregates: list[Any]
    ids: dict[str, str]
    reads: ReadSet

    def written(self) -> frozenset[UUID]:
        return frozenset(a.id for a in self.aggregates if a.pending_events)


@dataclass
class ReadSet:
    """The aggregates one decision read, at the versions it read (0: did not exist)."""

    fresh: bool  # read from the database, not the command cache
    versions: dict[UUID, int] = field(default_factory=dict)
    used_cache: bool = False
    # The turn the command holds to write some aggregates (see `CommandCache.writing`), and
    # what it read of them as the previous command left them, not yet committed.
    turn: Turn | None = None
    chained: dict[UUID, tuple[int, Pending]] = field(default_factory=dict)


_current_reads: ContextVar[ReadSet | None] = ContextVar("posledger_reads", default=None)
