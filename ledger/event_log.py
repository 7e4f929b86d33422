"""The event log as its readers see it: what views, deliveries and imports need of the ledger.

Readers depend on this, not on the application: the committed head, pages of events in
commit order, the stored events of given aggregates, decoding, and the database the log
lives in (its schema for their own tables, its URL for the sessions they hold themselves).
`Ledger.event_log` provides it. The "events of these aggregates" query lives here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, Notification, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.sql import SQL, Composed, Identifier


@dataclass(frozen=True)
class EventLog:
    recorder: PostgresApplicationRecorder
    mapper: Mapper[UUID]
    url: str  # for sessions a reader holds itself (advisory locks, LISTEN), not pooled

    @property
    def datastore(self) -> PostgresDatastore:
        """The pool and schema the log lives in; readers keep their tables next to it."""
        return self.recorder.datastore

    @property
    def schema(self) -> str:
        return self.recorder.datastore.schema

    @property
    def events_table(self) -> Identifier:
        return Identifier(self.schema, self.recorder.events_table_name)

    @property
    def channel(self) -> str:
        """The channel writers NOTIFY after each commit."""
        return self.recorder.channel_name

    def head(self) -> int:
        """The highest committed position: everything at or below it is final."""
        return self.recorder.max_notification_id() or 0

    def notifications(
        self, start: int, limit: int, stop: int, topics: Sequence[str]
    ) -> list[Notification]:
        """Up to `limit` events with `start <= position <= stop` of `topics` (all if none)."""
        found: list[Notification] = self.recorder.select_notifications(
            start=start, limit=limit, stop=stop, topics=list(topics)
        )
        return found

    def events_of(self, aggregate_ids: Sequence[UUID], *, topic: str = "") -> list[StoredEvent]:
        """Every stored event of these aggregates (of one topic, if given), in one query,
        ordered by aggregate id and version."""
        if not aggregate_ids:
            return []
        statement: Composed = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {}"
            " WHERE originator_id = ANY(%s)"
        ).format(self.events_table)
        params: list[Any] = [list(aggregate_ids)]
        if topic:
            statement += SQL(" AND topic = %s")
            params.append(topic)
        statement += SQL(" ORDER BY originator_id, originator_version")
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params)
            return [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]

    def decode(self, stored: StoredEvent) -> Any:
        """The domain event a stored event (or notification) holds."""
        return self.mapper.to_domain_event(stored)
