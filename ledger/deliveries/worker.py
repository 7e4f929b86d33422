"""Running deliveries: the outbox follower and the senders, in one worker or in `serve`.

The follower is a projections runner over the outbox view: one process follows at a time
(an advisory lock; others stand by and take over when its session ends). Senders run in
every worker and share the due rows through leases, so a worker killed mid-delivery only
delays its leased rows until the lease runs out.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import psycopg
import structlog
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.deliveries.outbox import OutboxView
from ledger.deliveries.relay import RelayFollower, RelayView
from ledger.deliveries.sender import Sender
from ledger.deliveries.store import NOTIFY_CHANNEL, Delivery, DeliveryStore, Outcome
from ledger.run_loop import in_background, run_until_stopped
from ledger.store import schema_lock, wait_for_notify
from projections.follow import is_store_error
from projections.runner import Projections

log = structlog.get_logger("posledger.deliveries")

SEND_BATCH_SECONDS = 0.1  # after a wake-up, so one claim takes the rows of many commits


class OutboxFollower(Projections):
    """The projections runner over the outbox alone, logging under its own name."""

    log_names = ("outbox", "outbox")
    # A page per commit cost served commands ~2 ms of CPU each in `serve` (bench/README.md);
    # a callback a quarter of a second later costs them next to nothing.
    batch_seconds = 0.25


class Deliveries:
    """The outbox follower, the relay (when NATS is configured) and the senders, run
    together; `ledger.bootstrap.build_deliveries` builds them."""

    def __init__(
        self,
        ledger: Ledger,
        store: DeliveryStore,
        outbox: OutboxFollower,
        relay: RelayFollower | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.ledger = ledger
        self.settings = ledger.settings
        self.store = store
        self.outbox = outbox
        self.relay = relay
        self._sender = sender
        # Longer than any one attempt can take, so a live sender keeps what it claimed.
        self.lease_seconds = 2 * self.settings.delivery_timeout_seconds + 5

    @property
    def sender(self) -> Sender:
        # Made on first use: `deliveries status` and the metrics never send.
        if self._sender is None:
            self._sender = Sender(self.settings)
        return self._sender

    def ensure(self) -> None:
        """Creates the tables; a new outbox starts at the head of the log.

        What happened before deliveries were first set up is not sent: a ledger with years
        of history would otherwise call every old payment's callback on first start.
        """
        base = self.outbox.base
        with (
            schema_lock(self.ledger.database_url, base),
            self.store.datastore.transaction(commit=True) as curs,
        ):
            self.store.create_tables(curs)
            self.outbox.registry.create(curs)
            # Each follower starts at the head when it is first set up (the relay: when NATS
            # is first configured), not at the start of a long history.
            for name in ["outbox", *([RelayView.name] if self.relay else [])]:
                self.outbox.registry.register(curs, name, self.outbox.log.head())
        self.outbox.ensure()
        if self.relay is not None:
            self.relay.ensure()

    # ---- running ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Follows the outbox and sends until `stop` is set."""
        self.ensure()
        follower = threading.Thread(
            target=self.outbox.run, args=(stop,), name="outbox", daemon=True
        )
        follower.start()
        relay = None
        if self.relay is not None:
            relay = threading.Thread(target=self.relay.run, args=(stop,), name="relay", daemon=True)
            relay.start()
        try:
            self._send_loop(stop)
        finally:
            stop.set()
            follower.join(10)
            if relay is not None and self.relay is not None:
                relay.join(10)
                for view in self.relay.views.values():
                    assert isinstance(view, RelayView)
                    view.publisher.close()
            self.sender.close()

    def _send_loop(self, stop: threading.Event) -> None:
        with ThreadPoolExecutor(self.settings.delivery_concurrency, "delivery") as pool:

            def send_while_connected() -> None:
                with psycopg.connect(self.ledger.database_url, autocommit=True) as listener:
                    listener.execute(SQL("LISTEN {}").format(Identifier(NOTIFY_CHANNEL)))
                    while not stop.is_set():
                        if not self.send_due(pool):
                            # Woken by new rows; the timeout picks up retries coming due.
                            wait_for_notify(listener, stop, timeout=0.5)
                            stop.wait(SEND_BATCH_SECONDS)  # claim many rows at once

            run_until_stopped(
                stop, send_while_connected, name="deliveries", is_transient=is_store_error
            )

    def send_due(self, pool: ThreadPoolExecutor) -> int:
        """Sends one batch of due deliveries at once and records their attempts together;
        returns how many it claimed."""
        claimed = self.store.claim(self.settings.delivery_concurrency, self.lease_seconds)
        attempts: list[tuple[Delivery, Outcome]] = []
        for d, future in [(d, pool.submit(self.sender.send, d, d.secret)) for d in claimed]:
            try:
                attempts.append((d, future.result()))
            except Exception:
                # Not recorded: the lease runs out and the delivery is sent again later.
                log.exception("delivery_attempt_failed", delivery_id=str(d.delivery_id))
        lost = self.store.record(attempts)
        for d, outcome in attempts:
            if d.delivery_id in lost:
                log.warning("delivery_lease_lost", delivery_id=str(d.delivery_id))
            log.info(
                "delivery_attempted",
                delivery_id=str(d.delivery_id),
                kind=d.kind,
                result=outcome.status,
                status_code=outcome.status_code,
                error=outcome.error,
                attempt=d.attempts + 1,
            )
        return len(claimed)

    # ---- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What `posledger deliveries status` shows (and its --json prints)."""
        head = self.outbox.log.head()
        _, position = self.outbox.live_schema(OutboxView.name)
        return {
            "outbox": {
                "position": position,
                "head": head,
                "lag_events": self._lag(position),
                "followed": OutboxView.name in self.outbox.followed(),
            },
            "counts": self.store.counts(),
            "backlog": dict(self.store.backlog() or {}),
            "failures": [
                {k: str(v) if v is not None else "" for k, v in row.items()}
                for row in self.store.recent_failures()
            ],
        }

    def _lag(self, position: int) -> int:
        """Events past the outbox's position that may owe a delivery."""
        table = self.outbox.log.events_table
        with self.store.datastore.transaction() as curs:
            curs.execute(
                SQL(
                    "SELECT count(*) AS n FROM {} WHERE notification_id > %s AND topic = ANY(%s)"
                ).format(table),
                (position, list(OutboxView.topics)),
            )
            row = curs.fetchone()
        return int(row["n"]) if row else 0

    def running(self) -> AbstractContextManager[object]:
        """Runs deliveries in background threads for the duration of the block."""
        return in_background("deliveries", self.run)
