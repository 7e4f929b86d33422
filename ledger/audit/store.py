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

`ChainKeeper.verify` recomputes the chain from the events and compares it with the stored
digests, link by link in the database (`links`; the findings are those of
`chain.ChainWalker`). It only reads: it works on a read-only database role.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
    Finding,
    Kind,
    chain,
)
from ledger.audit.links import RANGE_SIZE, READERS, RangeChecker, RangeParameters, check_range_sql

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


Text = Callable[[Composable], Composed]  # a text value's encoding in SQL (`_text`)


def _text(value: Composable) -> Composed:
    """A text value as the chain encodes it: its UTF-8 length (4 bytes), its bytes."""
    return SQL(
        "coalesce(pg_catalog.int4send(octet_length(convert_to({x}, 'UTF8')))"
        " || convert_to({x}, 'UTF8'), pg_catalog.int4send(-1))"
    ).format(x=value)


def _text_utf8(value: Composable) -> Composed:
    """`_text` in a UTF8 database, on a connection whose client_encoding is UTF8: there
    a text's bytes are its UTF-8 bytes, `textsend` hands them over as they are, and
    `octet_length` counts them. About 0.5 µs a value cheaper than two `convert_to` calls
    (which look up both encodings by name and validate the bytes), and verify encodes
    seven a row."""
    return SQL(
        "coalesce(pg_catalog.int4send(octet_length({x})) || pg_catalog.textsend({x}),"
        " pg_catalog.int4send(-1))"
    ).format(x=value)


def _event_head_fields(e: str, text: Text = _text) -> Composed:
    """The event's fields before its payload's bytes (from its position to its length)."""
    return SQL(
        " || pg_catalog.int8send({e}.notification_id)"
        " || pg_catalog.uuid_send({e}.originator_id)"
        " || pg_catalog.int8send({e}.originator_version)"
        " || {topic}"
        " || coalesce(pg_catalog.int8send(octet_length({e}.state)::bigint),"
        " pg_catalog.int8send(-1::bigint))"
    ).format(e=Identifier(e), topic=text(_col(e, "topic")))


def _event_fields(e: str, text: Text = _text) -> Composed:
    return _event_head_fields(e, text) + SQL(" || coalesce({e}.state, ''::bytea)").format(
        e=Identifier(e)
    )


def _col(alias: str, name: str) -> Composed:
    return SQL("{}.{}").format(Identifier(alias), Identifier(name))


def metadata_bytes_sql(m: str = "m", text: Text = _text) -> Composed:
    """The version 2 encoding of a present metadata row (alias `m`), from PRESENT on."""
    fields = SQL(" || ").join(
        text(_col(m, name))
        for name in ("merchant_id", "app_id", "key_id", "location_id", "device_id", "request_id")
    )
    return SQL(
        "{present} || {fields} || CASE WHEN {m}.command_recorded THEN {present} ELSE {absent} END"
    ).format(present=Literal(PRESENT), absent=Literal(ABSENT), fields=fields, m=Identifier(m))


