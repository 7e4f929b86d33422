"""Where the ledger keeps its events: settings, the embedded database, and our recorder.

Our `POSLEDGER_*` settings are translated into the `eventsourcing` library's environment in
this one place (`eventsourcing_env`). With no `POSLEDGER_DATABASE_URL`, a private PostgreSQL
is started from the `pgserver` wheel in `POSLEDGER_DATA_DIR`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import structlog
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import ConnectionPool, PostgresApplicationRecorder, PostgresDatastore
from psycopg import Connection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Identifier

from ledger.audit import store as audit_store
from ledger.group_commit import (
    CommandRecord,
    CommitRequest,
    DuplicateCommand,
    EventMetadata,
    GroupCommitter,
    GroupStats,
    commit_call_sql,
    commit_function_sql,
)
from ledger.limits import Limits

log = structlog.get_logger(__name__)

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "posledger"
# Any constant works; it only has to be the same for every server of this product.
SCHEMA_LOCK_ID = 0x504F534C  # "POSL"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NATS_STREAM = re.compile(r"[A-Za-z0-9_-]{1,64}")
NATS_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,3}")
# A schema name we can use unquoted everywhere, short enough that the view generations
# beside it (`<schema>__<view>_<generation>`) stay within PostgreSQL's 63 characters.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")


class SettingsError(Exception):
    """Bad settings, one line per bad value (`posledger` prints them and exits 2)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class _Number:
    """How one numeric setting is read: its variable, bounds and whether it is whole."""

    variable: str
    minimum: float
    maximum: float
    whole: bool = False
    unit: str = ""

    def parse(self, raw: str, problems: list[str]) -> float | None:
        kind = "a whole number" if self.whole else "a number"
        bounds = f"{self.minimum:g} to {self.maximum:g}{self.unit}"
        try:
            value = int(raw) if self.whole else float(raw)
        except ValueError:
            value = None
        if value is None or not self.minimum <= value <= self.maximum:
            problems.append(f"{self.variable}={raw!r}: must be {kind} from {bounds}")
            return None
        return value


# Field of `Settings` → how its environment variable is read.
_NUMBERS = {
    "pool_size": _Number("POSLEDGER_DB_POOL_SIZE", 1, 1000, whole=True),
    # The library sets it as whole seconds, and 0 would mean "wait for ever".
    "lock_timeout_seconds": _Number("POSLEDGER_DB_LOCK_TIMEOUT", 1, 600, whole=True, unit=" s"),
    "connect_timeout_seconds": _Number("POSLEDGER_DB_CONNECT_TIMEOUT", 2, 600, True, " s"),
    "pool_timeout_seconds": _Number("POSLEDGER_DB_POOL_TIMEOUT", 0.05, 600, unit=" s"),
    "statement_timeout_seconds": _Number("POSLEDGER_DB_STATEMENT_TIMEOUT", 0.1, 3600, unit=" s"),
    "idle_in_transaction_timeout_seconds": _Number(
        "POSLEDGER_DB_IDLE_IN_TRANSACTION_TIMEOUT", 1, 3600, whole=True, unit=" s"
    ),
    # Deliveries (ledger/deliveries): callbacks and webhooks.
    "delivery_timeout_seconds": _Number("POSLEDGER_DELIVERY_TIMEOUT", 0.1, 60, unit=" s"),
    "delivery_retry_for_seconds": _Number("POSLEDGER_DELIVERY_RETRY_FOR", 1, 30 * 86400, unit=" s"),
    "delivery_backoff_first_seconds": _Number(
        "POSLEDGER_DELIVERY_BACKOFF_FIRST", 0.01, 3600, unit=" s"
    ),
    "delivery_backoff_max_seconds": _Number(
        "POSLEDGER_DELIVERY_BACKOFF_MAX", 0.01, 86400, unit=" s"
    ),
    "delivery_concurrency": _Number("POSLEDGER_DELIVERY_CONCURRENCY", 1, 256, whole=True),
    # Payment deadlines (RequestPayment.expires_after).
    "payment_expires_after_seconds": _Number(
        "POSLEDGER_PAYMENT_EXPIRES_AFTER", 1, 30 * 86400, unit=" s"
    ),
    "payment_max_expires_after_seconds": _Number(
        "POSLEDGER_PAYMENT_MAX_EXPIRES_AFTER", 1, 30 * 86400, unit=" s"
    ),
}
# Field of `Limits` → its variable. Each capped call holds a thread: the server's pool is
# the sum of the server-wide caps plus its unary workers, so the caps bound its threads.
_LIMITS = {
    "streams": _Number("POSLEDGER_MAX_STREAMS", 1, 10000, whole=True),
    "streams_per_merchant": _Number("POSLEDGER_MAX_STREAMS_PER_MERCHANT", 1, 10000, True),
    "imports": _Number("POSLEDGER_MAX_IMPORTS", 1, 1000, whole=True),
    "imports_per_merchant": _Number("POSLEDGER_MAX_IMPORTS_PER_MERCHANT", 1, 1000, True),
    "waits": _Number("POSLEDGER_MAX_WAITS", 1, 1000, whole=True),
    "waits_per_merchant": _Number("POSLEDGER_MAX_WAITS_PER_MERCHANT", 1, 1000, True),
    "import_idle_seconds": _Number("POSLEDGER_IMPORT_IDLE_TIMEOUT", 1, 3600, unit=" s"),
}


