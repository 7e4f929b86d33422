"""Watching the database from a running server: health follows the store.

A `StoreMonitor` probes PostgreSQL on a connection of its own every `interval` seconds. A
probe that fails, or that has no answer within `probe_timeout` (a paused server answers
nothing, and nothing on the client side would ever end the wait), marks the store
unavailable: the gate closes, so every call that needs a connection fails at once with
`StoreUnavailable` instead of waiting, and listeners (health) hear about it. When a probe
succeeds again the pool is renewed, so the first command afterwards gets a live connection,
then the gate opens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import psycopg
import structlog
from eventsourcing.postgres import PostgresDatastore

from ledger.store import StoreGate, renew_pool

log = structlog.get_logger("posledger.store")

PROBE_INTERVAL_SECONDS = 0.5
PROBE_TIMEOUT_SECONDS = 1.0

Listener = Callable[[bool], None]


class StoreMonitor:
    def __init__(
        self,
        url: str,
        datastore: PostgresDatastore,
        gate: StoreGate,
        *,
        interval: float = PROBE_INTERVAL_SECONDS,
        probe_timeout: float = PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        self.datastore = datastore
        self.gate = gate
        self.interval = interval
        self.probe_timeout = probe_timeout
        self.listeners: list[Listener] = []
        self.available = True
        self.down_since: float | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._probing: Future[None] | None = None
        self._prober = ThreadPoolExecutor(1, thread_name_prefix="store-probe")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-monitor", daemon=True)

    @classmethod
    def for_ledger(cls, ledger: Any, **kwargs: Any) -> StoreMonitor:
        return cls(
            ledger.database_url, ledger.ledger_recorder.datastore, ledger.store_gate, **kwargs
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + self.probe_timeout + 1)
        self._prober.shutdown(wait=False, cancel_futures=True)
        conn, self._conn = self._conn, None
        if conn is not None and (self._probing is None or self._probing.done()):
            conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the monitor must outlive anything a probe does
                log.exception("store_monitor_failed")

    def check(self) -> bool:
        """Probes once, changes state if needed; True while the store answers."""
        error = self._probe()
        if error is None and not self.available:
            try:
                # Fresh connections, so the first command after recovery does not meet a
                # dead one (and the old pool's reconnect backoff does not delay it).
                renew_pool(self.datastore, timeout=max(self.probe_timeout, 1.0))
            except Exception as e:
                error = f"pool not ready: {e}"
        if error is None and not self.available:
            down = time.monotonic() - (self.down_since or time.monotonic())
            self.available, self.down_since = True, None
            self.gate.open()
            log.warning("store_available", down_seconds=round(down, 2))
            self._tell(True)
        elif error is not None and self.available:
            self.available, self.down_since = False, time.monotonic()
            self.gate.close()
            log.error("store_unavailable", error=error)
            self._tell(False)
        return self.available

    def _tell(self, available: bool) -> None:
        for listener in self.listeners:
            try:
                listener(available)
            except Exception:
                log.exception("store_listener_failed")

    def _probe(self) -> str | None:
        """None if the database answered in time, else what went wrong."""
        if self._probing is not None and not self._probing.done():
            return "the previous probe has had no answer yet"
        self._probing = self._prober.submit(self._select_one)
        try:
            self._probing.result(timeout=self.probe_timeout)
        except FutureTimeout:
            return f"no answer within {self.probe_timeout:g} s"
        except Exception as e:
            return str(e).strip() or type(e).__name__
        return None

    def _select_one(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True)
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise
