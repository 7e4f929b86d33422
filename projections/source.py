"""Reading the event log for the views: pages in commit order, and aggregates as of a page.

Writers lock the events table, so positions (notification ids) commit in order: everything
at or below the highest committed position is final. A page therefore reads up to a `stop`
taken from the committed head, and gaps (ids of rolled-back inserts) are simply absent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification, StoredEvent
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from projections.view import Event

T = TypeVar("T")


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


# Positions one query of a page may cover (at least ten pages' worth). Without statistics on
# the events table (after a bulk load, before autovacuum analyzes it, or with autovacuum
# off), PostgreSQL answers `after < position <= stop ... LIMIT n` by reading and sorting every
# row up to `stop`, so a view catching up N events read O(N²) rows (bench/README.md). In
# windows, a page costs the same however far behind the view is, whatever the plan.
SCAN_WINDOW = 10_000


def read_page(
    ledger: Ledger, after: int, stop: int, limit: int, topics: tuple[str, ...]
) -> list[Event]:
    """Events with `after < position <= stop` of the given topics, oldest first."""
    notifications: list[Notification] = []
    window = max(SCAN_WINDOW, 10 * limit)
    start = after
    while start < stop and len(notifications) < limit:
        end = min(stop, start + window)
        notifications += ledger.recorder.select_notifications(
            start=start + 1, limit=limit - len(notifications), stop=end, topics=list(topics)
        )
        start = end
    return [
        Event(
            position=n.id,
            originator_id=n.originator_id,
            originator_version=n.originator_version,
            topic=n.topic,
            event=ledger.mapper.to_domain_event(n),
        )
        for n in notifications
    ]


def aggregates_at(
    ledger: Ledger, versions: dict[UUID, int], page: Sequence[Event] = ()
) -> dict[UUID, Any]:
    """Each aggregate as of the given version, rebuilt from its events in one query.

    Used for aggregates with short histories (sales, products, customers): a view then
    takes its rows from the domain's own state instead of repeating the domain's rules.
    An aggregate whose every event up to that version is in `page` (a view's page of all
    its aggregate's topics; an imported sale is created and completed in one transaction)
    is rebuilt from the page's events, already decoded, instead of read again.
    """
    if not versions:
        return {}
    result: dict[UUID, Any] = {}
    histories: dict[UUID, list[Event]] = defaultdict(list)
    for e in page:
        if e.originator_version <= versions.get(e.originator_id, 0):
            histories[e.originator_id].append(e)
    for aggregate_id, events in histories.items():
        if [e.originator_version for e in events] == list(range(1, versions[aggregate_id] + 1)):
            aggregate: Aggregate | None = None
            for e in events:
                aggregate = e.event.mutate(aggregate)
            result[aggregate_id] = aggregate
    missing = [aggregate_id for aggregate_id in versions if aggregate_id not in result]
    recorder = ledger.ledger_recorder
    statement = SQL(
        "SELECT originator_id, originator_version, topic, state FROM {table}"
        " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
    ).format(table=Identifier(recorder.datastore.schema, recorder.events_table_name))
    by_id: dict[UUID, list[StoredEvent]] = defaultdict(list)
    if missing:
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (missing,))
            for row in curs.fetchall():
                if row["originator_version"] <= versions[row["originator_id"]]:
                    by_id[row["originator_id"]].append(
                        StoredEvent(
                            originator_id=row["originator_id"],
                            originator_version=row["originator_version"],
                            topic=row["topic"],
                            state=bytes(row["state"]),
                        )
                    )
    for aggregate_id, stored in by_id.items():
        aggregate = None
        for s in stored:
            aggregate = ledger.mapper.to_domain_event(s).mutate(aggregate)  # type: ignore[attr-defined]
        result[aggregate_id] = aggregate
    # In the order of their ids, as the query alone returned them.
    return dict(sorted(result.items()))


def states_at(
    ledger: Ledger, wanted: dict[UUID, set[int]], pick: Callable[[Any], T]
) -> dict[tuple[UUID, int], T]:
    """What `pick` reads from each aggregate as of each wanted version, in one query.

    For facts that belong to the moment of an event (e.g. the customer a sale named when it
    was refunded): a view that read them from the page's latest version instead would give
    different answers depending on where the pages happen to end.
    """
    if not wanted:
        return {}
    recorder = ledger.ledger_recorder
    statement = SQL(
        "SELECT originator_id, originator_version, topic, state FROM {table}"
        " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
    ).format(table=Identifier(recorder.datastore.schema, recorder.events_table_name))
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, (list(wanted),))
        rows = curs.fetchall()
    result: dict[tuple[UUID, int], T] = {}
    aggregates: dict[UUID, Aggregate | None] = {}
    for row in rows:
        aggregate_id, version = row["originator_id"], row["originator_version"]
        if version > max(wanted[aggregate_id]):
            continue
        stored = StoredEvent(
            originator_id=aggregate_id,
            originator_version=version,
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        event = ledger.mapper.to_domain_event(stored)
        aggregates[aggregate_id] = event.mutate(aggregates.get(aggregate_id))  # type: ignore[attr-defined]
        if version in wanted[aggregate_id]:
            result[aggregate_id, version] = pick(aggregates[aggregate_id])
    return result


def latest_versions(events: Sequence[Event], kind: type[Aggregate]) -> dict[UUID, int]:
    """The highest version of each aggregate of `kind` that a page touches."""
    versions: dict[UUID, int] = {}
    for e in events:
        if isinstance(e.event, (kind.Event, kind.Created)):
            versions[e.originator_id] = max(versions.get(e.originator_id, 0), e.originator_version)
    return versions