def command_bytes_sql(c: str = "c", text: Text = _text) -> Composed:
    """The version 2 encoding of a present command record (alias `c`), from PRESENT on."""
    fields = SQL(" || ").join(
        [
            text(_col(c, "command")),
            text(_col(c, "fingerprint")),
            SQL("coalesce(pg_catalog.uuid_send({}), {})").format(
                _col(c, "aggregate_id"), Literal(bytes(16))
            ),
            SQL("pg_catalog.int8send(coalesce({}, -1::bigint))").format(
                _col(c, "aggregate_version")
            ),
            text(SQL("{}::text").format(_col(c, "result"))),
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
        metadata_table = Identifier(schema, METADATA_TABLE)
        commands_table = Identifier(schema, COMMANDS_TABLE)

        # Verifying checks every link in ranges of positions, in the database (`links`);
        # in a UTF8 database (nearly all) with a cheaper encoding of text, same bytes.
        def check_range(text: Text) -> Composed:
            return check_range_sql(
                schema,
                events,
                v1_hash=SQL("pg_catalog.sha256({}{})").format(
                    Literal(EVENT_DOMAIN), _event_fields("ev", text)
                ),
                event_fields=_event_fields("ev", text),
                metadata_bytes=lambda alias: metadata_bytes_sql(alias, text),
                command_bytes=lambda alias: command_bytes_sql(alias, text),
                tables={"metadata": metadata_table, "commands": commands_table, "chain": links},
            )

        self.check_range = check_range(_text)
        self.check_range_utf8 = check_range(_text_utf8)
        self.select_stored_at = SQL(
            "SELECT a.n, (SELECT l.digest FROM {} l WHERE l.position <= least(a.position, %s)"
            " ORDER BY l.position DESC LIMIT 1)"
            " FROM unnest(%s::bigint[]) WITH ORDINALITY AS a(position, n) ORDER BY a.n"
        ).format(links)
        self.select_samples = SQL(
            "SELECT position, digest FROM (SELECT position, digest,"
            " row_number() OVER (ORDER BY position) AS n FROM {} WHERE position <= %s) s"
            " WHERE n %% %s = 0 ORDER BY position"
        ).format(links)
        self.select_merchant_at = SQL(
            "SELECT m.merchant_id FROM {} e JOIN {} m USING (originator_id, originator_version)"
            " WHERE e.notification_id = %s"
        ).format(events, metadata_table)
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
        # A range's hash join (its command records) fits in memory; `_text_utf8` needs
        # the text it hashes sent as UTF-8.
        self.check_settings = [
            *self.index_order,
            SQL("SET LOCAL work_mem = '32MB'"),
            SQL("SET LOCAL client_encoding = 'UTF8'"),
        ]
        self.select_encoding = SQL("SELECT current_setting('server_encoding') = 'UTF8'")

    @classmethod
    def for_ledger(cls, ledger: Any) -> ChainKeeper:
        """The chain of a `Ledger` (its database and schema)."""
        recorder = ledger.ledger_recorder
        return cls(ledger.database_url, recorder.datastore.schema, recorder.events_table_name)

    def _use_indexes(self, conn: psycopg.Connection[Any]) -> None:
        for statement in self.index_order:
            conn.execute(statement)

    def _prepare_check(self, conn: psycopg.Connection[Any]) -> None:
        for statement in self.check_settings:
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
        page_size: int = RANGE_SIZE,
        progress: Progress | None = None,
        merchant: str | None = None,
        readers: int = READERS,
    ) -> VerifyReport:
        """Recomputes the chain from the events and compares it with the stored one.

        Checks every event up to the chain head, and on to `through` (a checkpoint's
        position) if that is further, link by link in ranges of `page_size` positions on
        `readers` connections (`links`); meets `anchors`. An event after the head is a
        finding. With `merchant`, counts that merchant's events. Only reads.
        """
        started = time.perf_counter()
        with psycopg.connect(self.url) as conn:
            # One snapshot for the whole check: the events and the chain as of one moment.
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            self._prepare_check(conn)
            head = self._head(conn)
            stop = max(head.position, through, self._log_head(conn))
            unchained_row = conn.execute(self.count_after, (head.position,)).fetchone()
            unchained = int(unchained_row[0]) if unchained_row else 0
            # Where the links hold, the stored digests are the recomputed ones: the first
            # anchor they miss is where the walk would report a rewritten chain, unless a
            # link fails before it, so nothing after it needs checking.
            missed, good = self._first_missed_anchor(conn, anchors, head.position)
            bound = stop if missed is None else min(stop, missed.position)
            utf8 = conn.execute(self.select_encoding).fetchone()
            checker = RangeChecker(
                self.check_range_utf8 if utf8 and utf8[0] else self.check_range,
                RangeParameters(head.position, head.v1_through, merchant),
                self._prepare_check,
                page_size,
            )
            ranges = checker.run(
                conn,
                self.url,
                0,
                bound,
                readers=readers,
                progress=None if progress is None else lambda done: progress(done, bound),
            )
            finding = ranges[-1].finding if ranges else None
            finding_merchant = ranges[-1].finding_merchant if ranges else None
            cut = bound  # the events verified are those up to here
            if finding is not None:
                cut = finding.position - 1
            elif missed is not None:
                finding = Finding(Kind.REWRITTEN, missed.position, after=good)
                row = conn.execute(self.select_merchant_at, (missed.position,)).fetchone()
                finding_merchant = None if row is None else row[0]
            counted = [r for r in ranges if r.stop <= cut]
            counted += [checker.check(conn, r.after, cut) for r in ranges if r.after < cut < r.stop]
            position = max((r.last_event for r in counted), default=0)
            digest_row = conn.execute(self.select_digest_before, (position + 1,)).fetchone()
            samples: list[Anchor] = []
            if sample_every and finding is None:
                rows = conn.execute(self.select_samples, (head.position, sample_every))
                samples = [Anchor(p, bytes(d)) for p, d in rows]
        return VerifyReport(
            events=sum(r.events for r in counted),
            position=position,
            digest=GENESIS if digest_row is None or not position else bytes(digest_row[0]),
            chain_head=head,
            unchained=unchained,
            finding=finding,
            seconds=time.perf_counter() - started,
            samples=samples,
            merchant_events=sum(r.merchant_events for r in counted),
            merchant_position=max((r.merchant_last for r in counted), default=0),
            finding_merchant=finding_merchant,
        )

    def _first_missed_anchor(
        self, conn: psycopg.Connection[Any], anchors: Sequence[Anchor], chain_head: int
    ) -> tuple[Anchor | None, int]:
        """The first anchor (by position) whose digest is not the stored chain's at its
        position, and the position of the anchor before it (0: none)."""
        ordered = sorted(anchors, key=lambda a: a.position)
        if not ordered:
            return None, 0
        rows = conn.execute(self.select_stored_at, (chain_head, [a.position for a in ordered]))
        good = 0
        for anchor, (_, stored) in zip(ordered, rows, strict=True):
            if (GENESIS if stored is None else bytes(stored)) != anchor.digest:
                return anchor, good
            good = anchor.position
        return None, good
