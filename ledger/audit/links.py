"""Verifying the stored chain link by link, where it lies (PostgreSQL).

Every link can be checked on its own: the event at position p holds when

    stored digest at p = SHA-256(LINK_DOMAIN | stored digest before p | hash of the event)

and if every link from the genesis holds, the stored chain is the chain recomputed from
the events in position order (by induction on the positions), so checking every link is
as strong as a walk (`chain.ChainWalker`), and the first link that fails is where the walk
stops, with the same kind: up to there the walk's digest is the stored one. A signed
anchor is then met where the stored digest at (or just before) its position equals it.

PostgreSQL checks a range of positions in one query (`check_range_sql`): it hashes each
event with its metadata row and command record (version 2; version 1 up to
`v1_through`), pairs each stored digest with the one before it (`lag`), and answers one
row: the first failing position, its kind and its event's merchant, the events of the
range, and the given merchant's. Nothing per event travels. Ranges run on two
connections sharing one snapshot (`RangeChecker`), so both cores hash.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.sql import SQL, Composable, Composed, Identifier, Literal

from ledger.audit.chain import ABSENT, EVENT_DOMAIN_V2, GENESIS, LINK_DOMAIN, Finding, Kind

RANGE_SIZE = 100_000  # positions per query: the server's memory stays flat
READERS = 2  # connections checking ranges at once (one a core)


def check_range_sql(
    schema: str,
    events: Identifier,
    *,
    v1_hash: Composable,
    event_fields: Composable,
    metadata_bytes: Callable[[str], Composable],
    command_bytes: Callable[[str], Composable],
    tables: dict[str, Identifier],
) -> Composed:
    """The query checking every link with `after < position <= stop` (named parameters
    `after`, `stop`, `head`, `v1_through`, `merchant`).

    Metadata rows and command records are read by position (range scans beside the
    events); a position is only a way in, never hashed: a metadata row counts only if it
    is the event's own, and whatever is not found that way (rows older than positions, or
    whose position was changed, a command whose first event lies before the range) is
    looked up by its key, as the commit that chained it did (`store.record_joins`).
    """
    metadata, commands, links = tables["metadata"], tables["commands"], tables["chain"]
    metadata_key_k = SQL(
        "k.originator_id = ev.originator_id AND k.originator_version = ev.originator_version"
    )

    def command_key(alias: str, of: str) -> Composed:
        return SQL("{a}.merchant_id = {o}.merchant_id AND {a}.request_id = {o}.request_id").format(
            a=Identifier(alias), o=Identifier(of)
        )

    return SQL(
        """
