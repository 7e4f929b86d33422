"""Reading the event log for the views: pages in commit order, and aggregates as of a page.

Writers lock the events table, so positions (notification ids) commit in order: everything
at or below the highest committed position is final. A page therefore reads up to a `stop`
taken from the committed head, and gaps (ids of rolled-back inserts) are simply absent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification

from ledger.event_log import EventLog
from projections.view import Event

T = TypeVar("T")


# Positions one query of a page may cover (at least ten pages' worth). Without statistics on
# the events table (after a bulk load, before autovacuum analyzes it, or with autovacuum
# off), PostgreSQL answers `after < position <= stop ... LIMIT n` by reading and sorting every
# row up to `stop`, so a view catching up N events read O(N²) rows (bench/README.md). In
# windows, a page costs the same however far behind the view is, whatever the plan.
SCAN_WINDOW = 10_000


def read_page(
    log: EventLog, after: int, stop: int, limit: int, topics: tuple[str, ...]
) -> list[Event]:
    """Events with `after < position <= stop` of the given topics, oldest first."""
    notifications: list[Notification] = []
    window = max(SCAN_WINDOW, 10 * limit)
    start = after
    while start < stop and len(notifications) < limit:
        end = min(stop, start + window)
        notifications += log.notifications(start + 1, limit - len(notifications), end, topics)
        start = end
    return [
        Event(
            position=n.id,
            originator_id=n.originator_id,
            originator_version=n.originator_version,
            topic=n.topic,
            event=log.decode(n),
        )
        for n in notifications
    ]


def aggregates_at(
    log: EventLog, versions: dict[UUID, int], page: Sequence[Event] = ()
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
    for stored in log.events_of(missing):
        aggregate_id = cast(UUID, stored.originator_id)
        if stored.originator_version <= versions[aggregate_id]:
            result[aggregate_id] = log.decode(stored).mutate(result.get(aggregate_id))
    # In the order of their ids, as the query alone returned them.
    return dict(sorted(result.items()))


def states_at(
    log: EventLog, wanted: dict[UUID, set[int]], pick: Callable[[Any], T]
) -> dict[tuple[UUID, int], T]:
    """What `pick` reads from each aggregate as of each wanted version, in one query.

    For facts that belong to the moment of an event (e.g. the customer a sale named when it
    was refunded): a view that read them from the page's latest version instead would give
    different answers depending on where the pages happen to end.
    """
    result: dict[tuple[UUID, int], T] = {}
    aggregates: dict[UUID, Aggregate | None] = {}
    for stored in log.events_of(list(wanted)):
        aggregate_id, version = cast(UUID, stored.originator_id), stored.originator_version
        if version > max(wanted[aggregate_id]):
            continue
        aggregates[aggregate_id] = log.decode(stored).mutate(aggregates.get(aggregate_id))
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
