"""What a view is: its tables, the events it reads, and how a page of events changes its rows.

Each view keeps its tables in a schema of their own per *generation*
(`<base>__<view>_<generation>`), so a rebuild can fill a new generation while queries read
the live one, and the switch is one update of the registry row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier


@dataclass(frozen=True)
class Event:
    """A decoded event at its position in the log."""

    position: int
    originator_id: Any
    originator_version: int
    topic: str
    event: Any  # the domain event object


class View:
    """A read model. Subclasses name their tables' DDL and apply pages of events."""

    name: str = ""
    # The event classes the view reads, and those it leaves alone on purpose: every event
    # class of the domain is one or the other (a test holds each view to it), so a new event
    # cannot be forgotten. Other events only advance the view's position.
    handles: tuple[type, ...] = ()
    ignores: tuple[type, ...] = ()
    # CREATE statements; `{schema}` is the generation's schema.
    ddl: tuple[str, ...] = ()
    # Tables compared by `rebuild --verify`, with the columns that identify a row.
    tables: tuple[str, ...] = ()

    @property
    def topics(self) -> tuple[str, ...]:
        """The stored topics of the events the view reads."""
        return tuple(cls.TOPIC for cls in self.handles)  # type: ignore[attr-defined]

    def create(self, curs: Cursor[DictRow], schema: str) -> None:
        for statement in self.ddl:
            curs.execute(SQL(statement).format(schema=Identifier(schema)))

    def apply(self, curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        """Applies a page of events, in log order, inside the caller's transaction."""
        raise NotImplementedError


def q(statement: str, schema: str) -> Composed:
    """A statement of a view with its generation's schema filled in."""
    return SQL(statement).format(schema=Identifier(schema))


def copy_rows(
    curs: Cursor[DictRow], schema: str, table: str, rows: Sequence[dict[str, Any]]
) -> None:
    """Inserts rows (dicts keyed by exactly the table's columns) with one COPY.

    For the plain inserts of a page (order lines, stock movements): `executemany` sends an
    INSERT per row, and its per-row work in psycopg was the largest single cost of catch-up.
    """
    if not rows:
        return
    columns = list(rows[0])
    statement = SQL("COPY {} ({}) FROM STDIN").format(
        Identifier(schema, table), SQL(", ").join(Identifier(c) for c in columns)
    )
    with curs.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])
