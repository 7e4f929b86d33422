"""An optional relay of the same changes to NATS JetStream, for services on a message bus.

The relay follows the log like a view: a page of events is published, every message acked
by JetStream, and only then does the relay's position commit. A relay that dies between
the two publishes the page again; each message's `Nats-Msg-Id` is its change id (log
position and index), so JetStream drops the repeats (within the stream's duplicate window).
Off unless `POSLEDGER_NATS_URL` is set.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Sequence
from typing import Any

from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.deliveries.changes import Change
from ledger.deliveries.outbox import OutboxView, changes_at
from ledger.event_log import EventLog
from projections.runner import Projections
from projections.view import Event, View

PUBLISH_TIMEOUT_SECONDS = 10.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def subject(prefix: str, change: Change) -> str:
    """`<prefix>.<merchant>.<kind>`; characters NATS gives meaning to become `_`."""
    merchant = _UNSAFE.sub("_", change.merchant_id) or "_"
    return f"{prefix}.{merchant}.{change.kind.value.replace('.', '_')}"


class Publisher:
    """A JetStream connection on an event loop of its own, used from the relay's thread."""

    def __init__(self, url: str, stream: str, prefix: str) -> None:
        self.url, self.stream, self.prefix = url, stream, prefix
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nats", daemon=True)
        self.thread.start()
        self.nc: Any = None
        self.js: Any = None

    def _run(self, coroutine: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(PUBLISH_TIMEOUT_SECONDS)

    async def _connect(self) -> None:
        import nats

        self.nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=3)
        self.js = self.nc.jetstream()
        await self.js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])

    async def _publish(self, changes: Sequence[Change]) -> None:
        if self.js is None:
            await self._connect()
        for change in changes:  # in log order, each acked before the next
            await self.js.publish(
                subject(self.prefix, change),
                json.dumps(change.body(), separators=(",", ":"), sort_keys=True).encode(),
                headers={"Nats-Msg-Id": change.id, "Posledger-Merchant": change.merchant_id},
            )

    def publish(self, changes: Sequence[Change]) -> None:
        self._run(self._publish(changes))

    def close(self) -> None:
        if self.nc is not None:
            self._run(self.nc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class RelayView(View):
    name = "nats_relay"
    topics = OutboxView.topics

    def __init__(self, log: EventLog, publisher: Publisher) -> None:
        self.log = log
        self.publisher = publisher

    def create(self, curs: Cursor[DictRow], schema: str) -> None:
        pass  # no tables: its rows are messages on the bus

    def apply(self, curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        changes = changes_at(self.log, events)
        if changes:
            self.publisher.publish(changes)  # raises: the page rolls back and is tried again


class RelayFollower(Projections):
    log_names = ("nats_relay", "nats_relay")
