"""Reading the log for auditors: events with their metadata, per aggregate or per merchant.

SQL for the audit reads lives here. Events join their `event_metadata` row (written in the
same transaction); writers commit positions in order, so any page read here is a prefix of
the final log and a follower never misses an event.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Composed, Identifier

from ledger.application import Ledger


@dataclass(frozen=True)
class AuditRecord:
    position: int
    aggregate_id: UUID
    version: int
    type: str
    recorded_at: datetime
    metadata: dict[str, str]
    payload: dict[str, Any]
    # What the audit chain hashed (export only): see `hashed_json`.
    hashed: dict[str, Any] = field(default_factory=dict)

    def payload_json(self) -> str:
        return json.dumps(self.payload, sort_keys=True, default=str, separators=(",", ":"))

    def to_json_line(self) -> str:
        """The export format: one JSON object per event, keys sorted."""
        return json.dumps(
            {
                "position": self.position,
                "aggregate_id": str(self.aggregate_id),
                "version": self.version,
                "type": self.type,
                "recorded_at": self.recorded_at.isoformat(),
                "metadata": self.metadata,
                "payload": self.payload,
                **({"hashed": self.hashed} if self.hashed else {}),
            },
            sort_keys=True,
            default=str,
            separators=(",", ":"),
        )


SELECT = """
    SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state,
           m.merchant_id, m.app_id, m.key_id, m.location_id, m.device_id, m.request_id
    FROM {events} e LEFT JOIN {metadata} m USING (originator_id, originator_version)"""
HISTORY = (
    SELECT
    + """
    WHERE e.originator_id = %s AND e.originator_version > %s AND e.originator_version <= %s
    ORDER BY e.originator_version LIMIT %s"""
)
LAST_VERSION = 2**63 - 1  # no bound on the versions read
HISTORY_PAGE = 1000  # events per query when reading a whole history
# The export: each event with what the chain hashed (the stored bytes, the metadata row,
# the command record as stored) and its stored digest.
RANGE = """
    SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state,
           m.merchant_id, m.app_id, m.key_id, m.location_id, m.device_id, m.request_id,
           m.originator_id AS m_present, m.command_recorded,
           c.merchant_id AS c_present, c.command, c.fingerprint,
           c.aggregate_id AS c_aggregate_id, c.aggregate_version AS c_aggregate_version,
           c.result::text AS c_result, ch.digest
    FROM {events} e LEFT JOIN {metadata} m USING (originator_id, originator_version)
    LEFT JOIN {commands} c ON m.command_recorded
        AND c.merchant_id = m.merchant_id AND c.request_id = m.request_id
    LEFT JOIN {chain} ch ON ch.position = e.notification_id
    WHERE e.notification_id >= %s AND e.notification_id <= %s
      AND (%s::text IS NULL OR m.merchant_id = %s)
    ORDER BY e.notification_id LIMIT %s"""
FEED = (
    SELECT
    + """
    WHERE m.merchant_id = %s AND e.notification_id >= %s
      AND (cardinality(%s::text[]) = 0 OR e.topic = ANY(%s::text[]))
    ORDER BY e.notification_id LIMIT %s"""
)

# Which merchants have events after a position, and the last of each: what the live feeds
# wait on. Writers commit positions in order, so a scan from the last one seen misses none.
MERCHANT_HEADS = """
    SELECT m.merchant_id, max(e.notification_id) AS position
    FROM {events} e JOIN {metadata} m USING (originator_id, originator_version)
    WHERE e.notification_id > %s
    GROUP BY m.merchant_id"""
HEAD = "SELECT coalesce(max(notification_id), 0) AS position FROM {events}"


@dataclass(frozen=True)
class Heads:
    """How far the log has been scanned, and the last event of each merchant seen in it
    since the scans began (earlier events are not listed)."""

    position: int
    merchants: dict[str, int] = field(default_factory=dict)

    def has_after(self, merchant_id: str, position: int) -> bool:
        """Whether the merchant has an event at `position` or later."""
        return self.merchants.get(merchant_id, 0) >= position


class AuditLog:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        recorder = ledger.ledger_recorder
        self.datastore = recorder.datastore
        self.tables = {
            "events": Identifier(self.datastore.schema, recorder.events_table_name),
            "metadata": Identifier(self.datastore.schema, "event_metadata"),
            "commands": Identifier(self.datastore.schema, "processed_commands"),
            "chain": Identifier(self.datastore.schema, "event_chain"),
        }

    def _sql(self, statement: str) -> Composed:
        return SQL(statement).format(**self.tables)

    def history(
        self, aggregate_id: UUID, after_version: int, limit: int, through: int = LAST_VERSION
    ) -> list[AuditRecord]:
        """Events of one aggregate after a version (up to `through`), oldest first
        (tenancy checked by caller)."""
        with self.datastore.transaction() as curs:
            curs.execute(self._sql(HISTORY), (aggregate_id, after_version, through, limit))
            return [self._record(row) for row in curs.fetchall()]

    def timeline(
        self, aggregate_id: UUID, through: int = LAST_VERSION, page: int = 0
    ) -> Iterator[AuditRecord]:
        """Every event of one aggregate up to version `through`, oldest first, read in
        pages (of `HISTORY_PAGE` unless given): memory stays flat however long the
        history (tenancy checked by caller)."""
        page = page or HISTORY_PAGE
        after = 0
        while True:
            records = self.history(aggregate_id, after, page, through)
            yield from records
            if len(records) < page:
                return
            after = records[-1].version

    def feed(
        self, merchant_id: str, from_position: int, types: list[str], limit: int
    ) -> list[AuditRecord]:
        """The merchant's events from a position (inclusive), in log order."""
        with self.datastore.transaction() as curs:
            curs.execute(self._sql(FEED), (merchant_id, from_position, types, types, limit))
            return [self._record(row) for row in curs.fetchall()]

    def heads(self, previous: Heads | None) -> Heads:
        """`previous` brought up to the head of the log (a first call only finds the head)."""
        with self.datastore.transaction() as curs:
            if previous is None:
                curs.execute(self._sql(HEAD))
                row = curs.fetchone()
                return Heads(row["position"] if row else 0)
            curs.execute(self._sql(MERCHANT_HEADS), (previous.position,))
            rows = curs.fetchall()
        if not rows:
            return previous
        merchants = dict(previous.merchants)
        merchants.update((r["merchant_id"], r["position"]) for r in rows)
        return Heads(max(r["position"] for r in rows), merchants)

    def export(
        self,
        from_position: int,
        to_position: int,
        merchant_id: str | None,
        page: int = 5000,
        v1_through: int = 0,
    ) -> Iterator[AuditRecord]:
        """Every event in a range of positions (inclusive), page by page: flat memory;
        each with what the chain hashed (version 1 up to `v1_through`)."""
        position = from_position
        while position <= to_position:
            with self.datastore.transaction() as curs:
                curs.execute(
                    self._sql(RANGE), (position, to_position, merchant_id, merchant_id, page)
                )
                rows = curs.fetchall()
            for row in rows:
                yield self._record(row, hashed=_hashed(row, v1_through))
            if len(rows) < page:
                return
            position = rows[-1]["notification_id"] + 1

    def _record(self, row: dict[str, Any], hashed: dict[str, Any] | None = None) -> AuditRecord:
        payload = dict(self.ledger.mapper.transcoder.decode(bytes(row["state"])))
        recorded_at = payload.pop("timestamp")
        return AuditRecord(
            position=row["notification_id"],
            aggregate_id=row["originator_id"],
            version=row["originator_version"],
            type=row["topic"],
            recorded_at=recorded_at,
            metadata={
                key: row[key] or ""
                for key in (
                    "merchant_id",
                    "app_id",
                    "key_id",
                    "location_id",
                    "device_id",
                    "request_id",
                )
            },
            payload=payload,
            hashed=hashed or {},
        )


def _hashed(row: dict[str, Any], v1_through: int) -> dict[str, Any]:
    """What the chain hashed for one exported event, as stored (`chain.event_hash_v2`)."""
    state = row["state"]
    metadata = None
    if row["m_present"] is not None:
        metadata = [
            row[key]
            for key in ("merchant_id", "app_id", "key_id", "location_id", "device_id", "request_id")
        ] + [bool(row["command_recorded"])]
    command = None
    if row["c_present"] is not None:
        aggregate_id = row["c_aggregate_id"]
        command = [
            row["command"],
            row["fingerprint"],
            None if aggregate_id is None else str(aggregate_id),
            row["c_aggregate_version"],
            row["c_result"],
        ]
    digest = row["digest"]
    return {
        "format": 1 if row["notification_id"] <= v1_through else 2,
        "topic": row["topic"],
        "state": None if state is None else base64.b64encode(bytes(state)).decode(),
        "metadata": metadata,
        "command": command,
        "digest": None if digest is None else bytes(digest).hex(),
    }