@dataclass(frozen=True)
class Settings:
    """Database settings and the server's limits, read and checked from the environment by
    `Settings.from_env()`."""

    database_url: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    schema: str = "public"
    pool_size: int = 10
    lock_timeout_seconds: int = 5
    # libpq's connect timeout (it counts whole seconds, at least 2).
    connect_timeout_seconds: int = 2
    # How long a call waits for a pooled connection before the store counts as unavailable.
    pool_timeout_seconds: float = 1.0
    # Any one statement on a pooled connection (reads, table creation, views).
    statement_timeout_seconds: float = 15.0
    # A session left idle inside a transaction is ended by the server after this long.
    idle_in_transaction_timeout_seconds: int = 5
    # One delivery attempt: connect, send, and read the (capped) response.
    delivery_timeout_seconds: float = 10.0
    # A delivery is retried until an attempt at least this long after it was made fails.
    delivery_retry_for_seconds: float = 24 * 3600.0
    # Backoff between attempts: doubling from the first, capped, with jitter.
    delivery_backoff_first_seconds: float = 5.0
    delivery_backoff_max_seconds: float = 3600.0
    delivery_concurrency: int = 8
    # A payment's deadline when its request gives none, and the longest a request may give.
    payment_expires_after_seconds: float = 15 * 60.0
    payment_max_expires_after_seconds: float = 24 * 3600.0
    # Networks deliveries may reach although private, loopback or link-local (none by default:
    # a callback URL must not become a way into the operator's own network).
    delivery_allowed_networks: tuple[IPNetwork, ...] = ()
    # The relay of changes to NATS JetStream: off unless a URL is given.
    nats_url: str = ""
    nats_stream: str = "POSLEDGER"
    nats_subject_prefix: str = "posledger"
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings in `environ`; raises SettingsError naming every bad value."""
        problems: list[str] = []
        values: dict[str, Any] = {}
        url = environ.get("POSLEDGER_DATABASE_URL") or None
        if url is not None:
            try:
                conninfo_to_dict(url)
            except psycopg.ProgrammingError as e:
                problems.append(f"POSLEDGER_DATABASE_URL: not a PostgreSQL URL ({e})")
        schema = environ.get("POSLEDGER_DB_SCHEMA") or "public"
        if not SCHEMA_NAME.fullmatch(schema):
            problems.append(
                f"POSLEDGER_DB_SCHEMA={schema!r}: must be 1 to 40 lower-case letters, digits "
                "or underscores, not starting with a digit"
            )
        for name, number in _NUMBERS.items():
            raw = environ.get(number.variable, "").strip()
            if raw:
                values[name] = number.parse(raw, problems)
        networks = environ.get("POSLEDGER_DELIVERY_ALLOWED_NETWORKS", "").strip()
        if networks:
            values["delivery_allowed_networks"] = _networks(networks, problems)
        nats_url = environ.get("POSLEDGER_NATS_URL", "").strip()
        if nats_url:
            if not nats_url.startswith(("nats://", "tls://")):
                problems.append(f"POSLEDGER_NATS_URL={nats_url!r}: must start nats:// or tls://")
            values["nats_url"] = nats_url
        for name, variable, pattern in (
            ("nats_stream", "POSLEDGER_NATS_STREAM", NATS_STREAM),
            ("nats_subject_prefix", "POSLEDGER_NATS_SUBJECT_PREFIX", NATS_PREFIX),
        ):
            raw = environ.get(variable, "").strip()
            if raw:
                if not pattern.fullmatch(raw):
                    problems.append(f"{variable}={raw!r}: letters, digits, '_' or '-' only")
                values[name] = raw
        first = values.get("delivery_backoff_first_seconds") or cls.delivery_backoff_first_seconds
        most = values.get("delivery_backoff_max_seconds") or cls.delivery_backoff_max_seconds
        if first > most:
            problems.append(
                "POSLEDGER_DELIVERY_BACKOFF_FIRST must not exceed POSLEDGER_DELIVERY_BACKOFF_MAX"
            )
        default = values.get("payment_expires_after_seconds") or cls.payment_expires_after_seconds
        longest = (
            values.get("payment_max_expires_after_seconds") or cls.payment_max_expires_after_seconds
        )
        if default > longest:
            problems.append(
                "POSLEDGER_PAYMENT_EXPIRES_AFTER must not exceed "
                "POSLEDGER_PAYMENT_MAX_EXPIRES_AFTER"
            )
        limits: dict[str, Any] = {}
        for name, number in _LIMITS.items():
            raw = environ.get(number.variable, "").strip()
            if raw:
                limits[name] = number.parse(raw, problems)
        _check_caps(Limits(**{k: v for k, v in limits.items() if v is not None}), problems)
        if problems:
            raise SettingsError(problems)
        return cls(
            database_url=url,
            data_dir=Path(environ.get("POSLEDGER_DATA_DIR") or DEFAULT_DATA_DIR),
            schema=schema,
            limits=Limits(**limits),
            **values,
        )


def _networks(raw: str, problems: list[str]) -> tuple[IPNetwork, ...]:
    result = []
    for part in raw.split(","):
        try:
            result.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            problems.append(
                f"POSLEDGER_DELIVERY_ALLOWED_NETWORKS: {part.strip()!r} is not a network "
                "(write e.g. 127.0.0.0/8 or 10.1.2.3/32, comma-separated)"
            )
    return tuple(result)


def _check_caps(limits: Limits, problems: list[str]) -> None:
    """A cap per merchant above the server's would never apply: say so."""
    for kind in ("streams", "imports", "waits"):
        per_merchant = getattr(limits, f"{kind}_per_merchant")
        total = getattr(limits, kind)
        if per_merchant > total:
            problems.append(
                f"{_LIMITS[kind + '_per_merchant'].variable}={per_merchant}: must not exceed "
                f"{_LIMITS[kind].variable} ({total})"
            )


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
        "APPLICATION_RECORDER_TOPIC": f"{__name__}:LedgerRecorder",
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


