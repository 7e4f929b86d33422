"""The chain keeper: chain an old log once, verify the chain (its tables and SQL: `schema`).

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
from psycopg.sql import SQL, Composed, Identifier, Literal

from ledger.audit.chain import (
    EVENT_DOMAIN,
    GENESIS,
    Anchor,
    Finding,
    Kind,
    chain,
)
from ledger.audit.links import RANGE_SIZE, READERS, RangeChecker, RangeParameters, check_range_sql
from ledger.audit.schema import (
    CHAIN_TABLE,
    COMMANDS_TABLE,
    EVENTS_TABLE,
    HEAD_TABLE,
    METADATA_TABLE,
    Text,
    command_bytes_sql,
    event_fields_sql,
    event_hash_sql,
    metadata_bytes_sql,
    record_joins,
    text_sql,
    text_utf8_sql,
)

PAGE_SIZE = 10_000  # events per transaction (extend) and per query (verify)
LOCK_TIMEOUT = "5s"  # the last page of `extend` waits this long for the events table
Progress = Callable[[int, int], None]  # (position reached, position to reach)
Hashed = tuple[int, bytes]  # position, event hash (or stored digest)


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
                    Literal(EVENT_DOMAIN), event_fields_sql("ev", text)
                ),
                event_fields=event_fields_sql("ev", text),
                metadata_bytes=lambda alias: metadata_bytes_sql(alias, text),
                command_bytes=lambda alias: command_bytes_sql(alias, text),
                tables={"metadata": metadata_table, "commands": commands_table, "chain": links},
            )

        self.check_range = check_range(text_sql)
        self.check_range_utf8 = check_range(text_utf8_sql)
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
        # A range's hash join (its command records) fits in memory; `text_utf8_sql` needs
        # the text it hashes sent as UTF-8.
        self.check_settings = [
            *self.index_order,
            SQL("SET LOCAL work_mem = '32MB'"),
            SQL("SET LOCAL client_encoding = 'UTF8'"),
        ]
        self.select_encoding = SQL("SELECT current_setting('server_encoding') = 'UTF8'")

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
