"""How far each view is: its generation, position, lag in events and in seconds."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL

from ledger.event_log import EventLog
from projections import source
from projections.registry import Registry


@dataclass(frozen=True)
class ViewStatus:
    view: str
    generation: int
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    rebuilding: bool


def view_statuses(log: EventLog, registry: Registry, views: Iterable[str]) -> list[ViewStatus]:
    """The status of these views (registered already), in the order of their names."""
    stop = log.head()
    result = []
    with psycopg.connect(log.url, row_factory=dict_row) as conn, conn.cursor() as curs:
        for row in registry.rows(curs, views):
            curs.execute(
                SQL("SELECT count(*) AS n FROM {} WHERE notification_id > %s").format(
                    log.events_table
                ),
                (row["position"],),
            )
            lag = curs.fetchone()
            result.append(
                ViewStatus(
                    view=row["view"],
                    generation=row["generation"],
                    position=row["position"],
                    head=stop,
                    lag_events=int(lag["n"]) if lag else 0,
                    lag_seconds=lag_seconds(log, row["position"], stop),
                    rebuilding=row["rebuild_generation"] is not None,
                )
            )
    return result


def lag_seconds(log: EventLog, position: int, stop: int) -> float:
    """Age of the oldest event a view at `position` has not applied yet (0 when caught up)."""
    events = source.read_page(log, position, stop, 1, ())
    if not events:
        return 0.0
    recorded: datetime = events[0].event.timestamp
    return max(0.0, (datetime.now(UTC) - recorded).total_seconds())
