"""The registry of views: one row per view in `<base>.projection_views`, and its SQL.

A row names the view's live generation (the schema queries read), the log position that
generation has applied, and a rebuild's shadow generation and its progress. A page of
events and the row's new position commit in one transaction, so a view's tables and its
position never disagree.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.event_log import EventLog
from ledger.store import schema_lock
from projections.view import View

TABLE = "projection_views"


def view_schema(base: str, view: str, generation: int) -> str:
    return f"{base}__{view}_{generation}"


def lock_key(base: str, name: str) -> int:
    """The advisory lock that holds `name` (a view, or `<view>:rebuild`) of one ledger."""
    return zlib.crc32(f"posledger-view:{base}:{name}".encode()) - 2**31


class Registry:
    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.base = log.schema
        self.table = Identifier(self.base, TABLE)

    def ensure(self, views: Iterable[View]) -> None:
        """Creates the registry and each view's row and live generation if missing."""
        with (
            schema_lock(self.log.url, self.base),
            self.log.datastore.transaction(commit=True) as curs,
        ):
            self.create(curs)
            for view in views:
                self.register(curs, view.name)
                self.create_generation(curs, view, self.row(curs, view.name)["generation"])

    def create(self, curs: Cursor[DictRow]) -> None:
        curs.execute(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " view text PRIMARY KEY,"
                " generation int NOT NULL DEFAULT 1,"
                " position bigint NOT NULL DEFAULT 0,"
                " applied_at timestamptz,"
                " rebuild_generation int,"
                " rebuild_position bigint)"
            ).format(self.table)
        )

    def register(self, curs: Cursor[DictRow], view: str, position: int = 0) -> None:
        """A row for `view` starting at `position`, unless it has one already."""
        curs.execute(
            SQL("INSERT INTO {} (view, position) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
                self.table
            ),
            (view, position),
        )

    def create_generation(self, curs: Cursor[DictRow], view: View, generation: int) -> str:
        schema = view_schema(self.base, view.name, generation)
        curs.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(schema)))
        view.create(curs, schema)
        return schema

    def row(self, curs: Cursor[DictRow], view: str, *, lock: bool = False) -> DictRow:
        statement = SQL("SELECT * FROM {} WHERE view = %s").format(self.table)
        if lock:
            statement += SQL(" FOR UPDATE")
        curs.execute(statement, (view,))
        row = curs.fetchone()
        assert row is not None, f"view {view} is not registered"
        return row

    def rows(self, curs: Cursor[DictRow], views: Iterable[str]) -> list[DictRow]:
        """The rows of these views (others, such as the outbox's, share the table)."""
        curs.execute(
            SQL("SELECT * FROM {} WHERE view = ANY(%s) ORDER BY view").format(self.table),
            (list(views),),
        )
        return curs.fetchall()

    def live_schema(self, view: str) -> tuple[str, int]:
        """The schema queries read for `view`, and the position it has reached."""
        with self.log.datastore.transaction() as curs:
            row = self.row(curs, view)
        return view_schema(self.base, view, row["generation"]), row["position"]

    def positions(self) -> dict[str, int]:
        """How far each view has applied the log (one query for every parked wait)."""
        with self.log.datastore.transaction() as curs:
            curs.execute(SQL("SELECT view, position FROM {}").format(self.table))
            return {row["view"]: row["position"] for row in curs.fetchall()}

    def advance(self, curs: Cursor[DictRow], view: str, position: int) -> None:
        curs.execute(
            SQL("UPDATE {} SET position = %s, applied_at = now() WHERE view = %s").format(
                self.table
            ),
            (position, view),
        )

    def start_rebuild(self, curs: Cursor[DictRow], view: str, generation: int) -> None:
        curs.execute(
            SQL(
                "UPDATE {} SET rebuild_generation = %s, rebuild_position = 0 WHERE view = %s"
            ).format(self.table),
            (generation, view),
        )

    def advance_rebuild(self, curs: Cursor[DictRow], view: str, position: int) -> None:
        curs.execute(
            SQL("UPDATE {} SET rebuild_position = %s WHERE view = %s").format(self.table),
            (position, view),
        )

    def switch(self, curs: Cursor[DictRow], view: str, generation: int, position: int) -> None:
        """Points queries at the rebuilt generation, which has applied up to `position`."""
        curs.execute(
            SQL(
                "UPDATE {} SET generation = %s, position = %s, applied_at = now(),"
                " rebuild_generation = NULL, rebuild_position = NULL WHERE view = %s"
            ).format(self.table),
            (generation, position, view),
        )