def bound_pool(datastore: PostgresDatastore, settings: Settings) -> StoreGate:
    """Replaces the library's (not yet opened) pool with one where every wait is bounded:
    connecting, waiting for a pooled connection, and each statement."""
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


METADATA_TABLE = "event_metadata"
COMMANDS_TABLE = "processed_commands"
COMMANDS_PKEY = f"{COMMANDS_TABLE}_pkey"


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's recorder, plus processed commands, event metadata and group commit.

    `insert_events` does not write itself: it hands the command's events, its record, its
    metadata and its read set to this recorder's `GroupCommitter` (ledger/group_commit.py),
    which commits them together with other commands' in one transaction. A command's record
    and its events still commit together or not at all; a duplicate request raises
    `DuplicateCommand`, a version clash or a stale read `CommitConflict`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = self.datastore.schema
        table = Identifier(schema, COMMANDS_TABLE)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {table} ("
                " merchant_id text NOT NULL,"
                " request_id text NOT NULL,"
                " command text NOT NULL,"
                " fingerprint text NOT NULL,"
                " aggregate_id uuid NOT NULL,"
                " aggregate_version bigint NOT NULL,"
                " result jsonb NOT NULL,"
                " recorded_at timestamptz NOT NULL DEFAULT now(),"
                " CONSTRAINT {pkey} PRIMARY KEY (merchant_id, request_id))"
            ).format(table=table, pkey=Identifier(COMMANDS_PKEY))
        )
        self.select_command_statement = SQL(
            "SELECT * FROM {table} WHERE merchant_id = %s AND request_id = %s"
        ).format(table=table)
        metadata = Identifier(schema, METADATA_TABLE)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {table} ("
                " originator_id uuid NOT NULL,"
                " originator_version bigint NOT NULL,"
                " merchant_id text NOT NULL,"
                " app_id text NOT NULL,"
                " key_id text NOT NULL,"
                " location_id text NOT NULL,"
                " device_id text NOT NULL,"
                " request_id text NOT NULL,"
                " PRIMARY KEY (originator_id, originator_version))"
            ).format(table=metadata)
        )
        self.select_metadata_statement = SQL(
            "SELECT * FROM {table} WHERE originator_id = %s ORDER BY originator_version"
        ).format(table=metadata)
        # The audit hash chain, extended by every group commit (ledger/audit/store.py).
        self.sql_create_statements.extend(
            audit_store.create_statements(schema, self.events_table_name)
        )
        # Replaced on every start, so a server of a newer version brings its own.
        self.sql_create_statements.append(
            commit_function_sql(
                schema, self.events_table_name, self.channel_name, audit_store.chain_sql(schema)
            )
        )
        self._committer: GroupCommitter | None = None
        self._committer_lock = threading.Lock()

    @property
    def committer(self) -> GroupCommitter:
        """This recorder's writer, started on first use."""
        with self._committer_lock:
            if self._committer is None:
                self._committer = GroupCommitter(
                    self._connect_writer,
                    commit_call_sql(self.datastore.schema),
                    lock_timeout_seconds=self.datastore.lock_timeout,
                )
            return self._committer

    def writer_stats(self) -> GroupStats | None:
        """What this process's writer has done so far (None before its first command)."""
        committer = self._committer
        return committer.stats if committer is not None else None

    def _connect_writer(self) -> psycopg.Connection[Any]:
        # The pool's parameters (with their connect and keepalive bounds), but a connection
        # of its own: the writer never waits for a pooled one.
        pool_kwargs = self.datastore.pool.kwargs
        assert isinstance(pool_kwargs, dict)
        params = {"connect_timeout": 5, **pool_kwargs, "row_factory": tuple_row}
        conn = psycopg.connect(autocommit=True, **params)
        # A bound on the one call a group makes: the lock wait plus the inserts.
        timeout_ms = (self.datastore.lock_timeout + 10) * 1000
        conn.execute(SQL("SET statement_timeout = {}").format(timeout_ms))
        return conn

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        command_record: CommandRecord | None = None,
        event_metadata: EventMetadata | None = None,
        reads: Sequence[tuple[UUID, int]] = (),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        if not stored_events and command_record is None:
            return []
        pool = self.datastore.pool
        if isinstance(pool, LedgerPool) and not pool.gate.is_open:
            raise StoreUnavailable("the event store is not answering")
        request = CommitRequest(
            events=stored_events,
            command_record=command_record,
            metadata=event_metadata,
            reads=reads,
        )
        return self.committer.commit(request)

    def close_writer(self) -> None:
        with self._committer_lock:
            committer, self._committer = self._committer, None
        if committer is not None:
            committer.close()

    def select_event_metadata(self, originator_id: UUID) -> dict[int, dict[str, Any]]:
        """The metadata of an aggregate's events, by version."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_metadata_statement, (originator_id,))
            return {row["originator_version"]: dict(row) for row in curs.fetchall()}

    def select_command_record(self, merchant_id: str, request_id: str) -> CommandRecord | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_command_statement, (merchant_id, request_id), prepare=True)
            row = curs.fetchone()
        if row is None:
            return None
        return CommandRecord(
            merchant_id=row["merchant_id"],
            request_id=row["request_id"],
            command=row["command"],
            fingerprint=row["fingerprint"],
            aggregate_id=row["aggregate_id"],
            aggregate_version=row["aggregate_version"],
            result=dict(row["result"]),
        )


def select_position(recorder: PostgresApplicationRecorder, versions: list[tuple[UUID, int]]) -> int:
    """The log position (notification id) of the latest of these aggregate versions."""
    statement = SQL(
        "SELECT max(notification_id) AS position FROM {table}"
        " WHERE (originator_id, originator_version) IN"
        " (SELECT * FROM unnest(%s::uuid[], %s::bigint[]))"
    ).format(table=Identifier(recorder.datastore.schema, recorder.events_table_name))
    ids = [aggregate_id for aggregate_id, _ in versions]
    numbers = [version for _, version in versions]
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, (ids, numbers))
        row = curs.fetchone()
    return int(row["position"] or 0) if row else 0


def is_duplicate_command(error: BaseException) -> bool:
    """True when a commit failed because the request id was already recorded."""
    return isinstance(error, DuplicateCommand)
