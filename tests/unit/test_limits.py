"""Caps on long-lived calls, the shared watch that parked calls wait on, and the idle limit
on client streams (no I/O: threads and queues only)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain.errors import ResourceExhausted, ShuttingDown, StreamIdle
from ledger.limits import GONE_CHECK_SECONDS, Slots, Watch, caller_gone, idle_limited


def test_slots_refuse_beyond_the_merchants_cap_then_the_servers() -> None:
    slots = Slots("event streams", "STREAMS_EXHAUSTED", total=3, per_merchant=2)
    with slots.held("m1"), slots.held("m1"):
        with pytest.raises(ResourceExhausted) as merchant, slots.held("m1"):
            pass
        with slots.held("m2"), pytest.raises(ResourceExhausted) as server, slots.held("m3"):
            pass
    assert merchant.value.reason == "STREAMS_EXHAUSTED"
    assert merchant.value.metadata == {"limit": "2", "scope": "merchant"}
    assert server.value.metadata == {"limit": "3", "scope": "server"}
    assert "at most 3 event streams" in server.value.message
    assert slots.in_use == 0


@given(st.lists(st.sampled_from(["a", "b", "c"]), max_size=30))
def test_slots_never_hold_more_than_their_caps(merchants: list[str]) -> None:
    slots = Slots("waits", "WAITS_EXHAUSTED", total=5, per_merchant=2)
    held: list[str] = []
    with_slots = []
    for merchant in merchants:
        cm = slots.held(merchant)
        try:
            cm.__enter__()
        except ResourceExhausted:
            assert len(held) == 5 or held.count(merchant) == 2
            continue
        held.append(merchant)
        with_slots.append(cm)
        assert len(held) <= 5
        assert held.count(merchant) <= 2
    for cm in with_slots:
        cm.__exit__(None, None, None)
    assert slots.in_use == 0


def test_one_reader_serves_every_waiter() -> None:
    reads = 0
    value = 0
    lock = threading.Lock()

    def read(_: int | None) -> int:
        nonlocal reads
        with lock:
            reads += 1
            return value

    watch: Watch[int] = Watch("test", read, 0.01, threading.Event())
    woken: list[bool] = []

    def waiter() -> None:
        woken.append(watch.wait(lambda v: v >= 5, 5.0))

    threads = [threading.Thread(target=waiter) for _ in range(50)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    reads_while_parked = reads
    with lock:
        value = 5
    for t in threads:
        t.join(5)
    assert woken == [True] * 50
    # ~20 reads in 0.2 s, whatever the number of waiters (50 pollers would be ~1,000).
    assert reads_while_parked < 60


def test_a_wait_times_out_false_and_an_idle_watch_stops_reading() -> None:
    reads = 0

    def read(_: int | None) -> int:
        nonlocal reads
        reads += 1
        return 0

    watch: Watch[int] = Watch("test", read, 0.01, threading.Event())
    assert watch.wait(lambda v: v > 0, 0.1) is False
    time.sleep(0.05)
    after_last_wait = reads
    time.sleep(0.2)
    assert reads <= after_last_wait + 1


def test_a_failing_read_is_retried_and_waiters_wait_on() -> None:
    results: list[int | Exception] = [RuntimeError("db down"), RuntimeError("db down"), 7]

    def read(_: int | None) -> int:
        result = results.pop(0) if len(results) > 1 else results[0]
        if isinstance(result, Exception):
            raise result
        return result

    watch: Watch[int] = Watch("test", read, 0.01, threading.Event())
    assert watch.wait(lambda v: v == 7, 2.0) is True


def test_stopping_wakes_every_waiter_with_shutting_down() -> None:
    stopping = threading.Event()
    watch: Watch[int] = Watch("test", lambda _: 0, 0.01, stopping)
    errors: list[ShuttingDown] = []

    def waiter() -> None:
        try:
            watch.wait(lambda v: v > 0, 30.0)
        except ShuttingDown as e:
            errors.append(e)

    threads = [threading.Thread(target=waiter) for _ in range(10)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    started = time.monotonic()
    stopping.set()
    watch.wake_all()
    for t in threads:
        t.join(5)
    assert time.monotonic() - started < 1.0
    assert len(errors) == 10
    assert all(e.reason == "SERVER_SHUTTING_DOWN" for e in errors)


def _trickle(
    items: list[int], gap: float, then_hang: threading.Event | None = None
) -> Iterator[int]:
    for item in items:
        time.sleep(gap)
        yield item
    if then_hang is not None:
        then_hang.wait()


def test_a_stream_that_keeps_sending_is_passed_through() -> None:
    assert list(idle_limited(_trickle([1, 2, 3], 0.05), 1.0, threading.Event())) == [1, 2, 3]


def test_a_stream_silent_for_the_idle_limit_ends_with_stream_idle() -> None:
    hang = threading.Event()
    got: list[int] = []
    started = time.monotonic()
    with pytest.raises(StreamIdle) as info:
        got.extend(idle_limited(_trickle([1, 2], 0.05, hang), 0.3, threading.Event()))
    hang.set()
    assert got == [1, 2]
    assert 0.3 <= time.monotonic() - started < 2.0
    assert info.value.metadata == {"idle_seconds": "0.3"}


def test_a_stream_ends_with_shutting_down_when_the_server_stops() -> None:
    hang = threading.Event()
    stopping = threading.Event()
    threading.Timer(0.2, stopping.set).start()
    with pytest.raises(ShuttingDown):
        list(idle_limited(_trickle([], 0, hang), 30.0, stopping))
    hang.set()


def test_an_error_of_the_stream_reaches_the_caller() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("bad message")

    got: list[int] = []
    with pytest.raises(ValueError, match="bad message"):
        got.extend(idle_limited(broken(), 1.0, threading.Event()))
    assert got == [1]


def test_a_wait_whose_caller_has_gone_gives_up_within_a_second() -> None:
    watch: Watch[int] = Watch("test", lambda _: 0, 0.01, threading.Event())
    gone = threading.Event()
    threading.Timer(0.2, gone.set).start()
    token = caller_gone.set(gone.is_set)
    try:
        started = time.monotonic()
        assert watch.wait(lambda v: v > 0, 30.0) is False
    finally:
        caller_gone.reset(token)
    assert time.monotonic() - started < 0.2 + GONE_CHECK_SECONDS + 0.5
