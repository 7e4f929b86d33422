"""Where a query reads: the live generation of a view that is followed and has reached the
caller's own write (`min_position`), safe against a rebuild switching generations.

What each query reads (its filters and keyset pages) is in `queries.py`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from eventsourcing.persistence import ProgrammingError
from psycopg import Cursor
from psycopg.errors import InvalidSchemaName, UndefinedTable
from psycopg.rows import DictRow

from ledger.domain.errors import NotYetVisible, ViewsNotRunning
from ledger.domain.validation import Checks
from ledger.limits import Slots, Watch
from projections.runner import Projections

FOLLOWED_CACHE_SECONDS = 1.0  # how long a query trusts the last look at who runs the views
P = ParamSpec("P")
R = TypeVar("R")


def switch_safe(query: Callable[P, R]) -> Callable[P, R]:
    """Runs a query again if a rebuild dropped the generation it had just looked up."""

    @functools.wraps(query)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for _ in range(2):
            try:
                return query(*args, **kwargs)
            except ProgrammingError as e:
                if not isinstance(e.__cause__, (UndefinedTable, InvalidSchemaName)):
                    raise
        return query(*args, **kwargs)

    return run


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_page_token: str
    position: int
    # Extra rows by key, e.g. the line items of each sale.
    related: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)


class ViewReader:
    def __init__(
        self,
        projections: Projections,
        *,
        wait_seconds: float = 5.0,
        require_runner: bool = False,
        waits: Slots | None = None,
        positions: Watch[dict[str, int]] | None = None,
    ) -> None:
        self.projections = projections
        self.wait_seconds = wait_seconds
        # A served query that has to wait for its view takes one of the capped wait slots,
        # and waits on the server's shared watch of the views instead of polling each.
        self.waits = waits
        self.positions = positions
        self.datastore = projections.datastore
        # Served queries refuse to read a view that no runner follows (a stale page that
        # looks current); tests and tools that catch views up themselves may read anyway.
        self.require_runner = require_runner
        self._followed: tuple[float, set[str]] = (0.0, set())

    @contextmanager
    def view(
        self, merchant_id: str, view: str, min_position: int
    ) -> Iterator[tuple[Cursor[DictRow], str, int]]:
        """A cursor on the view's live generation: its schema and the position it reached."""
        if min_position < 0:
            checks = Checks()
            checks.fail("min_position", "must not be negative")
            checks.raise_if_any()
        self._check_followed(view)
        if min_position and not self._reached(merchant_id, view, min_position):
            raise NotYetVisible(
                f"the {view} view has not reached position {min_position} yet; retry shortly"
            )
        schema, position = self.projections.live_schema(view)
        with self.datastore.transaction() as curs:
            yield curs, schema, position

    def _check_followed(self, view: str) -> None:
        if not self.require_runner:
            return
        checked_at, followed = self._followed
        if time.monotonic() - checked_at > FOLLOWED_CACHE_SECONDS or view not in followed:
            followed = self.projections.followed()
            self._followed = (time.monotonic(), followed)
        if view not in followed:
            raise ViewsNotRunning(
                f"no projections runner keeps the {view} view up to date; start one "
                "(`posledger serve` runs them unless --no-projections, or "
                "`posledger projections run`)"
            )

    def _reached(self, merchant_id: str, view: str, min_position: int) -> bool:
        if self.positions is None or self.waits is None:
            return self.projections.wait_for(view, min_position, self.wait_seconds)
        if self.projections.live_schema(view)[1] >= min_position:
            return True  # no need to park
        with self.waits.held(merchant_id):
            return self.positions.wait(
                lambda positions: positions.get(view, 0) >= min_position, self.wait_seconds
            )
