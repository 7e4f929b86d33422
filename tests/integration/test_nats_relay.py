"""The relay to NATS JetStream (127.0.0.1:4222 here), on a stream of the test's own."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.bootstrap import build_deliveries
from ledger.deliveries.relay import RelayView
from ledger.deliveries.worker import Deliveries
from ledger.store import Settings
from tests.integration.conftest import approved_by_card, ctx, sale_with_pending_payment

NATS_URL = "nats://127.0.0.1:4222"


def nats_is_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def _nats() -> None:
    """NATS runs on this machine kind; in CI its absence fails loudly, elsewhere it skips."""
    if not nats_is_up():
        if os.environ.get("CI"):
            pytest.fail("CI needs the NATS server on 127.0.0.1:4222", pytrace=False)
        pytest.skip("no NATS server on 127.0.0.1:4222")


async def _messages(stream: str, subject: str) -> list[Any]:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, durable=None, stream=stream)
        messages: list[Any] = []
        while True:
            try:
                batch = await sub.fetch(50, timeout=1)
            except TimeoutError:
                return messages
            messages += batch
    finally:
        await nc.close()


async def _delete(stream: str) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:  # it may never have been made
        pass
    finally:
        await nc.close()


@pytest.fixture
def relayed(settings: Settings) -> Iterator[tuple[Ledger, Deliveries, str, str]]:
    tag = uuid.uuid4().hex[:12]
    stream, prefix = f"posledger_test_{tag}", f"posledger_test_{tag}"
    ledger = Ledger.open(
        replace(settings, nats_url=NATS_URL, nats_stream=stream, nats_subject_prefix=prefix)
    )
    deliveries = build_deliveries(ledger)
    deliveries.ensure()
    try:
        yield ledger, deliveries, stream, prefix
    finally:
        ledger.close()
        asyncio.run(_delete(stream))


def test_changes_are_published_once_by_position_even_when_a_page_is_published_again(
    relayed: tuple[Ledger, Deliveries, str, str],
) -> None:
    ledger, deliveries, stream, prefix = relayed
    assert deliveries.relay is not None
    (view,) = deliveries.relay.views.values()
    for _ in range(3):
        ledger.record_payment_result(ctx(), approved_by_card(sale_with_pending_payment(ledger)))
    while deliveries.relay.step(view):
        pass
    first = asyncio.run(_messages(stream, f"{prefix}.>"))
    # The relay dies after publishing, before its position commits: it publishes again.
    with psycopg.connect(ledger.database_url, autocommit=True) as conn:
        conn.execute(
            SQL("UPDATE {} SET position = 0 WHERE view = %s").format(
                Identifier(ledger.settings.schema, "projection_views")
            ),
            (RelayView.name,),
        )
    while deliveries.relay.step(view):
        pass
    again = asyncio.run(_messages(stream, f"{prefix}.>"))
    assert len(again) == len(first) == 6  # 3 x (payment.resolved, order.completed)
    ids = [m.headers["Nats-Msg-Id"] for m in again]
    assert len(set(ids)) == 6
    bodies = [json.loads(m.data) for m in again]
    assert [b["id"] for b in bodies] == ids
    assert [b["kind"] for b in bodies] == ["payment.resolved", "order.completed"] * 3
    assert {m.subject for m in again} == {
        f"{prefix}.merchant-a.payment_resolved",
        f"{prefix}.merchant-a.order_completed",
    }
