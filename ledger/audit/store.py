"""Where the chain is kept, and every SQL statement of the audit.

`<schema>.event_chain` holds one digest per chained event, by position; the one row of
`<schema>.event_chain_head` says how far the chain has got (the last chained position, its
digest and how many events are chained).

`ChainKeeper.extend` follows the log like a projection: under a lock on the head row it
reads the next page of events up to the committed head of the log, computes their digests
from the head's digest, stores them and moves the head, all in one transaction, so every
event is chained exactly once, in position order, even with two keepers at once. Writers
lock the events table, so positions commit in order: nothing can later appear at or below
a position the log has reached, and gaps (ids of rolled-back inserts) stay gaps.

`ChainKeeper.verify` recomputes the chain from the events, in keyset pages, beside the
stored digests (see `chain.ChainWalker` for what it reports). It writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import SQL, Composed, Identifier, Literal

from ledger.audit.chain import EVENT_DOMAIN, GENESIS, Anchor, ChainWalker, Finding, chain, merge
from ledger.store import schema_lock

CHAIN_TABLE = "event_chain"
HEAD_TABLE = "event_chain_head"
EVENTS_TABLE = "ledger_events"
PAGE_SIZE = 10_000  # events per transaction (extend) and per query (verify)

Progress = Callable[[int, int], None]  # (position reached, position to reach)
Hashed = tuple[int, bytes]  # position, event hash (or stored digest)


def event_hash_sql() -> Composed:
    """`chain.event_hash` of a row of the events table, computed by PostgreSQL.

    The payload is hashed where it lies and 32 bytes travel instead: verifying reads
    about twice as many events per second as fetching the payloads (bench/README.md).
    """
    return SQL(
        "pg_catalog.sha256({domain}"
        " || pg_catalog.int8send(notification_id)"
        " || pg_catalog.uuid_send(originator_id)"
        " || pg_catalog.int8send(originator_version)"
        " || coalesce(pg_catalog.int4send(octet_length(convert_to(topic, 'UTF8'))),"
        " pg_catalog.int4send(-1))"
        " || coalesce(convert_to(topic, 'UTF8'), ''::bytea)"
        " || coalesce(pg_catalog.int8send(octet_length(state)::bigint),"
        " pg_catalog.int8send(-1::bigint))"
        " || coalesce(state, ''::bytea))"
    ).format(domain=Literal(EVENT_DOMAIN))


@dataclass(frozen=True)
class ChainHead:
    """How far the stored chain reaches: last chained position, its digest, event count."""

    position: int = 0
    digest: bytes = GENESIS
    events: int = 0


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
    unchained: int  # events after the chain head when the walk began (not yet chained)
    finding: Finding | None
    seconds: float
    samples: list[Anchor] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Events recomputed per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


class ChainKeeper:
    """The chain of one ledger schema: create, extend, verify."""

    def __init__(self, url: str, schema: str, events_table: str = EVENTS_TABLE) -> None:
        self.url = url
        self.schema = schema
        events = Identifier(schema, events_table)
        links = Identifier(schema, CHAIN_TABLE)
        head = Identifier(schema, HEAD_TABLE)
        self.create_statements = [
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " position bigint PRIMARY KEY,"
                " digest bytea NOT NULL CHECK (length(digest) = 32))"
            ).format(links),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " id boolean PRIMARY KEY DEFAULT true CHECK (id),"
                " position bigint NOT NULL DEFAULT 0,"
                " digest bytea NOT NULL,"
                " events bigint NOT NULL DEFAULT 0,"
                " extended_at timestamptz)"
            ).format(head),
            SQL("INSERT INTO {} (digest) VALUES (%s) ON CONFLICT DO NOTHING").format(head),
        ]
        self.select_head = SQL("SELECT position, digest, events FROM {}").format(head)
        self.lock_head = self.select_head + SQL(" FOR UPDATE")
        self.update_head = SQL(
            "UPDATE {} SET position = %s, digest = %s, events = events + %s, extended_at = now()"
        ).format(head)
        self.log_head = SQL("SELECT max(notification_id) FROM {}").format(events)
        self.count_after = SQL("SELECT count(*) FROM {} WHERE notification_id > %s").format(events)
        self.select_events = SQL(
            "SELECT notification_id, {} FROM {}"
            " WHERE notification_id > %s AND notification_id <= %s"
            " ORDER BY notification_id LIMIT %s"
        ).format(event_hash_sql(), events)
        self.select_links = SQL(
            "SELECT position, digest FROM {}"
            " WHERE position > %s AND position <= %s ORDER BY position LIMIT %s"
        ).format(links)
        self.copy_links = SQL("COPY {} (position, digest) FROM STDIN").format(links)
        # Pages must come from the position indexes, never from sorting the rest of the
        # table: with stale statistics (a freshly loaded table) the planner can pick a
        # bitmap scan and a sort of everything after the page, once per page.
        self.index_order = [SQL("SET LOCAL enable_sort = off")]

    @classmethod
    def for_ledger(cls, ledger: Any) -> ChainKeeper:
        """The chain of a `Ledger` (its database and schema)."""
        recorder = ledger.ledger_recorder
        return cls(ledger.database_url, recorder.datastore.schema, recorder.events_table_name)

    def ensure(self) -> None:
        """Creates the chain's tables if missing (under the schema lock, like the ledger)."""
        with schema_lock(self.url, self.schema), psycopg.connect(self.url) as conn:
            for statement in self.create_statements[:-1]:
                conn.execute(statement)
            conn.execute(self.create_statements[-1], (GENESIS,))

    def _use_indexes(self, conn: psycopg.Connection[Any]) -> None:
        for statement in self.index_order:
            conn.execute(statement)

    def head(self) -> ChainHead:
        with psycopg.connect(self.url) as conn:
            return self._head(conn)

    def _head(self, conn: psycopg.Connection[Any], *, lock: bool = False) -> ChainHead:
        row = conn.execute(self.lock_head if lock else self.select_head).fetchone()
        assert row is not None, "the chain head row is missing (run ensure)"
        return ChainHead(position=row[0], digest=bytes(row[1]), events=row[2])

    def _log_head(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(self.log_head).fetchone()
        return int(row[0] or 0) if row else 0

    def event_hashes(
        self, conn: psycopg.Connection[Any], after: int, stop: int, limit: int
    ) -> list[Hashed]:
        """(position, event hash) of the events with `after < position <= stop`, in order."""
        with conn.cursor(binary=True) as curs:
            curs.execute(self.select_events, (after, stop, limit), prepare=True)
            return curs.fetchall()

    def stored_digests(
        self, conn: psycopg.Connection[Any], after: int, stop: int, limit: int
    ) -> list[Hashed]:
        """(position, digest) of the stored chain with `after < position <= stop`."""
        with conn.cursor(binary=True) as curs:
            curs.execute(self.select_links, (after, stop, limit), prepare=True)
            return curs.fetchall()

    def _page(
        self, conn: psycopg.Connection[Any], after: int, stop: int, link_stop: int, size: int
    ) -> tuple[list[Hashed], list[Hashed], int]:
        """Events and stored digests after `after`, both complete up to the position
        returned (the rows beyond it are read again with the next page)."""
        events = self.event_hashes(conn, after, stop, size)
        links = self.stored_digests(conn, after, link_stop, size) if after < link_stop else []
        upto = stop
        if len(events) == size:
            upto = events[-1][0]
        if len(links) == size:
            upto = min(upto, links[-1][0])
        return events, links, upto

    # ---- extending ----------------------------------------------------------------------

    def extend(self, page_size: int = PAGE_SIZE, progress: Progress | None = None) -> ExtendReport:
        """Chains every event committed so far; returns how many were new."""
        self.ensure()
        started = time.perf_counter()
        chained = 0
        with psycopg.connect(self.url) as conn:
            while True:
                with conn.transaction():
                    self._use_indexes(conn)
                    head = self._head(conn, lock=True)
                    stop = self._log_head(conn)
                    events = self.event_hashes(conn, head.position, stop, page_size)
                    if events:
                        links = chain(events, head.digest)
                        with conn.cursor() as curs, curs.copy(self.copy_links) as copy:
                            for link in links:
                                copy.write_row(link)
                        position, digest = links[-1]
                        conn.execute(self.update_head, (position, digest, len(links)))
                        head = ChainHead(position, digest, head.events + len(links))
                chained += len(events)
                if progress is not None:
                    progress(head.position, stop)
                if len(events) < page_size:
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
    ) -> VerifyReport:
        """Recomputes the chain from the events and compares it with the stored one.

        Walks every event up to the chain head, and on to `through` (a checkpoint's
        position) if that is further; meets `anchors` on the way. Writes nothing.
        """
        self.ensure()
        started = time.perf_counter()
        with psycopg.connect(self.url) as conn:
            # One snapshot for the whole walk: the events and the chain as of one moment.
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            self._use_indexes(conn)
            head = self._head(conn)
            stop = max(head.position, through)
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
                if stop > after:
                    page = reader.submit(self._page, conn, after, stop, link_stop, page_size)
                while walker.finding is None and after < stop:
                    events, links, after = page.result()
                    if after < stop:
                        page = reader.submit(self._page, conn, after, stop, link_stop, page_size)
                    walker.feed(merge(events, links, after))
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
        )
