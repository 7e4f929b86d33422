"""Where the chain is kept, and every SQL statement of the audit.

`<schema>.event_chain` holds one digest per chained event, by position; the one row of
`<schema>.event_chain_head` says how far the chain has got (the last chained position, its
digest and how many events are chained), whether commits chain their own events (`live`),
and up to which position the chain uses the version 1 event hash (`v1_through`: the chain
as it was before version 2; see `chain`). These tables are created with the ledger's
(`create_statements`, run by the recorder at start).

Every group commit extends the chain in its own transaction, under the events table's lock
(`ledger/group_commit.py`), so an event is chained the moment it is committed. A log
written before that (the head row is not `live`) is chained once by `ChainKeeper.extend`
(`posledger audit chain`): it chains the old events page by page, then the last ones under
the events table's lock, and turns `live` on; from then on the commits chain.

`ChainKeeper.verify` recomputes the chain from the events, in keyset pages, beside the
stored digests (see `chain.ChainWalker` for what it reports). It only reads: it works on a
read-only database role.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import SQL, Composable, Composed, Identifier, Literal

from ledger.audit.chain import (
    ABSENT,
    EVENT_DOMAIN,
    EVENT_DOMAIN_V2,
    GENESIS,
    LINK_DOMAIN,
    PRESENT,
    Anchor,
    ChainWalker,
    CommandRow,
    Finding,
    MetadataRow,
    chain,
    command_bytes,
    merge,
    metadata_bytes,
)

CHAIN_TABLE = "event_chain"
HEAD_TABLE = "event_chain_head"
EVENTS_TABLE = "ledger_events"
METADATA_TABLE = "event_metadata"
COMMANDS_TABLE = "processed_commands"
PAGE_SIZE = 10_000  # events per transaction (extend) and per query (verify)
LOCK_TIMEOUT = "5s"  # the last page of `extend` waits this long for the events table

Progress = Callable[[int, int], None]  # (position reached, position to reach)
Hashed = tuple[int, bytes]  # position, event hash (or stored digest)


def create_statements(schema: str, events_table: str = EVENTS_TABLE) -> list[Composed]:
    """The chain's tables, and what later versions add to an older schema; idempotent.

    Run after the metadata table's own statement. A head row made here starts `live` when
    the log is empty; an older head row (a chain of version 1) keeps its chain, which
    verifies with version 1 up to its position.
    """
    head = Identifier(schema, HEAD_TABLE)
    return [
        SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " position bigint PRIMARY KEY,"
            " digest bytea NOT NULL CHECK (length(digest) = 32))"
        ).format(Identifier(schema, CHAIN_TABLE)),
        SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id boolean PRIMARY KEY DEFAULT true CHECK (id),"
            " position bigint NOT NULL DEFAULT 0,"
            " digest bytea NOT NULL,"
            " events bigint NOT NULL DEFAULT 0,"
            " extended_at timestamptz)"
        ).format(head),
        SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS live boolean NOT NULL DEFAULT false").format(
            head
        ),
        SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS v1_through bigint").format(head),
        SQL("UPDATE {} SET v1_through = position WHERE v1_through IS NULL").format(head),
        SQL(
            "INSERT INTO {} (digest, v1_through, live)"
            " SELECT {}, 0, NOT EXISTS (SELECT FROM {}) ON CONFLICT DO NOTHING"
        ).format(head, Literal(GENESIS), Identifier(schema, events_table)),
        SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS command_recorded boolean NOT NULL"
            " DEFAULT false"
        ).format(Identifier(schema, METADATA_TABLE)),
        # The position of the row's event (of a command record: of its command's first
        # event), written by the group commit, so that a verification reads them by range.
        SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS position bigint").format(
            Identifier(schema, METADATA_TABLE)
        ),
        SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (position)").format(
            Identifier(f"{METADATA_TABLE}_position_idx"), Identifier(schema, METADATA_TABLE)
        ),
        SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS position bigint").format(
            Identifier(schema, COMMANDS_TABLE)
        ),
        SQL("CREATE INDEX IF NOT EXISTS {} ON {} (position)").format(
            Identifier(f"{COMMANDS_TABLE}_position_idx"), Identifier(schema, COMMANDS_TABLE)
        ),
    ]


def _text(value: Composable) -> Composed:
    """A text value as the chain encodes it: its UTF-8 length (4 bytes), its bytes."""
    return SQL(
        "coalesce(pg_catalog.int4send(octet_length(convert_to({x}, 'UTF8')))"
        " || convert_to({x}, 'UTF8'), pg_catalog.int4send(-1))"
    ).format(x=value)


def _event_head_fields(e: str) -> Composed:
    """The event's fields before its payload's bytes (from its position to its length)."""
    return SQL(
        " || pg_catalog.int8send({e}.notification_id)"
        " || pg_catalog.uuid_send({e}.originator_id)"
        " || pg_catalog.int8send({e}.originator_version)"
        " || coalesce(pg_catalog.int4send(octet_length(convert_to({e}.topic, 'UTF8'))),"
        " pg_catalog.int4send(-1))"
        " || coalesce(convert_to({e}.topic, 'UTF8'), ''::bytea)"
        " || coalesce(pg_catalog.int8send(octet_length({e}.state)::bigint),"
        " pg_catalog.int8send(-1::bigint))"
    ).format(e=Identifier(e))


def _event_fields(e: str) -> Composed:
    return _event_head_fields(e) + SQL(" || coalesce({e}.state, ''::bytea)").format(e=Identifier(e))


def _col(alias: str, name: str) -> Composed:
    return SQL("{}.{}").format(Identifier(alias), Identifier(name))


def metadata_bytes_sql(m: str = "m") -> Composed:
    """The version 2 encoding of a present metadata row (alias `m`), from PRESENT on."""
    fields = SQL(" || ").join(
        _text(_col(m, name))
        for name in ("merchant_id", "app_id", "key_id", "location_id", "device_id", "request_id")
    )
    return SQL(
        "{present} || {fields} || CASE WHEN {m}.command_recorded THEN {present} ELSE {absent} END"
    ).format(present=Literal(PRESENT), absent=Literal(ABSENT), fields=fields, m=Identifier(m))


def command_bytes_sql(c: str = "c") -> Composed:
    """The version 2 encoding of a present command record (alias `c`), from PRESENT on."""
    fields = SQL(" || ").join(
        [
            _text(_col(c, "command")),
            _text(_col(c, "fingerprint")),
            SQL("coalesce(pg_catalog.uuid_send({}), {})").format(
                _col(c, "aggregate_id"), Literal(bytes(16))
            ),
            SQL("pg_catalog.int8send(coalesce({}, -1::bigint))").format(
                _col(c, "aggregate_version")
            ),
            _text(SQL("{}::text").format(_col(c, "result"))),
        ]
    )
    return SQL("{} || {}").format(Literal(PRESENT), fields)


def event_hash_sql(version: int = 2, e: str = "e", m: str = "m", c: str = "c") -> Composed:
    """`chain.event_hash` (version 1) or `chain.event_hash_v2` of a row of the events
    table (alias `e`), computed by PostgreSQL. Version 2 reads the event's metadata row
    (alias `m`, joined on the event's id and version) and its command record (alias `c`,
    joined on the metadata's merchant and request id when `m.command_recorded`).

    The records are hashed where they lie and 32 bytes travel instead: verifying reads
    about twice as many events per second as fetching the payloads (bench/README.md).
    """
    if version == 1:
        return SQL("pg_catalog.sha256({domain}{fields})").format(
            domain=Literal(EVENT_DOMAIN), fields=_event_fields(e)
        )
    return SQL(
        "pg_catalog.sha256({domain}{fields}"
        " || CASE WHEN {m}.originator_id IS NULL THEN {absent} ELSE {metadata} END"
        " || CASE WHEN {c}.merchant_id IS NULL THEN {absent} ELSE {command} END)"
    ).format(
        domain=Literal(EVENT_DOMAIN_V2),
        fields=_event_fields(e),
        m=Identifier(m),
        c=Identifier(c),
        absent=Literal(ABSENT),
        metadata=metadata_bytes_sql(m),
        command=command_bytes_sql(c),
    )


def record_joins(schema: str, e: str = "e", m: str = "m", c: str = "c") -> Composed:
    """The joins `event_hash_sql(2)` reads, from the events aliased `e`."""
    return SQL(
        " LEFT JOIN {metadata} {m} ON {m}.originator_id = {e}.originator_id"
        " AND {m}.originator_version = {e}.originator_version"
        " LEFT JOIN {commands} {c} ON {m}.command_recorded"
        " AND {c}.merchant_id = {m}.merchant_id AND {c}.request_id = {m}.request_id"
    ).format(
        metadata=Identifier(schema, METADATA_TABLE),
        commands=Identifier(schema, COMMANDS_TABLE),
        e=Identifier(e),
        m=Identifier(m),
        c=Identifier(c),
    )


def chain_sql(schema: str) -> dict[str, Composable]:
    """What the group commit needs to chain its events (see `commit_function_sql`)."""
    return {
        "chain": Identifier(schema, CHAIN_TABLE),
        "chain_head": Identifier(schema, HEAD_TABLE),
        "link_domain": Literal(LINK_DOMAIN),
        "event_domain": Literal(EVENT_DOMAIN_V2),
        "absent": Literal(ABSENT),
        "command_bytes": command_bytes_sql("c"),
    }


@dataclass(frozen=True)
class ChainHead:
    """How far the stored chain reaches: last chained position, its digest, event count;
    whether commits chain their events, and the last position of version 1 hashes."""

    position: int = 0
    digest: bytes = GENESIS
    events: int = 0
    live: bool = True
    v1_through: int = 0


@dataclass(frozen=True)
class ExtendReport:
    events: int  # newly chained
    head: ChainHead
    seconds: float


@dataclass(frozen=True)
class VerifyReport:
    events: int  # events recomputed
    position: int  # the last of them
    digest: bytes  # the recomputed chain's digest there
    chain_head: ChainHead  # the stored chain, as the walk found it
    unchained: int  # events after the chain head (each walk reports the first as a finding)
    finding: Finding | None
    seconds: float
    samples: list[Anchor] = field(default_factory=list)
    # With `merchant`: that merchant's events among those verified, and the last one's
    # position (other merchants' events are walked, never counted).
    merchant_events: int = 0
    merchant_position: int = 0
    finding_merchant: str | None = None  # whose event the finding is at, when known

    @property
    def rate(self) -> float:
        """Events recomputed per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _command_bytes(row: tuple[Any, ...]) -> bytes:
    return command_bytes(CommandRow(*row[2:]))


class CommandRecords:
    """Command records' encodings by merchant and request id, for the pages of one walk.

    A page loads the records whose first event it holds (by position); a command whose
    events span two pages is found in the previous page's; anything else is looked up by
    its key. A record that cannot be found encodes as absent (the chain then differs).
    """

    def __init__(self) -> None:
        self._current: dict[tuple[str, str], bytes] = {}
        self._previous: dict[tuple[str, str], bytes] = {}

    def next_page(
        self, curs: psycopg.Cursor[Any], query: Composed, bounds: tuple[int, int]
    ) -> None:
        self._previous = self._current
        curs.execute(query, bounds, prepare=True)
        self._current = {(row[0], row[1]): _command_bytes(row) for row in curs.fetchall()}

    def look_up(
        self, curs: psycopg.Cursor[Any], query: Composed, keys: set[tuple[str, str]]
    ) -> None:
        """Loads those of `keys` not at hand."""
        missing = [k for k in keys if k not in self._current and k not in self._previous]
        if not missing:
            return
        curs.execute(query, ([k[0] for k in missing], [k[1] for k in missing]), prepare=True)
        self._current.update({(row[0], row[1]): _command_bytes(row) for row in curs.fetchall()})

    def get(self, key: tuple[str, str]) -> bytes:
        found = self._current.get(key)
        if found is None:
            found = self._previous.get(key, ABSENT)
        return found


class ChainKeeper:
    """The chain of one ledger schema: chain an old log once (`extend`), verify."""

    def __init__(self, url: str, schema: str, events_table: str = EVENTS_TABLE) -> None:
        self.url = url
        self.schema = schema
        events = Identifier(schema, events_table)
        self.events_table = events
        links = Identifier(schema, CHAIN_TABLE)
        head = Identifier(schema, HEAD_TABLE)
        self.select_head = SQL(
            "SELECT position, digest, events, live, coalesce(v1_through, 0) FROM {}"
        ).format(head)
        self.lock_head = self.select_head + SQL(" FOR UPDATE")
        self.update_head = SQL(
            "UPDATE {} SET position = %s, digest = %s, events = events + %s, extended_at = now()"
        ).format(head)
        self.go_live = SQL("UPDATE {} SET live = true").format(head)
        self.lock_events = [
            SQL("SET LOCAL lock_timeout = {}").format(Literal(LOCK_TIMEOUT)),
            SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(events),
        ]
        self.log_head = SQL("SELECT max(notification_id) FROM {}").format(events)
        self.count_after = SQL("SELECT count(*) FROM {} WHERE notification_id > %s").format(events)
        select = SQL(
            "SELECT e.notification_id,"
            " CASE WHEN e.notification_id <= %s THEN {v1} ELSE {v2} END{extra}"
            " FROM {events} e{joins}"
            " WHERE e.notification_id > %s AND e.notification_id <= %s"
            " ORDER BY e.notification_id LIMIT %s"
        )
        parts = {
            "v1": event_hash_sql(1),
            "v2": event_hash_sql(2),
            "events": events,
            "joins": record_joins(schema),
        }
        self.select_events = select.format(extra=SQL(""), **parts)
        self.select_events_merchant = select.format(extra=SQL(", m.merchant_id"), **parts)
        # Version 2 pages read the metadata rows and command records by position, beside
        # the events (range scans), and Python encodes and hashes them (`chain`). A position
        # is only a way in, never hashed: a row found by position counts only if it is the
        # event's own (its id and version), and whatever is not found that way (rows
        # written before positions were kept, or whose position was changed) is looked up
        # by its key, as the commit that chained it did (`record_joins`).
        metadata_table = Identifier(schema, METADATA_TABLE)
        commands_table = Identifier(schema, COMMANDS_TABLE)
        metadata_columns = SQL(
            "m.merchant_id, m.app_id, m.key_id, m.location_id, m.device_id, m.request_id,"
            " m.command_recorded"
        )
        self.select_records = SQL(
            "SELECT e.notification_id, {domain}{head}, coalesce(e.state, ''::bytea),"
            " m.position IS NOT NULL, {metadata}"
            " FROM {events} e LEFT JOIN {metadata_table} m ON m.position = e.notification_id"
            " AND m.originator_id = e.originator_id"
            " AND m.originator_version = e.originator_version"
            " AND m.position > %s AND m.position <= %s"
            " WHERE e.notification_id > %s AND e.notification_id <= %s"
            " ORDER BY e.notification_id LIMIT %s"
        ).format(
            domain=Literal(EVENT_DOMAIN_V2),
            head=_event_head_fields("e"),
            metadata=metadata_columns,
            events=events,
            metadata_table=metadata_table,
        )
        self.select_metadata_of = SQL(
            "SELECT e.notification_id, {metadata} FROM {events} e"
            " JOIN {metadata_table} m ON m.originator_id = e.originator_id"
            " AND m.originator_version = e.originator_version"
            " WHERE e.notification_id = ANY(%s)"
        ).format(metadata=metadata_columns, events=events, metadata_table=metadata_table)
        command_columns = SQL(
            "c.merchant_id, c.request_id, c.command, c.fingerprint, c.aggregate_id,"
            " c.aggregate_version, c.result::text"
        )
        self.select_commands_between = SQL(
            "SELECT {columns} FROM {commands} c WHERE c.position > %s AND c.position <= %s"
        ).format(columns=command_columns, commands=commands_table)
        self.select_commands_of = SQL(
            "SELECT {columns} FROM {commands} c"
            " JOIN unnest(%s::text[], %s::text[]) AS x(merchant_id, request_id)"
            " ON c.merchant_id = x.merchant_id AND c.request_id = x.request_id"
        ).format(columns=command_columns, commands=commands_table)
        self.select_links = SQL(
            "SELECT position, digest FROM {}"
            " WHERE position > %s AND position <= %s ORDER BY position LIMIT %s"
        ).format(links)
        self.select_digest_before = SQL(
            "SELECT digest FROM {} WHERE position < %s ORDER BY position DESC LIMIT 1"
        ).format(links)
        self.copy_links = SQL("COPY {} (position, digest) FROM STDIN").format(links)
        # Commands recorded before version 2 marked their metadata rows: mark those of
        # the events still to be chained (a record lists the aggregates it wrote).
        self.mark_recorded = SQL(
            "UPDATE {metadata} m SET command_recorded = true"
            " FROM {commands} c, {events} e"
            " WHERE NOT m.command_recorded AND e.notification_id > %s"
            " AND e.originator_id = m.originator_id"
            " AND e.originator_version = m.originator_version"
            " AND c.merchant_id = m.merchant_id AND c.request_id = m.request_id"
            " AND c.result -> 'aggregates' @> jsonb_build_array(jsonb_build_array("
            "m.originator_id::text))"
        ).format(
            metadata=Identifier(schema, METADATA_TABLE),
            commands=Identifier(schema, COMMANDS_TABLE),
            events=events,
        )
        # Rows written before the commits kept positions get theirs (`extend`).
        self.fill_positions = [
            SQL(
                "UPDATE {metadata} m SET position = e.notification_id FROM {events} e"
                " WHERE m.position IS NULL AND e.originator_id = m.originator_id"
                " AND e.originator_version = m.originator_version"
                " AND NOT EXISTS (SELECT FROM {metadata} o WHERE o.position = e.notification_id)"
            ).format(metadata=metadata_table, events=events),
            SQL(
                "UPDATE {commands} c SET position = f.position FROM ("
                " SELECT m.merchant_id, m.request_id, min(m.position) AS position"
                " FROM {metadata} m JOIN {commands} o ON o.merchant_id = m.merchant_id"
                " AND o.request_id = m.request_id"
                " WHERE o.position IS NULL AND m.command_recorded GROUP BY 1, 2) f"
                " WHERE c.merchant_id = f.merchant_id AND c.request_id = f.request_id"
            ).format(metadata=metadata_table, commands=commands_table),
        ]
        # Pages must come from the position indexes, never from sorting the rest of the
        # table: with stale statistics (a freshly loaded table) the planner can pick a
        # bitmap scan and a sort of everything after the page, once per page.
        # Pages are short queries: compiling them (JIT) cost more than running them.
        self.index_order = [SQL("SET LOCAL enable_sort = off"), SQL("SET LOCAL jit = off")]

    @classmethod
    def for_ledger(cls, ledger: Any) -> ChainKeeper:
        """The chain of a `Ledger` (its database and schema)."""
        recorder = ledger.ledger_recorder
        return cls(ledger.database_url, recorder.datastore.schema, recorder.events_table_name)

    def _use_indexes(self, conn: psycopg.Connection[Any]) -> None:
        for statement in self.index_order:
            conn.execute(statement)

    def head(self) -> ChainHead:
        with psycopg.connect(self.url) as conn:
            conn.read_only = True
            return self._head(conn)

    def _head(self, conn: psycopg.Connection[Any], *, lock: bool = False) -> ChainHead:
        row = conn.execute(self.lock_head if lock else self.select_head).fetchone()
        if row is None:
            raise psycopg.errors.NoDataFound(
                f"the chain head row of schema {self.schema!r} is missing"
            )
        return ChainHead(
            position=row[0], digest=bytes(row[1]), events=row[2], live=row[3], v1_through=row[4]
        )

    def digest_before(self, position: int) -> bytes:
        """The stored chain's digest just before `position` (where an export starts)."""
        with psycopg.connect(self.url) as conn:
            conn.read_only = True
            row = conn.execute(self.select_digest_before, (position,)).fetchone()
        return GENESIS if row is None else bytes(row[0])

    def _log_head(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(self.log_head).fetchone()
        return int(row[0] or 0) if row else 0

    def event_hashes(
        self,
        conn: psycopg.Connection[Any],
        after: int,
        stop: int,
        limit: int,
        v1_through: int = 0,
        *,
        merchants: bool = False,
    ) -> list[Any]:
        """(position, event hash) of the events with `after < position <= stop`, in order
        (version 1 hashes up to `v1_through`); with `merchants`, each event's merchant too."""
        statement = self.select_events_merchant if merchants else self.select_events
        with conn.cursor(binary=True) as curs:
            curs.execute(statement, (v1_through, after, stop, limit), prepare=True)
            return curs.fetchall()

    def stored_digests(
        self, conn: psycopg.Connection[Any], after: int, stop: int, limit: int
    ) -> list[Hashed]:
        """(position, digest) of the stored chain with `after < position <= stop`."""
        with conn.cursor(binary=True) as curs:
            curs.execute(self.select_links, (after, stop, limit), prepare=True)
            return curs.fetchall()

    def records(
        self,
        conn: psycopg.Connection[Any],
        after: int,
        stop: int,
        limit: int,
        commands: CommandRecords,
    ) -> list[tuple[int, bytes, str | None]]:
        """(position, version 2 event hash, merchant) of the events with
        `after < position <= stop`, in order, hashed here from the rows as stored."""
        with conn.cursor(binary=True) as curs:
            curs.execute(self.select_records, (after, stop, after, stop, limit), prepare=True)
            rows = curs.fetchall()
            if not rows:
                return []
            by_key: dict[int, Any] = {}
            if not all(row[3] for row in rows):
                missing = [row[0] for row in rows if not row[3]]
                curs.execute(self.select_metadata_of, (missing,), prepare=True)
                by_key = {row[0]: row[1:] for row in curs.fetchall()}
            # Each event's metadata fields (None: it has no metadata row); the events of one
            # command share most of them, so each distinct row is encoded once.
            keys = [row[4:] if row[3] else by_key.get(row[0]) for row in rows]
            distinct = {key for key in keys if key is not None}
            commands.next_page(curs, self.select_commands_between, (after, rows[-1][0]))
            commands.look_up(
                curs, self.select_commands_of, {(k[0], k[5]) for k in distinct if k[6]}
            )
        encoded: dict[Any, bytes] = {
            key: metadata_bytes(MetadataRow(*key))
            + (commands.get((key[0], key[5])) if key[6] else ABSENT)
            for key in distinct
        }
        encoded[None] = ABSENT + ABSENT
        sha256 = hashlib.sha256
        return [
            (row[0], sha256(row[1] + row[2] + encoded[key]).digest(), key and key[0])
            for row, key in zip(rows, keys, strict=True)
        ]

    def _page(
        self,
        conn: psycopg.Connection[Any],
        after: int,
        stop: int,
        link_stop: int,
        size: int,
        v1_through: int,
        merchants: bool,
        commands: CommandRecords,
    ) -> tuple[list[Any], list[Hashed], int]:
        """Events and stored digests after `after`, both complete up to the position
        returned (the rows beyond it are read again with the next page). Events of
        version 1 are hashed by the database, those of version 2 here."""
        events: list[Any]
        if after < v1_through:
            stop = min(stop, v1_through)
            events = self.event_hashes(conn, after, stop, size, v1_through, merchants=merchants)
        else:
            events = self.records(conn, after, stop, size, commands)
        links = self.stored_digests(conn, after, link_stop, size) if after < link_stop else []
        upto = stop
        if len(events) == size:
            upto = events[-1][0]
        if len(links) == size:
            upto = min(upto, links[-1][0])
        return events, links, upto

    # ---- chaining an old log once ---------------------------------------------------------

    def extend(self, page_size: int = PAGE_SIZE, progress: Progress | None = None) -> ExtendReport:
        """Chains every event committed before commits chained their own, once; then
        turns on chaining by the commits. Gives metadata rows and command records written
        before the commits kept positions theirs (which only speeds up `verify`). Chains
        nothing on a live chain."""
        started = time.perf_counter()
        chained = 0
        with psycopg.connect(self.url) as conn:
            with conn.transaction():
                for statement in self.fill_positions:
                    conn.execute(statement)
            head = self._head(conn)
            conn.rollback()
            if head.live:
                return ExtendReport(0, head, time.perf_counter() - started)
            with conn.transaction():
                conn.execute(self.mark_recorded, (head.position,))
            last = False
            while True:
                with conn.transaction():
                    if last:  # the rest, with writers held off, and the commits take over
                        for statement in self.lock_events:
                            conn.execute(statement)
                    self._use_indexes(conn)
                    head = self._head(conn, lock=True)
                    if head.live:
                        break
                    stop = self._log_head(conn)
                    while True:
                        events = self.event_hashes(conn, head.position, stop, page_size)
                        if events:
                            links = chain(events, head.digest)
                            with conn.cursor() as curs, curs.copy(self.copy_links) as copy:
                                for link in links:
                                    copy.write_row(link)
                            position, digest = links[-1]
                            conn.execute(self.update_head, (position, digest, len(links)))
                            head = ChainHead(
                                position, digest, head.events + len(links), False, head.v1_through
                            )
                        chained += len(events)
                        if progress is not None:
                            progress(head.position, stop)
                        if not last or len(events) < page_size:
                            break
                    if last:
                        conn.execute(self.go_live)
                        head = ChainHead(
                            head.position, head.digest, head.events, True, head.v1_through
                        )
                        break
                    last = len(events) < page_size
        return ExtendReport(chained, head, time.perf_counter() - started)

    # ---- verifying ----------------------------------------------------------------------

    def verify(
        self,
        anchors: Sequence[Anchor] = (),
        *,
        through: int = 0,
        sample_every: int = 0,
        page_size: int = PAGE_SIZE,
        progress: Progress | None = None,
        merchant: str | None = None,
    ) -> VerifyReport:
        """Recomputes the chain from the events and compares it with the stored one.

        Walks every event up to the chain head, and on to `through` (a checkpoint's
        position) if that is further; meets `anchors` on the way. An event after the
        head is a finding. With `merchant`, counts that merchant's events. Only reads.
        """
        started = time.perf_counter()
        merchants = merchant is not None
        merchant_events = merchant_position = 0
        finding_merchant: str | None = None
        with psycopg.connect(self.url) as conn:
            # One snapshot for the whole walk: the events and the chain as of one moment.
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            self._use_indexes(conn)
            head = self._head(conn)
            log_head = self._log_head(conn)
            stop = max(head.position, through, log_head)
            unchained_row = conn.execute(self.count_after, (head.position,)).fetchone()
            unchained = int(unchained_row[0]) if unchained_row else 0
            walker = ChainWalker(
                chain_head=head.position, anchors=anchors, sample_every=sample_every
            )
            link_stop = min(stop, head.position)
            # The next page is read while this one is hashed (the driver waits for the
            # server without holding the GIL); only one thread uses the connection at once.
            with ThreadPoolExecutor(1, thread_name_prefix="audit-read") as reader:
                after = 0
                arguments = (link_stop, page_size, head.v1_through, merchants, CommandRecords())
                if stop > after:
                    page = reader.submit(self._page, conn, after, stop, *arguments)
                while walker.finding is None and after < stop:
                    events, links, after = page.result()
                    if after < stop:
                        page = reader.submit(self._page, conn, after, stop, *arguments)
                    if merchants:
                        owners = {row[0]: row[2] for row in events}
                        events = [(row[0], row[1]) for row in events]
                    walker.feed(merge(events, links, after))
                    if merchants:
                        found = walker.finding
                        if found is not None:
                            finding_merchant = owners.get(found.position)
                        for position, owner in owners.items():
                            if owner == merchant and (
                                position < found.position if found else position <= after
                            ):
                                merchant_events += 1
                                merchant_position = max(merchant_position, position)
                    if progress is not None:
                        progress(after, stop)
            walker.finish()
        return VerifyReport(
            events=walker.events,
            position=walker.position,
            digest=walker.digest,
            chain_head=head,
            unchained=unchained,
            finding=walker.finding,
            seconds=time.perf_counter() - started,
            samples=walker.samples,
            merchant_events=merchant_events,
            merchant_position=merchant_position,
            finding_merchant=finding_merchant,
        )
