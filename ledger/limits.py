"""Bounds on long-lived calls, so that they never take the threads unary calls need.

Event feeds (StreamEvents), client-streamed imports (ImportSales) and parked
`min_position` waits each hold a server thread while open. Each kind is capped per server
and per merchant (`Slots`); the server sizes its thread pool as those caps plus the
threads reserved for unary calls, so unary calls always find one. Parked calls do not
poll the database each: one `Watch` reads for all of them and wakes them, and wakes them
at once when the server begins to stop (`ShuttingDown`).
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from ledger.domain.errors import ResourceExhausted, ShuttingDown, StreamIdle

log = structlog.get_logger("posledger.limits")

T = TypeVar("T")

# Whether the caller of the current call has gone (cancelled, deadline passed): the server's
# interceptor sets it per call, so a parked call gives its slot back soon after.
caller_gone: contextvars.ContextVar[Callable[[], bool]] = contextvars.ContextVar(
    "caller_gone", default=lambda: False
)
GONE_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """Caps on concurrent long-lived calls (`POSLEDGER_MAX_*`, read in ledger/store/settings.py)."""

    streams: int = 1000
    streams_per_merchant: int = 500
    imports: int = 128
    imports_per_merchant: int = 64
    waits: int = 128
    waits_per_merchant: int = 64
    # An import stream that sends no message for this long ends with STREAM_IDLE.
    import_idle_seconds: float = 30.0

    @property
    def long_lived(self) -> int:
        """Threads the capped calls can hold at once."""
        return self.streams + self.imports + self.waits


class Slots:
    """Open calls of one kind, counted in all and per merchant; refused beyond the caps."""

    def __init__(self, kind: str, reason: str, total: int, per_merchant: int) -> None:
        self.kind = kind
        self.reason = reason
        self.total = total
        self.per_merchant = per_merchant
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    @property
    def in_use(self) -> int:
        return self._open.total()

    def _refuse(self, scope: str, cap: int) -> ResourceExhausted:
        where = "on this server" if scope == "server" else "for this merchant"
        return ResourceExhausted(
            f"at most {cap} {self.kind} may be open at once {where}; close one or retry later",
            reason=self.reason,
            metadata={"limit": str(cap), "scope": scope},
        )

    @contextmanager
    def held(self, merchant_id: str) -> Iterator[None]:
        with self._lock:
            if self._open.total() >= self.total:
                raise self._refuse("server", self.total)
            if self._open[merchant_id] >= self.per_merchant:
                raise self._refuse("merchant", self.per_merchant)
            self._open[merchant_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._open[merchant_id] -= 1
                if not self._open[merchant_id]:
                    del self._open[merchant_id]


class Watch(Generic[T]):
    """One thread reads a value for every caller waiting on it, and wakes them.

    `read(previous)` runs every `interval` seconds while someone waits (it may build on the
    previous value, e.g. scan only what is new). A failed read is logged and retried; the
    waiters keep waiting until their own timeout. When `stopping` is set, `wake_all()`
    makes every waiter raise `ShuttingDown`.
    """

    def __init__(
        self,
        name: str,
        read: Callable[[T | None], T],
        interval: float,
        stopping: threading.Event,
    ) -> None:
        self.name = name
        self._read = read
        self.interval = interval
        self.stopping = stopping
        lock = threading.Lock()
        self._changed = threading.Condition(lock)  # waiters wait on it
        self._wanted = threading.Condition(lock)  # the reader waits on it, while idle
        self._value: T | None = None
        self._waiters = 0
        self._thread: threading.Thread | None = None

    def wake_all(self) -> None:
        with self._changed:
            self._changed.notify_all()
            self._wanted.notify()  # a stopping reader ends

    @property
    def current(self) -> T | None:
        """The last value read (None before the first)."""
        return self._value

    def first(self, timeout: float) -> bool:
        """Waits until some value has been read (False if none came within `timeout`)."""
        return self.wait(lambda _: True, timeout, poll_caller=False)

    def wait(self, ready: Callable[[T], bool], timeout: float, *, poll_caller: bool = True) -> bool:
        """Blocks until `ready(value)` holds (True), or `timeout` passes or the caller goes
        (False). Without `poll_caller` the caller must see to the latter itself (`ready`
        true once it has gone, and `wake_all()` when it goes): hundreds of waiters that
        each woke every second to look would cost unary calls their latency."""
        with self._changed:
            return self._wait(ready, timeout, poll_caller)

    def _wait(self, ready: Callable[[T], bool], timeout: float, poll_caller: bool) -> bool:
        self._waiters += 1
        try:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            # Wake the reader only: waking every waiter each time one arrives would cost
            # hundreds of waiters a wake-up each, per arrival.
            self._wanted.notify()
            gone = caller_gone.get()
            deadline = time.monotonic() + timeout
            done = False
            while not done and not gone():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                done = self._changed.wait_for(
                    lambda: (
                        self.stopping.is_set() or (self._value is not None and ready(self._value))
                    ),
                    min(left, GONE_CHECK_SECONDS) if poll_caller else left,
                )
        finally:
            self._waiters -= 1
        if self.stopping.is_set():
            raise ShuttingDown("the server is shutting down; retry on another server")
        return bool(done)

    def _run(self) -> None:
        failing = False
        while not self.stopping.is_set():
            with self._changed:
                self._wanted.wait_for(lambda: self._waiters > 0 or self.stopping.is_set())
                previous = self._value
            try:
                value = self._read(previous)
            except Exception as e:
                if not failing:
                    log.warning("watch_read_failed", watch=self.name, error=str(e).strip())
                failing = True
            else:
                failing = False
                if value != previous:  # waking hundreds of waiters for nothing costs
                    with self._changed:
                        self._value = value
                        self._changed.notify_all()
            self.stopping.wait(self.interval)


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()
STOP_CHECK_SECONDS = 0.5  # how soon a waiting import notices that the server is stopping


def idle_limited(
    messages: Iterator[T], idle_seconds: float, stopping: threading.Event
) -> Iterator[T]:
    """`messages` (a client stream), ended with `StreamIdle` when the client sends nothing
    for `idle_seconds`, and with `ShuttingDown` when the server begins to stop.

    gRPC's blocking request iterator has no timeout, so a thread of its own reads it, one
    message ahead. Once the call ends, gRPC ends that iterator and the thread with it.
    """
    inbox: queue.Queue[object] = queue.Queue(maxsize=1)
    done = threading.Event()

    def offer(item: object) -> None:
        while not done.is_set():  # once the call has stopped reading, drop it
            try:
                inbox.put(item, timeout=STOP_CHECK_SECONDS)
                return
            except queue.Full:
                continue

    def pump() -> None:
        try:
            for message in messages:
                offer(message)
        except BaseException as e:
            offer(_Failed(e))
        else:
            offer(_END)

    threading.Thread(target=pump, name="stream-reader", daemon=True).start()
    try:
        while True:
            deadline = time.monotonic() + idle_seconds
            while True:
                if stopping.is_set():
                    raise ShuttingDown("the server is shutting down; retry on another server")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StreamIdle(
                        f"no message for {idle_seconds:g} s; the messages before it were processed",
                        metadata={"idle_seconds": f"{idle_seconds:g}"},
                    )
                try:
                    item = inbox.get(timeout=min(left, STOP_CHECK_SECONDS))
                    break
                except queue.Empty:
                    continue
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        done.set()