WITH cmd AS (
    SELECT c.merchant_id, c.request_id, {command_bytes_c} AS encoded
    FROM {commands} c WHERE c.position > %(after)s AND c.position <= %(stop)s
), checked AS MATERIALIZED (
    -- MATERIALIZED: each row's kind is computed once (inlined, the hashing would run
    -- again for each aggregate below that reads it). The stored digests (each with the
    -- one before it) and the events (each with its metadata row, read at the event's
    -- position) come in position order from their indexes and are paired by a merge
    -- join: only the range's command records are hashed into memory.
    SELECT coalesce(ev.notification_id, stored.position) AS position,
        CASE WHEN ev.present THEN ev.merchant_id
        ELSE (SELECT k.merchant_id FROM {metadata} k WHERE {metadata_key_k}) END AS merchant_id,
        ev.notification_id IS NOT NULL AS event,
        CASE WHEN stored.position IS NULL THEN
                CASE WHEN ev.notification_id > %(head)s THEN {unchained} ELSE {inserted} END
            WHEN ev.notification_id IS NULL THEN {deleted}
            WHEN pg_catalog.sha256({link_domain} || stored.previous
                || CASE WHEN ev.notification_id <= %(v1_through)s THEN {v1_hash}
                ELSE pg_catalog.sha256({event_domain}{event_fields}
                    -- Whatever is not found by position is looked up by its key, in
                    -- subqueries that run only for those events.
                    || CASE WHEN ev.present THEN {metadata_bytes_m}
                        || CASE WHEN ev.command_recorded THEN coalesce(cp.encoded,
                            (SELECT {command_bytes_k} FROM {commands} k WHERE {command_key_m}),
                            {absent}) ELSE {absent} END
                    ELSE coalesce((SELECT {metadata_bytes_k}
                            || CASE WHEN k.command_recorded THEN coalesce(
                                (SELECT {command_bytes_c} FROM {commands} c
                                 WHERE {command_key_k}), {absent}) ELSE {absent} END
                        FROM {metadata} k WHERE {metadata_key_k}), {absent} || {absent}) END)
                END) <> stored.digest THEN {changed} END AS kind
    FROM (
        SELECT l.position, l.digest, pg_catalog.lag(l.digest, 1, coalesce(
                (SELECT p.digest FROM {links} p WHERE p.position <= least(%(after)s, %(head)s)
                 ORDER BY p.position DESC LIMIT 1), {genesis})) OVER (ORDER BY l.position)
            AS previous
        FROM {links} l WHERE l.position > %(after)s AND l.position <= least(%(stop)s, %(head)s)
    ) stored
    FULL JOIN (
        SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state,
            m.originator_id IS NOT NULL AS present, m.merchant_id, m.app_id, m.key_id,
            m.location_id, m.device_id, m.request_id, m.command_recorded
        FROM {events} e
        LEFT JOIN {metadata} m ON m.position = e.notification_id
            AND m.originator_id = e.originator_id
            AND m.originator_version = e.originator_version
            AND m.position > %(after)s AND m.position <= %(stop)s
        WHERE e.notification_id > %(after)s AND e.notification_id <= %(stop)s
    ) ev ON ev.notification_id = stored.position
    LEFT JOIN cmd cp ON ev.command_recorded
        AND cp.merchant_id = ev.merchant_id AND cp.request_id = ev.request_id
)
SELECT min(position) FILTER (WHERE kind IS NOT NULL),
    (array_agg(kind ORDER BY position) FILTER (WHERE kind IS NOT NULL))[1],
    (array_agg(merchant_id ORDER BY position) FILTER (WHERE kind IS NOT NULL))[1],
    count(*) FILTER (WHERE event), coalesce(max(position) FILTER (WHERE event), 0),
    count(*) FILTER (WHERE event AND merchant_id = %(merchant)s::text),
    coalesce(max(position) FILTER (WHERE event AND merchant_id = %(merchant)s::text), 0),
    least((SELECT min(n.notification_id) FROM {events} n WHERE n.notification_id > %(stop)s),
          (SELECT min(n.position) FROM {links} n
           WHERE n.position > %(stop)s AND n.position <= %(head)s))
