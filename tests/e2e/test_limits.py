"""Caps on long-lived calls and the idle limit of import streams, on a real server with
small limits: what a caller sees, and that what it sent before still counts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from ledger.application import Ledger
from ledger.bootstrap import build_server, build_views
from ledger.grpc.server import LedgerServer
from ledger.limits import Limits
from ledger.v1 import audit_pb2 as audit_pb
from ledger.v1 import sales_pb2 as pb
from ledger.v1 import webhooks_pb2 as webhooks_pb
from ledger.v1.audit_pb2_grpc import AuditServiceStub
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from ledger.v1.webhooks_pb2_grpc import ChangeFeedServiceStub
from projections.queries import ReadModels
from tests.e2e import api_client as api

IDLE = 1.0
LIMITS = Limits(
    streams=2,
    streams_per_merchant=2,
    imports=1,
    imports_per_merchant=1,
    waits=1,
    waits_per_merchant=1,
    import_idle_seconds=IDLE,
)


@pytest.fixture
def limited(ledger: Ledger) -> Iterator[LedgerServer]:
    views = build_views(ledger)
    views.ensure()
    reads = ReadModels(views, require_runner=True, wait_seconds=30)
    with views.running():
        server = build_server(ledger, "127.0.0.1:0", reads=reads, limits=LIMITS)
        server.start()
        yield server
        server.stop(1.0)


@pytest.fixture
def channel(limited: LedgerServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{limited.port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


def test_an_import_that_goes_silent_ends_with_stream_idle_and_keeps_what_it_sent(
    channel: grpc.Channel, ledger: Ledger
) -> None:
    sales = SalesServiceStub(channel)
    order_id = f"web-{uuid.uuid4().hex[:8]}"
    silent = threading.Event()

    def one_batch_then_nothing() -> Iterator[pb.ImportSalesRequest]:
        yield pb.ImportSalesRequest(orders=[api.imported_order("webshop", order_id)])
        silent.wait(30)

    started = time.monotonic()
    idle = api.expect_failure(lambda: sales.ImportSales(one_batch_then_nothing(), timeout=30))
    waited = time.monotonic() - started
    silent.set()

    assert idle.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert idle.reason == "STREAM_IDLE"
    assert idle.metadata == {"idle_seconds": "1"}
    assert IDLE <= waited < IDLE + 5
    again = api.import_sales(sales, [[api.imported_order("webshop", order_id)]])
    assert [o.status for o in again.outcomes] == [pb.IMPORT_STATUS_DUPLICATE], (
        "the batch sent before the silence was imported"
    )


def test_a_stream_that_keeps_sending_is_not_idle(channel: grpc.Channel) -> None:
    sales = SalesServiceStub(channel)

    def slow_batches() -> Iterator[pb.ImportSalesRequest]:
        for i in range(3):
            time.sleep(IDLE * 0.6)
            yield pb.ImportSalesRequest(
                orders=[api.imported_order("webshop", f"slow-{uuid.uuid4().hex[:8]}-{i}")]
            )

    response = sales.ImportSales(slow_batches(), timeout=30)

    assert response.imported == 3


def test_calls_beyond_the_caps_are_refused_and_slots_free_when_calls_end(
    channel: grpc.Channel, limited: LedgerServer
) -> None:
    sales = SalesServiceStub(channel)
    audit = AuditServiceStub(channel)
    api.create_sale(sales)
    calls: list[Any] = [
        audit.StreamEvents(audit_pb.StreamEventsRequest(from_position=1), timeout=30)
        for _ in range(2)
    ]
    feeds = [iter(call) for call in calls]
    for feed in feeds:
        assert next(feed).event.position >= 1
    wait: Any = sales.ListSales.future(pb.ListSalesRequest(min_position=2**62), timeout=30)
    deadline = time.monotonic() + 10
    while limited.resources.waits.in_use < 1:
        assert time.monotonic() < deadline, "the wait never parked"
        time.sleep(0.05)

    third = api.expect_failure(
        lambda: next(
            iter(audit.StreamEvents(audit_pb.StreamEventsRequest(from_position=1), timeout=10))
        )
    )
    second_wait = api.expect_failure(
        lambda: sales.ListSales(pb.ListSalesRequest(min_position=2**62), timeout=10)
    )
    assert (third.code, third.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STREAMS_EXHAUSTED")
    assert third.metadata == {"limit": "2", "scope": "server"}
    assert (second_wait.code, second_wait.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "WAITS_EXHAUSTED",
    )
    # A query that need not wait takes no slot.
    assert sales.ListSales(pb.ListSalesRequest(), timeout=10).position >= 0

    wait.cancel()
    calls[0].cancel()
    deadline = time.monotonic() + 10
    while (limited.resources.streams.in_use, limited.resources.waits.in_use) != (1, 0):
        assert time.monotonic() < deadline, "slots were not given back"
        time.sleep(0.05)
    fresh = iter(audit.StreamEvents(audit_pb.StreamEventsRequest(from_position=1), timeout=10))
    assert next(fresh).event.position >= 1


def test_a_change_feed_counts_as_a_stream_and_gives_its_slot_back(
    channel: grpc.Channel, limited: LedgerServer
) -> None:
    audit = AuditServiceStub(channel)
    feeds = ChangeFeedServiceStub(channel)
    api.create_sale(SalesServiceStub(channel))
    event_feed: Any = audit.StreamEvents(audit_pb.StreamEventsRequest(from_position=1), timeout=30)
    assert next(iter(event_feed)).event.position >= 1
    change_feed: Any = feeds.StreamChanges(webhooks_pb.StreamChangesRequest(), timeout=30)
    deadline = time.monotonic() + 10
    while limited.resources.streams.in_use < 2:  # the idle feed holds its slot, reading nothing
        assert time.monotonic() < deadline, "the change feed never took a slot"
        time.sleep(0.05)

    third = api.expect_failure(
        lambda: next(iter(feeds.StreamChanges(webhooks_pb.StreamChangesRequest(), timeout=10)))
    )
    assert (third.code, third.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STREAMS_EXHAUSTED")

    change_feed.cancel()
    deadline = time.monotonic() + 10
    while limited.resources.streams.in_use != 1:
        assert time.monotonic() < deadline, "the change feed's slot was not given back"
        time.sleep(0.05)
    event_feed.cancel()
