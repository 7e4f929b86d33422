"""The workers' shared loop: backoff after store errors, bugs raised or retried, the
interval after a pass (no I/O: a fake clock and a fake wait that records what it slept)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
import structlog

from ledger.run_loop import Backoff, in_background, run_until_stopped


class StoreDown(Exception):
    pass


class Bug(Exception):
    pass


def is_transient(error: BaseException) -> bool:
    return isinstance(error, StoreDown)


class Script:
    """An attempt that plays `outcomes` in order (an exception to raise, or a number of
    seconds it runs before it returns), then stops the loop. Time passes only on the fake
    clock: by each outcome's seconds and by every wait."""

    def __init__(self, outcomes: Sequence[Exception | float], runs_for: float = 0.0) -> None:
        self.outcomes = list(outcomes)
        self.stop = threading.Event()
        self.now = 0.0
        self.waits: list[float] = []
        self.calls = 0
        self.runs_for = runs_for  # how long each failing attempt runs before it fails

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return self.stop.is_set()

    def attempt(self) -> None:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if not self.outcomes:
            self.stop.set()
        if isinstance(outcome, Exception):
            self.now += self.runs_for
            raise outcome
        self.now += outcome

    def run(self, **kwargs: object) -> None:
        run_until_stopped(
            self.stop,
            self.attempt,
            name="worker",
            is_transient=is_transient,
            wait=self.wait,
            clock=self.clock,
            **kwargs,  # type: ignore[arg-type]
        )


def test_store_errors_in_a_row_wait_longer_each_time_up_to_the_cap() -> None:
    script = Script([StoreDown()] * 6 + [0.0])
    script.run(backoff=Backoff(first=0.5, most=5.0))
    assert script.waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert script.calls == 7


def test_a_pass_that_returns_starts_the_backoff_again() -> None:
    script = Script([StoreDown(), StoreDown(), 0.0, StoreDown(), 0.0])
    script.run(backoff=Backoff(first=0.5, most=5.0), interval=1.0)
    assert script.waits == [0.5, 1.0, 1.0, 0.5, 1.0]


def test_an_attempt_that_ran_a_while_before_failing_is_a_new_outage() -> None:
    # Each attempt runs 6 s (longer than the longest wait) before the store fails it.
    script = Script([StoreDown(), StoreDown(), StoreDown(), 0.0], runs_for=6.0)
    script.run(backoff=Backoff(first=0.5, most=5.0))
    assert script.waits == [0.5, 0.5, 0.5]


def test_a_bug_is_raised_unless_the_worker_retries_bugs() -> None:
    script = Script([StoreDown(), Bug("boom"), 0.0])
    with pytest.raises(Bug):
        script.run()
    assert script.calls == 2

    retried = Script([Bug("boom"), Bug("boom"), 0.0])
    retried.run(retry_bugs=True, backoff=Backoff(first=0.5, most=5.0))
    assert retried.calls == 3
    assert retried.waits == [0.5, 1.0]


def test_each_failure_is_logged_with_its_wait() -> None:
    script = Script([StoreDown("connection refused"), Bug("boom"), 0.0])
    with structlog.testing.capture_logs() as logs:
        script.run(retry_bugs=True, backoff=Backoff(first=0.5, most=5.0))
    assert [(e["event"], e["log_level"], e["delay"]) for e in logs] == [
        ("worker_reconnecting", "warning", 0.5),
        ("worker_failed", "error", 1.0),
    ]
    assert logs[0]["error"] == "connection refused"


def test_the_interval_follows_each_pass_and_a_set_stop_ends_the_loop_at_once() -> None:
    script = Script([0.0, 0.0, 0.0])
    script.run(interval=2.0)
    assert script.waits == [2.0, 2.0, 2.0]

    stopped = Script([0.0])
    stopped.stop.set()
    stopped.run()
    assert stopped.calls == 0


def test_in_background_runs_until_the_block_ends() -> None:
    seen: list[str] = []
    started = threading.Event()

    def run(stop: threading.Event) -> None:
        seen.append(threading.current_thread().name)
        started.set()
        stop.wait(10)
        seen.append("stopped")

    with in_background("worker", run) as stop:
        assert started.wait(5)
        assert not stop.is_set()
    assert stop.is_set()
    assert seen == ["worker", "stopped"]