FROM checked
"""
    ).format(
        events=events,
        metadata=metadata,
        commands=commands,
        links=links,
        metadata_key_k=metadata_key_k,
        command_key_m=command_key("k", "ev"),
        command_key_k=command_key("c", "k"),
        metadata_bytes_m=metadata_bytes("ev"),
        metadata_bytes_k=metadata_bytes("k"),
        v1_hash=v1_hash,
        event_domain=Literal(EVENT_DOMAIN_V2),
        event_fields=event_fields,
        command_bytes_c=command_bytes("c"),
        command_bytes_k=command_bytes("k"),
        absent=Literal(ABSENT),
        genesis=Literal(GENESIS),
        link_domain=Literal(LINK_DOMAIN),
        unchained=Literal(Kind.UNCHAINED.value),
        inserted=Literal(Kind.INSERTED.value),
        deleted=Literal(Kind.DELETED.value),
        changed=Literal(Kind.CHANGED.value),
    )


@dataclass(frozen=True)
class RangeResult:
    """What one range query found: its first failing link, if any, and its events."""

    after: int
    stop: int
    finding: Finding | None  # its first failing link
    finding_merchant: str | None  # whose event that is (None: no one's, or no event)
    events: int
    last_event: int  # 0: none
    merchant_events: int
    merchant_last: int
    next_position: int | None  # the first event or stored digest after the range


@dataclass(frozen=True)
class RangeParameters:
    head: int
    v1_through: int
    merchant: str | None


class RangeChecker:
    """Runs range queries over positions on connections sharing one snapshot.

    `setup` prepares each connection's transaction (after the snapshot is taken).
    """

    def __init__(
        self,
        query: Composed,
        params: RangeParameters,
        setup: Callable[[psycopg.Connection[Any]], None],
        span: int = RANGE_SIZE,
    ) -> None:
        self.query = query
        self.params = params
        self.setup = setup
        self.span = span

    def check(self, conn: psycopg.Connection[Any], after: int, stop: int) -> RangeResult:
        values = {
            "after": after,
            "stop": stop,
            "head": self.params.head,
            "v1_through": self.params.v1_through,
            "merchant": self.params.merchant,
        }
        with conn.cursor(binary=True) as curs:
            row = curs.execute(self.query, values, prepare=True).fetchone()
        assert row is not None  # an aggregate answers one row
        finding = None if row[0] is None else Finding(Kind(row[1]), row[0])
        return RangeResult(after, stop, finding, *row[2:])

    def _walk(
        self,
        conn: psycopg.Connection[Any],
        after: int,
        stop: int,
        done: threading.Event,
        progress: Callable[[int], None],
    ) -> list[RangeResult]:
        """Ranges of (after, stop] in order, up to the first with a failing link (or until
        `done` says an earlier part found one)."""
        results = []
        while after < stop and not done.is_set():
            result = self.check(conn, after, min(after + self.span, stop))
            results.append(result)
            progress(result.stop - after)
            if result.finding is not None:
                break
            # Positions are dense, but a stretch without any (burnt ids) is skipped whole.
            after = result.stop
            if result.next_position is not None:
                after = max(after, min(stop, result.next_position - 1))
            else:
                after = stop
        return results

    def run(
        self,
        conn: psycopg.Connection[Any],
        url: str,
        start: int,
        stop: int,
        *,
        readers: int = READERS,
        progress: Callable[[int], None] | None = None,
    ) -> list[RangeResult]:
        """Checks (start, stop] in ranges, `conn`'s snapshot shared by `readers - 1`
        more connections, each on its own part of the positions; returns the ranges in
        position order, up to the first with a failing link."""
        lock = threading.Lock()
        covered = 0

        def advance(span: int) -> None:
            nonlocal covered
            with lock:
                covered += span
                if progress is not None:
                    progress(covered)

        parts = _split(start, stop, readers if stop - start > self.span else 1)
        with ExitStack() as stack:
            connections = [conn] + [
                stack.enter_context(_sharing_snapshot(conn, url, self.setup)) for _ in parts[1:]
            ]
            # A part stops as soon as an earlier part has found a failing link.
            stops = [threading.Event() for _ in parts]
            with ThreadPoolExecutor(len(parts), thread_name_prefix="audit-check") as pool:
                futures = [
                    pool.submit(self._walk_part, c, a, b, stops, i, advance)
                    for i, (c, (a, b)) in enumerate(zip(connections, parts, strict=True))
                ]
                results: list[RangeResult] = []
                for future in futures:
                    part = future.result()
                    results.extend(part)
                    if part and part[-1].finding is not None:
                        for later in stops:
                            later.set()
                        for rest in futures:
                            rest.result()  # let the others end before their connections
                        break
        return results

    def _walk_part(
        self,
        conn: psycopg.Connection[Any],
        after: int,
        stop: int,
        stops: list[threading.Event],
        index: int,
        progress: Callable[[int], None],
    ) -> list[RangeResult]:
        results = self._walk(conn, after, stop, stops[index], progress)
        if results and results[-1].finding is not None:
            for later in stops[index + 1 :]:
                later.set()
        return results


def _split(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """(start, stop] in `parts` parts of about equal spans of positions."""
    bounds = [start + (stop - start) * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


@contextmanager
def _sharing_snapshot(
    conn: psycopg.Connection[Any], url: str, setup: Callable[[psycopg.Connection[Any]], None]
) -> Iterator[psycopg.Connection[Any]]:
    """A second read-only connection seeing exactly what `conn`'s transaction sees."""
    row = conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
    assert row is not None
    with psycopg.connect(url) as other:
        other.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        other.read_only = True
        other.execute(SQL("SET TRANSACTION SNAPSHOT {}").format(Literal(row[0])))
        setup(other)
        yield other
