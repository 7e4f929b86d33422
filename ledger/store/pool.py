"""The connection pool behind a gate: every wait bounded, closed at once during an outage,
renewed when the database answers again (ledger/monitor.py decides when)."""

from __future__ import annotations

import threading
from typing import Any

from eventsourcing.postgres import ConnectionPool, PostgresDatastore
from psycopg import Connection
from psycopg.rows import DictRow

from ledger.store.database import connection_bounds
from ledger.store.settings import Settings


class StoreUnavailable(Exception):
    """The store is known to be unreachable: a call fails at once instead of waiting for it."""


class StoreGate:
    """Open while the database answers. The server's store monitor closes it when the
    database stops answering, so new calls fail at once (and are not retried by the
    library for seconds) until it answers again."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()


class LedgerPool(ConnectionPool[Connection[DictRow]]):
    """The library's pool behind our gate, remembering how it was made so that it can be
    renewed after an outage."""

    def __init__(self, *, gate: StoreGate, **kwargs: Any) -> None:
        self.gate = gate
        self._made_with = kwargs
        super().__init__(**kwargs)

    def getconn(self, timeout: float | None = None) -> Connection[DictRow]:
        if not self.gate.is_open:
            raise StoreUnavailable("the event store is unavailable")
        return super().getconn(timeout)

    def renewed(self) -> LedgerPool:
        return LedgerPool(gate=self.gate, **self._made_with)


def bound_pool(datastore: PostgresDatastore, settings: Settings) -> StoreGate:
    """Replaces the library's pool with one where every wait is bounded: connecting,
    waiting for a pooled connection, and each statement."""
    old = datastore.pool
    assert isinstance(old.kwargs, dict)
    gate = StoreGate()
    kwargs = {
        **old.kwargs,
        **connection_bounds(settings),
        "options": f"-c statement_timeout={round(settings.statement_timeout_seconds * 1000)}",
    }
    datastore.pool = LedgerPool(
        gate=gate,
        connection_class=old.connection_class,
        kwargs=kwargs,
        min_size=old.min_size,
        max_size=old.max_size,
        open=False,
        configure=datastore.after_connect_func(),
        timeout=settings.pool_timeout_seconds,
        max_waiting=old.max_waiting,
        max_lifetime=old.max_lifetime,
        get_password_func=old.get_password_func,
    )
    # The recorder has already used the library's pool (to register its types): closed here,
    # or its workers live on and the collector later finalises it on one of its own threads.
    old.close()
    return gate


def renew_pool(datastore: PostgresDatastore, timeout: float) -> None:
    """Swaps in a fresh, connected pool (raises if it cannot connect within `timeout`).

    After an outage the old pool holds dead connections and retries its lost ones with a
    backoff of up to seconds; a fresh one is ready as soon as the database is.
    """
    old = datastore.pool
    assert isinstance(old, LedgerPool)
    new = old.renewed()
    try:
        new.open(wait=True, timeout=timeout)
    except Exception:
        new.close(timeout=0)
        raise
    datastore.pool = new
    # Connections still lent out of the old pool are closed when they come back.
    old.close(timeout=0)
