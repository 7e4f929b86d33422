"""Reaching the database: its URL (or the embedded one), the library's environment, the
bounds on every connection, and the lock under which tables are created.

Our `POSLEDGER_*` settings are translated into the `eventsourcing` library's environment in
this one place (`eventsourcing_env`). With no `POSLEDGER_DATABASE_URL`, a private PostgreSQL
is started from the `pgserver` wheel in `POSLEDGER_DATA_DIR`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.sql import SQL, Identifier

from ledger.store.settings import Settings

log = structlog.get_logger("ledger.store")

# Any constant works; it only has to be the same for every server of this product.
SCHEMA_LOCK_ID = 0x504F534C  # "POSL"


_embedded_servers: dict[Path, Any] = {}


def embedded_database_url(data_dir: Path) -> str:
    """Starts (or joins) the private PostgreSQL in `data_dir` and returns its URL."""
    try:
        import pgserver
    except ImportError as e:
        raise SystemExit(
            "No POSLEDGER_DATABASE_URL is set and the embedded database is not installed: "
            "install with `pip install -e '.[embedded]'` or point POSLEDGER_DATABASE_URL "
            "at a PostgreSQL server."
        ) from e
    data_dir = data_dir.expanduser().resolve()
    if data_dir not in _embedded_servers:
        data_dir.mkdir(parents=True, exist_ok=True)
        log.info("embedded_database_starting", data_dir=str(data_dir))
        _embedded_servers[data_dir] = pgserver.get_server(data_dir, cleanup_mode="stop")
    return str(_embedded_servers[data_dir].get_uri())


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.data_dir)


def eventsourcing_env(url: str, settings: Settings) -> dict[str, str]:
    """The `eventsourcing` library's environment for our database."""
    params = conninfo_to_dict(url)
    return {
        # Never "y": the library's insert function skips the table lock that keeps
        # notification ids in commit order, and a tailing reader could then miss events.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": "ledger.store.recorder:LedgerRecorder",
        "POSTGRES_DBNAME": str(params.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "localhost"),
        "POSTGRES_PORT": str(params.get("port") or 5432),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_SCHEMA": settings.schema,
        "POSTGRES_POOL_SIZE": str(settings.pool_size),
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_LOCK_TIMEOUT": str(settings.lock_timeout_seconds),
        # The library passes this one as the pool's wait; `bound_pool` sets the real bounds.
        "POSTGRES_CONNECT_TIMEOUT": str(settings.connect_timeout_seconds),
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(
            settings.idle_in_transaction_timeout_seconds
        ),
        # No pre-ping: it doubles the round trips of every read, and the library already
        # retries a statement that fails on a dropped connection.
        "POSTGRES_PRE_PING": "n",
        # Recently used aggregates stay in memory; a load then reads only the events
        # recorded since (fast-forward), so it is never stale, and a copy is handed out.
        "AGGREGATE_CACHE_MAXSIZE": "10000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "y",
        # Tables are created once, under an advisory lock (see `schema_lock`).
        "CREATE_TABLE": "n",
    }


def connection_bounds(settings: Settings) -> dict[str, Any]:
    """libpq parameters that bound connecting and notice a dead peer."""
    return {
        "connect_timeout": settings.connect_timeout_seconds,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 3,
        "keepalives_count": 3,
        "tcp_user_timeout": 10_000,  # ms: unacknowledged data for this long ends the session
    }


def bounded_url(url: str, settings: Settings) -> str:
    """`url` with `connection_bounds`, for the connections opened outside the pool."""
    return make_conninfo(url, **connection_bounds(settings))


@contextmanager
def schema_lock(url: str, schema: str) -> Iterator[None]:
    """Serialises table creation across servers starting at the same time.

    `CREATE TABLE IF NOT EXISTS` is not safe against a concurrent twin (it can fail on the
    catalog's unique index), so every server creates tables while holding this lock.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_ID,))
        try:
            conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(schema)))
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_ID,))


# How often a wait for notifications looks at its stop event: a worker asked to stop (a test,
# a shutdown) need not sit out the rest of a timeout meant for idle polling.
STOP_CHECK_SECONDS = 0.05


def wait_for_notify(
    listener: psycopg.Connection[Any], stop: threading.Event, timeout: float
) -> bool:
    """Waits on a LISTENing connection for one notification, `timeout` at most, or until
    `stop` is set; True if one arrived."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        for _ in listener.notifies(timeout=min(left, STOP_CHECK_SECONDS), stop_after=1):
            return True
    return False
