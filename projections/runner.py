"""The views of one ledger database, and what keeps them current: one object for callers.

Each job lives in a module of its own: the registry table (`registry.py`), following the
log with standby and reconnect (`follow.py`), rebuilding into a new generation
(`rebuild.py`) and status (`status.py`). This class holds the views and hands each job
what it needs; it reads the log through `EventLog` only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from ledger.event_log import EventLog
from projections import follow
from projections.follow import RunnerState
from projections.rebuild import RebuildReport, rebuild_view
from projections.registry import Registry
from projections.status import ViewStatus, view_statuses
from projections.view import View


class Projections:
    """The views of one ledger database and the registry that tracks them."""

    # Its log events: projections_connected, projection_holding, …
    log_names = ("projections", "projection")
    # Views apply each commit at once (queries read their writes); a follower that need not
    # hurry waits this long after a wake-up, so one page takes many commits.
    batch_seconds = 0.0

    def __init__(self, log: EventLog, views: Sequence[View]) -> None:
        self.log = log
        self.views = {v.name: v for v in views}
        self.datastore = log.datastore
        self.base = log.schema
        self.url = log.url
        self.registry = Registry(log)
        self.follower = follow.Follower(
            log, self.registry, self.views, names=self.log_names, batch_seconds=self.batch_seconds
        )

    @property
    def state(self) -> RunnerState:
        """What this process's follower of these views is doing."""
        return self.follower.state

    def ensure(self) -> None:
        """Creates the registry and each view's live generation if missing."""
        self.registry.ensure(self.views.values())

    def live_schema(self, view: str) -> tuple[str, int]:
        """The schema queries read for `view`, and the position it has reached."""
        return self.registry.live_schema(view)

    def positions(self) -> dict[str, int]:
        return self.registry.positions()

    def wait_for(self, view: str, position: int, timeout: float) -> bool:
        """Waits until `view` has applied the log up to `position`; False on timeout."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            if self.live_schema(view)[1] >= position:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    # ---- following --------------------------------------------------------------------------

    def step(self, view: View, page_size: int = follow.CATCH_UP_PAGE) -> int:
        """Applies the next page of events to the live view; returns how many it read."""
        return follow.step(self.log, self.registry, view, page_size)

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Follows the log for every view this process can hold, until `stop` is set."""
        self.follower.run(stop, on_ready)

    def followed(self) -> set[str]:
        """The views some runner (of any process) holds right now."""
        return follow.followed(self.log, self.views)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Runs every view in a background thread for the duration of the block."""
        stop = threading.Event()
        ready = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop, ready.set), name="projections", daemon=True
        )
        thread.start()
        ready.wait(30)
        try:
            yield
        finally:
            stop.set()
            thread.join(10)

    # ---- rebuild and status -----------------------------------------------------------------

    def rebuild(
        self,
        name: str,
        *,
        verify: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> RebuildReport:
        """Rebuilds `name` from the start of the log into a new generation, then switches."""
        self.ensure()
        return rebuild_view(
            self.log, self.registry, self.views[name], verify=verify, progress=progress
        )

    def status(self) -> list[ViewStatus]:
        self.ensure()
        return view_statuses(self.log, self.registry, self.views)
