"""What commands of this process know of aggregates: their latest committed versions, the
versions handed to the writer but not yet committed, and whose turn it is to write each.

The latest versions are kept in two tiers. The most recently used are live objects, which
a command copies; the rest are pickled. Bytes are no work for the garbage collector, while
a live sale is 10 to 14 objects it walks in every full collection: a cache of 20,000 live
aggregates held the interpreter for about 90 ms per collection, with every call in flight
waiting (see `ledger.heap`). Pickling costs a command more than the copy it takes (about
20 µs a sale each way), so it is paid only by what goes cold: an aggregate is pickled once
when it leaves the live tier and unpickled when a command wants it again.
"""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ledger.domain.errors import VersionConflict
from ledger.group_commit import Pending

# Aggregates kept in memory for commands (sales, products, stock items, customers), and how
# many of them are kept live: enough for every sale in progress and the busy products and
# stock items, few enough that a full collection walks them in a few milliseconds.
COMMAND_CACHE_SIZE = 20_000
LIVE_ENTRIES = 2_000
# How long a command waits for its turn to write an aggregate another command is writing.
TURN_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Cached:
    aggregate: Any  # None: known not to exist
    version: int


# A cold entry: the aggregate pickled (None: known not to exist) and its version, keyed by
# the id's integer. Plain tuples of bytes and ints, and ints, the collector stops tracking
# at all (a UUID, or a tuple subclass, it walks every time).
_Cold = tuple[bytes | None, int]


def _cooled(entry: Cached) -> _Cold:
    if entry.aggregate is None:
        return (None, entry.version)
    return (pickle.dumps(entry.aggregate, pickle.HIGHEST_PROTOCOL), entry.version)


def _warmed(cold: _Cold) -> Cached:
    state, version = cold
    return Cached(None if state is None else pickle.loads(state), version)  # noqa: S301 (ours)


@dataclass(frozen=True)
class Handed:
    """An aggregate as a command left it, handed to the writer and not yet known committed."""

    aggregate: Any
    version: int
    commit: Pending  # the writer's answer to that command, once it has one


class Turn:
    """The turn to write some aggregates: from a command's decision until the writer has
    its commit request (`release`), so the next command may decide on what it left."""

    def __init__(self, locks: list[threading.Lock], held: frozenset[UUID], waited: bool) -> None:
        self._locks = locks
        self.held = held
        self.waited = waited  # another command had the turn first

    def release(self) -> None:
        while self._locks:
            self._locks.pop().release()


class CommandCache:
    """The latest version of aggregates this process has read or written, for commands.

    Entries may fall behind writes by other processes; the commit's read-set check catches
    that, so the cache never makes a command act on stale state, at worst retry it. State
    that is only handed to the writer is kept apart (`in_flight`), for the command holding
    the turn, which declares that it depends on it.
    """

    def __init__(self, maxsize: int = COMMAND_CACHE_SIZE, live: int = LIVE_ENTRIES) -> None:
        # Least recently used first in each tier; an aggregate is in one tier at most.
        self._entries: OrderedDict[UUID, Cached] = OrderedDict()
        self._cold: OrderedDict[int, _Cold] = OrderedDict()
        self._handed: dict[UUID, Handed] = {}
        self._lock = threading.Lock()
        self._maxsize = maxsize
        self._live = min(live, maxsize)
        # Aggregates being written by a command of this process: a lock and its users.
        self._turns: dict[UUID, tuple[threading.Lock, int]] = {}

    @contextmanager
    def writing(self, aggregate_ids: frozenset[UUID]) -> Iterator[Turn]:
        """Holds the turn to write these aggregates until released or left."""
        ordered = sorted(aggregate_ids)  # one order for everyone: no deadlock
        with self._lock:
            for key in ordered:
                lock, users = self._turns.get(key, (threading.Lock(), 0))
                self._turns[key] = (lock, users + 1)
            locks = [self._turns[key][0] for key in ordered]
        held: list[threading.Lock] = []
        turn = Turn(held, aggregate_ids, waited=False)
        try:
            for lock in locks:
                if not lock.acquire(blocking=False):
                    turn.waited = True
                    if not lock.acquire(timeout=TURN_TIMEOUT_SECONDS):
                        raise VersionConflict(
                            "another command kept this data busy for too long",
                            reason="CONCURRENT_MODIFICATION",
                        )
                held.append(lock)
            yield turn
        finally:
            turn.release()
            with self._lock:
                for key in ordered:
                    lock, users = self._turns[key]
                    if users > 1:
                        self._turns[key] = (lock, users - 1)
                    else:
                        del self._turns[key]

    def busy(self, aggregate_ids: Iterable[UUID]) -> bool:
        """Whether another command of this process holds or awaits the turn to write one
        of these, or has handed one to the writer and not heard back yet."""
        with self._lock:
            return any(a in self._turns or a in self._handed for a in aggregate_ids)

    def handed(self, turn: Turn, aggregates: Iterable[Any], commit: Pending) -> None:
        """The writer has these aggregates' new state: the turn passes to the next command."""
        with self._lock:
            for aggregate in aggregates:
                self._handed[aggregate.id] = Handed(aggregate, aggregate.version, commit)
        turn.release()

    def in_flight(self, aggregate_id: UUID) -> Handed | None:
        """The state the last command handed to the writer left, unless its commit failed."""
        with self._lock:
            found = self._handed.get(aggregate_id)
        return None if found is None or found.commit.failed else found

    def settled(self, aggregate_ids: Iterable[UUID], commit: Pending) -> None:
        """The writer answered `commit`: its handed state is committed (and `put`) or gone."""
        with self._lock:
            for aggregate_id in aggregate_ids:
                found = self._handed.get(aggregate_id)
                if found is not None and found.commit is commit:
                    del self._handed[aggregate_id]

    def get(self, aggregate_id: UUID) -> Cached | None:
        with self._lock:
            found = self._entries.get(aggregate_id)
            if found is not None:
                self._entries.move_to_end(aggregate_id)
                return found
            cold = self._cold.pop(aggregate_id.int, None)
            if cold is None:
                return None
            found = _warmed(cold)  # live again: it is in use
            self._keep_live(aggregate_id, found)
            return found

    def put(self, aggregate_id: UUID, aggregate: Any) -> Cached:
        """Keeps `aggregate` (None: absent) unless a newer version is already kept."""
        entry = Cached(aggregate, 0 if aggregate is None else aggregate.version)
        with self._lock:
            current = self._entries.get(aggregate_id)
            cold = self._cold.get(aggregate_id.int)
            newest = current.version if current is not None else cold[1] if cold else -1
            if newest > entry.version:
                return entry
            self._cold.pop(aggregate_id.int, None)
            self._keep_live(aggregate_id, entry)
        return entry

    def _keep_live(self, aggregate_id: UUID, entry: Cached) -> None:
        """(Holding the lock.) The live tier's least recently used go cold, the coldest go."""
        self._entries[aggregate_id] = entry
        self._entries.move_to_end(aggregate_id)
        while len(self._entries) > self._live:
            key, cooled = self._entries.popitem(last=False)
            self._cold[key.int] = _cooled(cooled)
        while self._cold and len(self._entries) + len(self._cold) > self._maxsize:
            self._cold.popitem(last=False)

    def evict(self, aggregate_ids: Iterable[UUID]) -> None:
        with self._lock:
            for aggregate_id in aggregate_ids:
                self._entries.pop(aggregate_id, None)
                self._cold.pop(aggregate_id.int, None)
