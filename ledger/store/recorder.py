"""Our recorder: the library's, plus processed commands, event metadata and group commit;
and the few reads of the events table that the library has no call for."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger.audit import schema as audit_schema
from ledger.commit_function import commit_call_sql, commit_function_sql
from ledger.group_commit import (
    CommandRecord,
    CommitRequest,
    DuplicateCommand,
    EventMetadata,
    GroupCommitter,
    GroupStats,
    Pending,
)
from ledger.store.pool import LedgerPool, StoreUnavailable

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
        # The audit hash chain, extended by every group commit (ledger/audit/schema.py).
        self.sql_create_statements.extend(
            audit_schema.create_statements(schema, self.events_table_name)
        )
        # Replaced on every start, so a server of a newer version brings its own.
        self.sql_create_statements.append(
            commit_function_sql(
                schema, self.events_table_name, self.channel_name, audit_schema.chain_sql(schema)
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
        after: Sequence[tuple[UUID, int, Pending]] = (),
        handed: Callable[[Pending], None] | None = None,
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
            after=after,
        )
        return self.committer.commit(request, handed)

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
