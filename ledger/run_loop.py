"""The loop the long-running workers share: work until stopped, outliving a lost database.

The deliveries sender and the expiry worker both keep going through an outage: a store
error is logged, waited out with a backoff and tried again; a bug is logged with its
traceback and either ends the worker or is tried again, as the worker says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog

log = structlog.get_logger("posledger.run_loop")


@dataclass(frozen=True)
class Backoff:
    """Waits after failures in a row: `first`, doubling, at most `most` (the projections
    runner's numbers, so every follower comes back at the same pace)."""

    first: float = 0.5
    most: float = 5.0

    def after(self, delay: float | None) -> float:
        """The wait after one that lasted `delay` (None: the first failure)."""
        return self.first if delay is None else min(delay * 2, self.most)


def run_until_stopped(
    stop: threading.Event,
    attempt: Callable[[], object],
    *,
    name: str,
    is_transient: Callable[[BaseException], bool],
    interval: float = 0.0,
    retry_bugs: bool = False,
    backoff: Backoff = Backoff(),
    wait: Callable[[float], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Calls `attempt` until `stop` is set, waiting `interval` after each that returns.

    An error `is_transient` says the database caused logs `<name>_reconnecting` and waits
    per `backoff`; so does any other error when `retry_bugs` (logged `<name>_failed` with
    its traceback), else it is raised. The backoff starts again after an attempt that
    returned, or that ran longer than the longest wait before it failed (it had recovered).
    `wait` defaults to `stop.wait`; tests give a fake one and a fake `clock`.
    """
    wait = wait or stop.wait
    delay: float | None = None
    while not stop.is_set():
        started = clock()
        try:
            attempt()
        except Exception as e:
            if clock() - started >= backoff.most:
                delay = None  # it had been up for a while: this is a new outage
            delay = backoff.after(delay)
            if is_transient(e):
                log.warning(f"{name}_reconnecting", error=str(e).strip(), delay=delay)
            elif retry_bugs:
                log.exception(f"{name}_failed", delay=delay)
            else:
                raise
            wait(delay)
        else:
            delay = None
            if interval > 0:
                wait(interval)


@contextmanager
def in_background(
    name: str, run: Callable[[threading.Event], object], join_seconds: float = 15.0
) -> Iterator[threading.Event]:
    """Runs `run(stop)` in a daemon thread for the duration of the block, then sets `stop`
    and waits up to `join_seconds` for it to end."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(join_seconds)
