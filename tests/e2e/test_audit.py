"""AuditService over the wire: history with metadata, point-in-time sales, the live event
feed with resume, the tamper check, and who may call it."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.domain.inventory import stock_item_id
from ledger.keys import DEV_MERCHANT, Role
from ledger.store import Settings
from ledger.v1 import audit_pb2 as audit_pb
from ledger.v1 import sales_pb2 as pb
from ledger.v1.audit_pb2_grpc import AuditServiceStub
from tests.e2e import api_client as api
from tests.e2e.api_client import Metadata, Stubs

STREAM_TIMEOUT = 15.0
DEVICE = "till-7"


@dataclass(frozen=True)
class Keys:
    writer_id: str
    writer_key: str
    writer: Metadata  # cashier of merchant-a, with an x-device-id
    auditor: Metadata  # auditor of merchant-a
    other_writer: Metadata  # cashier of merchant-b
    other_auditor: Metadata  # auditor of merchant-b


@pytest.fixture
def keys(ledger: Ledger) -> Keys:
    writer_id, writer_key = ledger.api_keys.create(
        "merchant-a", "register", [Role.CASHIER, Role.MANAGER]
    )
    _, auditor_key = ledger.api_keys.create("merchant-a", "books", Role.AUDITOR)
    _, other_key = ledger.api_keys.create("merchant-b", "register", Role.CASHIER)
    _, other_auditor_key = ledger.api_keys.create("merchant-b", "books", Role.AUDITOR)
    return Keys(
        writer_id=writer_id,
        writer_key=writer_key,
        writer=(*api.bearer(writer_key), ("x-device-id", DEVICE)),
        auditor=api.bearer(auditor_key),
        other_writer=api.bearer(other_key),
        other_auditor=api.bearer(other_auditor_key),
    )


@pytest.fixture
def audit(channel: grpc.Channel) -> AuditServiceStub:
    return AuditServiceStub(channel)


def history(
    audit: AuditServiceStub, aggregate_id: str, metadata: Metadata, page_size: int = 0
) -> list[audit_pb.AuditEvent]:
    """Every event of an aggregate, page by page."""
    events: list[audit_pb.AuditEvent] = []
    token = ""
    for _ in range(1000):
        response = audit.GetHistory(
            audit_pb.GetHistoryRequest(
                aggregate_id=aggregate_id, page_size=page_size, page_token=token
            ),
            timeout=api.TIMEOUT,
            metadata=metadata,
        )
        events.extend(response.events)
        token = response.next_page_token
        if not token:
            return events
    raise AssertionError("GetHistory never ran out of pages")


def connect(settings: Settings) -> psycopg.Connection[Any]:
    """A connection to the test's database (tests always name one)."""
    assert settings.database_url is not None
    return psycopg.connect(settings.database_url)


def merchant_positions(settings: Settings, merchant_id: str) -> list[int]:
    """The merchant's positions in the log, read straight from PostgreSQL."""
    with connect(settings) as conn:
        rows = conn.execute(
            SQL(
                "SELECT e.notification_id FROM {} e JOIN {} m"
                " USING (originator_id, originator_version)"
                " WHERE m.merchant_id = %s ORDER BY e.notification_id"
            ).format(
                Identifier(settings.schema, "ledger_events"),
                Identifier(settings.schema, "event_metadata"),
            ),
            (merchant_id,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def find_values(value: Any, key: str) -> list[Any]:
    """Every value stored under `key` anywhere in a decoded JSON document."""
    found: list[Any] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                found.append(v)
            found.extend(find_values(v, key))
    elif isinstance(value, list):
        for item in value:
            found.extend(find_values(item, key))
    return found


@dataclass(frozen=True)
class PaidSale:
    sale: pb.Sale
    snapshots: dict[int, pb.Sale]  # the sale as each command returned it, by version
    request_ids: list[str]  # of the commands, in order


def paid_sale(stubs: Stubs, metadata: Metadata) -> PaidSale:
    """Create (two lines) → add a line → request payment → approve it."""
    ids = [api.new_request_id() for _ in range(4)]
    snapshots: dict[int, pb.Sale] = {}
    sale = api.create_sale(stubs.sales, metadata=metadata, request_id=ids[0], location_id="store-9")
    snapshots[sale.version] = sale
    sale = api.add_line_item(stubs.sales, sale.id, metadata=metadata, request_id=ids[1]).sale
    snapshots[sale.version] = sale
    requested = api.request_payment(
        stubs.sales, sale.id, sale.total, metadata=metadata, request_id=ids[2]
    )
    snapshots[requested.sale.version] = requested.sale
    result = api.record_result(
        stubs.sales, sale.id, requested.payment.id, metadata=metadata, request_id=ids[3]
    )
    assert result.sale.status == pb.SALE_STATUS_COMPLETED
    snapshots[result.sale.version] = result.sale
    return PaidSale(result.sale, snapshots, ids)


# ---- GetHistory ---------------------------------------------------------------------------


def test_history_of_a_sale_has_every_event_with_its_metadata(
    stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    paid = paid_sale(stubs, keys.writer)
    after = datetime.now(UTC) + timedelta(seconds=1)

    events = history(audit, paid.sale.id, keys.auditor)

    assert [e.version for e in events] == list(range(1, paid.sale.version + 1))
    positions = [e.position for e in events]
    assert positions == sorted(set(positions))
    assert positions[0] > 0
    assert all(e.aggregate_id == paid.sale.id for e in events)
    types = [e.type for e in events]
    assert types[0] == "posledger.SaleCreated"
    assert "posledger.SaleLineItemAdded" in types
    assert types.index("posledger.PaymentRequested") < types.index("posledger.PaymentApproved")
    times = [e.recorded_at.ToDatetime(tzinfo=UTC) for e in events]
    assert times == sorted(times)
    assert all(before <= t <= after for t in times)
    for event in events:
        m = event.metadata
        assert m.merchant_id == "merchant-a"
        assert m.app_id == "register"
        assert m.api_key_id == keys.writer_id
        assert m.location_id == "store-9"
        assert m.device_id == DEVICE
        # Never the key itself, in any field.
        assert keys.writer_key not in str(event)
        assert keys.writer_key.split("_", 2)[2] not in event.SerializeToString().decode(
            errors="replace"
        )
    # Each command's events carry its request_id, in command order.
    correlations = [e.metadata.correlation_id for e in events]
    assert correlations[0] == paid.request_ids[0]
    assert correlations[-1] == paid.request_ids[-1]
    deduped = [c for i, c in enumerate(correlations) if i == 0 or correlations[i - 1] != c]
    assert deduped == paid.request_ids
    # The payload is JSON and holds what the command said.
    payloads = [json.loads(e.payload_json) for e in events]
    assert all(isinstance(p, dict) for p in payloads)
    requested = payloads[types.index("posledger.PaymentRequested")]
    assert paid.sale.total in find_values(requested, "amount"), requested


def test_history_pages_of_one_walk_every_event_without_gaps(
    stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    paid = paid_sale(stubs, keys.writer)
    first = audit.GetHistory(
        audit_pb.GetHistoryRequest(aggregate_id=paid.sale.id, page_size=1),
        timeout=api.TIMEOUT,
        metadata=keys.auditor,
    )
    assert len(first.events) == 1
    assert first.next_page_token

    paged = history(audit, paid.sale.id, keys.auditor, page_size=1)
    whole = history(audit, paid.sale.id, keys.auditor)

    assert paged == whole
    assert [e.version for e in paged] == list(range(1, paid.sale.version + 1))
    two = history(audit, paid.sale.id, keys.auditor, page_size=2)
    assert two == whole


def test_history_of_products_customers_and_stock_items(
    stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    product = api.create_product(stubs.catalog, metadata=keys.writer)
    product = api.update_product(stubs.catalog, product.id, {"price": 1300}, metadata=keys.writer)
    customer = api.create_customer(stubs.customers, metadata=keys.writer)
    customer = api.update_customer(
        stubs.customers, customer.id, {"name": "Ada King"}, metadata=keys.writer
    )
    request_id = api.new_request_id()
    item = api.receive_stock(
        stubs.inventory, product.id, 5, metadata=keys.writer, request_id=request_id
    )
    item = api.adjust_stock(stubs.inventory, product.id, -1, metadata=keys.writer)
    item_id = str(stock_item_id("merchant-a", product.id, "store-1"))

    for aggregate_id, version in [
        (product.id, product.version),
        (customer.id, customer.version),
        (item_id, item.version),
    ]:
        events = history(audit, aggregate_id, keys.auditor)
        assert [e.version for e in events] == list(range(1, version + 1)), aggregate_id
        assert all(e.aggregate_id == aggregate_id for e in events)
        assert all(e.metadata.merchant_id == "merchant-a" for e in events)
        assert all(e.metadata.api_key_id == keys.writer_id for e in events)
        assert all(isinstance(json.loads(e.payload_json), dict) for e in events)
    stock_events = history(audit, item_id, keys.auditor)
    assert stock_events[0].metadata.location_id == "store-1"
    receiving = [e for e in stock_events if e.metadata.correlation_id == request_id]
    assert receiving
    assert receiving == stock_events[: len(receiving)]
    assert 5 in find_values([json.loads(e.payload_json) for e in receiving], "quantity")
    assert -1 in find_values(json.loads(stock_events[-1].payload_json), "quantity")
    assert json.loads(history(audit, product.id, keys.auditor)[-1].payload_json) != {}


def test_another_merchants_aggregate_is_not_found(
    stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    theirs = api.create_sale(stubs.sales, metadata=keys.other_writer)

    calls: list[Callable[[], object]] = [
        functools.partial(history, audit, theirs.id, keys.auditor),
        functools.partial(history, audit, str(uuid.uuid4()), keys.auditor),
        lambda: audit.GetSaleAt(
            audit_pb.GetSaleAtRequest(sale_id=theirs.id, version=1),
            timeout=api.TIMEOUT,
            metadata=keys.auditor,
        ),
        lambda: audit.GetSaleAt(
            audit_pb.GetSaleAtRequest(sale_id=theirs.id, as_of=theirs.updated_at),
            timeout=api.TIMEOUT,
            metadata=keys.auditor,
        ),
    ]
    for call in calls:
        failure = api.expect_failure(call)
        assert failure.code == grpc.StatusCode.NOT_FOUND, failure
        assert "merchant-b" not in failure.message
    # Their own auditor sees it.
    assert len(history(audit, theirs.id, keys.other_auditor)) == theirs.version


def _all_four(audit: AuditServiceStub, metadata: Metadata, sale_id: str) -> list[Callable[[], Any]]:
    return [
        lambda: audit.GetHistory(
            audit_pb.GetHistoryRequest(aggregate_id=sale_id), timeout=api.TIMEOUT, metadata=metadata
        ),
        lambda: audit.GetSaleAt(
            audit_pb.GetSaleAtRequest(sale_id=sale_id, version=1),
            timeout=api.TIMEOUT,
            metadata=metadata,
        ),
        lambda: next(
            iter(
                audit.StreamEvents(
                    audit_pb.StreamEventsRequest(from_position=1),
                    timeout=api.TIMEOUT,
                    metadata=metadata,
                )
            )
        ),
        lambda: audit.VerifyLog(
            audit_pb.VerifyLogRequest(), timeout=api.TIMEOUT, metadata=metadata
        ),
    ]


def test_cashier_and_manager_keys_may_not_audit(
    ledger: Ledger, stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    sale = api.create_sale(stubs.sales, metadata=keys.writer)
    _, manager_key = ledger.api_keys.create("merchant-a", "office", Role.MANAGER)

    for metadata in [keys.writer, api.bearer(manager_key)]:
        for call in _all_four(audit, metadata, sale.id):
            failure = api.expect_failure(call)
            assert failure.code == grpc.StatusCode.PERMISSION_DENIED, failure
            assert failure.reason == "PERMISSION_REQUIRED"
            assert failure.domain == "posledger"


def test_development_mode_may_audit(stubs: Stubs, audit: AuditServiceStub) -> None:
    sale = api.create_sale(stubs.sales, metadata=(("x-device-id", DEVICE),))

    for call in _all_four(audit, (), sale.id):
        call()  # none of them is refused
    (event,) = history(audit, sale.id, ())
    assert event.metadata.api_key_id == ""
    assert event.metadata.device_id == DEVICE
    assert event.metadata.merchant_id == DEV_MERCHANT


# ---- GetSaleAt ----------------------------------------------------------------------------


def _sale_at(audit: AuditServiceStub, metadata: Metadata, sale_id: str, **at: Any) -> pb.Sale:
    request = audit_pb.GetSaleAtRequest(sale_id=sale_id, **at)
    return audit.GetSaleAt(request, timeout=api.TIMEOUT, metadata=metadata).sale


def test_sale_at_a_version_is_the_sale_as_it_was(
    stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    paid = paid_sale(stubs, keys.writer)

    for version, snapshot in paid.snapshots.items():
        assert _sale_at(audit, keys.auditor, paid.sale.id, version=version) == snapshot
    first = _sale_at(audit, keys.auditor, paid.sale.id, version=1)
    assert first.status == pb.SALE_STATUS_OPEN
    assert first.paid_total == 0
    assert len(first.line_items) == 1
    latest = _sale_at(audit, keys.auditor, paid.sale.id, version=paid.sale.version)
    assert latest == api.get_sale(stubs.sales, paid.sale.id, metadata=keys.writer)
    assert latest.status == pb.SALE_STATUS_COMPLETED
    assert latest.paid_total == latest.total


def test_sale_as_of_a_time_is_the_state_after_the_last_event_by_then(
    stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    paid = paid_sale(stubs, keys.writer)
    events = history(audit, paid.sale.id, keys.auditor)

    for event in events:
        at = event.recorded_at
        expected = max(
            e.version for e in events if e.recorded_at.ToNanoseconds() <= at.ToNanoseconds()
        )
        sale = _sale_at(audit, keys.auditor, paid.sale.id, as_of=at)
        assert sale.version == expected
        if expected in paid.snapshots:
            assert sale == paid.snapshots[expected]
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    assert _sale_at(audit, keys.auditor, paid.sale.id, as_of=later) == paid.sale

    earlier = Timestamp()
    earlier.FromNanoseconds(events[0].recorded_at.ToNanoseconds() - 1_000)
    failure = api.expect_failure(
        functools.partial(_sale_at, audit, keys.auditor, paid.sale.id, as_of=earlier)
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND, failure


# ---- StreamEvents -------------------------------------------------------------------------


def _take(stream: Any, count: int) -> list[audit_pb.AuditEvent]:
    """The next `count` events of an open stream (its deadline bounds the wait)."""
    return [next(stream).event for _ in range(count)]


def _stream(
    audit: AuditServiceStub, metadata: Metadata, from_position: int, types: tuple[str, ...] = ()
) -> Any:
    return audit.StreamEvents(
        audit_pb.StreamEventsRequest(from_position=from_position, types=list(types)),
        timeout=STREAM_TIMEOUT,
        metadata=metadata,
    )


def test_feed_sends_stored_then_live_events_and_resumes_without_gaps(
    settings: Settings, stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    # Both merchants write, interleaved, before anyone subscribes.
    api.create_sale(stubs.sales, metadata=keys.writer)
    api.create_sale(stubs.sales, metadata=keys.other_writer)
    paid_sale(stubs, keys.writer)
    stored = merchant_positions(settings, "merchant-a")

    stream = _stream(audit, keys.auditor, 1)
    try:
        received = _take(stream, len(stored))
        assert [e.position for e in received] == stored
        # Live: written after the subscriber caught up.
        api.create_sale(stubs.sales, metadata=keys.other_writer)
        live_sale = api.create_sale(stubs.sales, metadata=keys.writer)
        api.add_line_item(stubs.sales, live_sale.id, metadata=keys.writer)
        api.create_sale(stubs.sales, metadata=keys.other_writer)
        received += _take(stream, 2)
    finally:
        stream.cancel()
    assert [e.aggregate_id for e in received[-2:]] == [live_sale.id, live_sale.id]
    assert [e.version for e in received[-2:]] == [1, 2]

    # Disconnected: more is written by both; then resume from the last position + 1.
    paid_sale(stubs, keys.writer)
    api.create_sale(stubs.sales, metadata=keys.other_writer)
    expected = merchant_positions(settings, "merchant-a")
    resumed_stream = _stream(audit, keys.auditor, received[-1].position + 1)
    try:
        resumed = _take(resumed_stream, len(expected) - len(received))
    finally:
        resumed_stream.cancel()

    everything = received + resumed
    positions = [e.position for e in everything]
    assert positions == expected  # in order, no duplicates, nothing missing
    assert all(e.metadata.merchant_id == "merchant-a" for e in everything)
    # And they are the same events GetHistory tells of.
    by_position = {e.position: e for e in everything}
    for sale_id in {e.aggregate_id for e in everything}:
        for event in history(audit, sale_id, keys.auditor):
            assert by_position[event.position] == event


def test_feed_of_one_merchant_never_shows_another(
    settings: Settings, stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    api.create_sale(stubs.sales, metadata=keys.writer)
    paid_sale(stubs, keys.other_writer)
    theirs = merchant_positions(settings, "merchant-b")

    stream = _stream(audit, keys.other_auditor, 0)
    try:
        events = _take(stream, len(theirs))
    finally:
        stream.cancel()
    assert [e.position for e in events] == theirs
    assert {e.metadata.merchant_id for e in events} == {"merchant-b"}


def test_feed_filters_by_type(
    settings: Settings, stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    first = paid_sale(stubs, keys.writer)
    paid_sale(stubs, keys.other_writer)
    wanted = ("posledger.PaymentApproved", "posledger.SaleCreated")

    stream = _stream(audit, keys.auditor, 1, wanted)
    try:
        stored = _take(stream, 2)
        second = paid_sale(stubs, keys.writer)
        live = _take(stream, 2)
    finally:
        stream.cancel()

    events = stored + live
    assert [e.type for e in events] == [
        "posledger.SaleCreated",
        "posledger.PaymentApproved",
    ] * 2
    assert [e.aggregate_id for e in events] == [first.sale.id] * 2 + [second.sale.id] * 2
    all_of_a = history(audit, first.sale.id, keys.auditor) + history(
        audit, second.sale.id, keys.auditor
    )
    assert [e for e in all_of_a if e.type in wanted] == events


# ---- VerifyLog ----------------------------------------------------------------------------


TAMPERING = {
    "changed": "UPDATE {} SET state = state || '\\x00'::bytea WHERE notification_id = %s",
    "deleted": "DELETE FROM {} WHERE notification_id = %s",
}


@pytest.mark.parametrize("problem", sorted(TAMPERING))
def test_verify_log_finds_a_tampered_event(
    settings: Settings, stubs: Stubs, audit: AuditServiceStub, keys: Keys, problem: str
) -> None:
    paid = paid_sale(stubs, keys.writer)
    api.create_sale(stubs.sales, metadata=keys.other_writer)
    head = max(
        merchant_positions(settings, "merchant-a") + merchant_positions(settings, "merchant-b")
    )

    mine = merchant_positions(settings, "merchant-a")
    clean = audit.VerifyLog(audit_pb.VerifyLogRequest(), timeout=api.TIMEOUT, metadata=keys.auditor)
    assert clean.ok, clean
    # Only the caller's events are counted: never another merchant's.
    assert clean.events_verified == len(mine) < head
    assert clean.first_bad_position == 0
    assert clean.problem == ""
    assert clean.chain_head == max(mine)

    target = history(audit, paid.sale.id, keys.auditor)[2].position
    assert 1 < target < head
    with connect(settings) as conn:
        conn.execute(
            SQL(TAMPERING[problem]).format(Identifier(settings.schema, "ledger_events")),
            (target,),
        )

    tampered = audit.VerifyLog(
        audit_pb.VerifyLogRequest(), timeout=api.TIMEOUT, metadata=keys.auditor
    )
    assert not tampered.ok, tampered
    assert tampered.problem == problem
    assert tampered.first_bad_position == target
    assert tampered.events_verified == len([p for p in mine if p < target])
    # Another merchant's auditor learns that its log cannot be proven, not where another
    # merchant's event was changed, nor how many events that merchant has; a deleted
    # event has no merchant left, so everyone is told where it was.
    theirs = audit.VerifyLog(
        audit_pb.VerifyLogRequest(), timeout=api.TIMEOUT, metadata=keys.other_auditor
    )
    expected = (False, 0, "elsewhere") if problem == "changed" else (False, target, problem)
    assert (theirs.ok, theirs.first_bad_position, theirs.problem) == expected
    assert theirs.events_verified == len(
        [p for p in merchant_positions(settings, "merchant-b") if p < target]
    )


def test_every_event_is_chained_when_the_command_returns(
    settings: Settings, stubs: Stubs, keys: Keys
) -> None:
    """A server with a database URL and no projections runner: nothing else chains."""
    for _ in range(3):
        sale = api.create_sale(stubs.sales, metadata=keys.writer)
        with connect(settings) as conn:
            chained_row = conn.execute(
                SQL(
                    "SELECT count(*) FROM {} e JOIN {} c ON c.position = e.notification_id"
                    " WHERE e.originator_id = %s"
                ).format(
                    Identifier(settings.schema, "ledger_events"),
                    Identifier(settings.schema, "event_chain"),
                ),
                (uuid.UUID(sale.id),),
            ).fetchone()
            unchained_row = conn.execute(
                SQL(
                    "SELECT count(*) FROM {} WHERE notification_id > (SELECT position FROM {})"
                ).format(
                    Identifier(settings.schema, "ledger_events"),
                    Identifier(settings.schema, "event_chain_head"),
                )
            ).fetchone()
        assert chained_row == (1,)
        assert unchained_row == (0,)


# ---- bad requests -------------------------------------------------------------------------


def test_bad_audit_requests_are_invalid_arguments(
    stubs: Stubs, audit: AuditServiceStub, keys: Keys
) -> None:
    sale = api.create_sale(stubs.sales, metadata=keys.writer)

    def get_history(**fields: Any) -> Callable[[], object]:
        request = audit_pb.GetHistoryRequest(**{"aggregate_id": sale.id, **fields})
        return functools.partial(
            audit.GetHistory, request, timeout=api.TIMEOUT, metadata=keys.auditor
        )

    def first_event(**fields: Any) -> Callable[[], object]:
        return lambda: next(
            iter(
                audit.StreamEvents(
                    audit_pb.StreamEventsRequest(**fields),
                    timeout=api.TIMEOUT,
                    metadata=keys.auditor,
                )
            )
        )

    cases: list[tuple[Callable[[], object], str]] = [
        (get_history(page_size=1001), "page_size"),
        (get_history(page_size=-1), "page_size"),
        (get_history(page_token="garbage"), "page_token"),
        (get_history(aggregate_id="not-a-uuid"), "aggregate_id"),
        (functools.partial(_sale_at, audit, keys.auditor, sale.id), "at"),
        (functools.partial(_sale_at, audit, keys.auditor, sale.id, version=0), "version"),
        (first_event(from_position=-1), "from_position"),
        (first_event(types=[""]), "types[0]"),
    ]
    for call, field in cases:
        failure = api.expect_failure(call)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
        assert failure.fields == {field}, failure
    missing = api.expect_failure(
        functools.partial(_sale_at, audit, keys.auditor, sale.id, version=sale.version + 1)
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND, missing


@pytest.mark.parametrize(
    "as_of",
    [
        Timestamp(seconds=2**62),
        Timestamp(seconds=-(2**62)),
        Timestamp(seconds=253402300800),  # 10000-01-01
        Timestamp(seconds=0, nanos=-1),
        Timestamp(seconds=0, nanos=10**9),
    ],
    ids=["far-future", "far-past", "year-10000", "negative-nanos", "too-many-nanos"],
)
def test_sale_as_of_a_time_outside_the_timestamp_range_is_invalid(
    stubs: Stubs, audit: AuditServiceStub, keys: Keys, as_of: Timestamp
) -> None:
    sale = api.create_sale(stubs.sales, metadata=keys.writer)

    failure = api.expect_failure(lambda: _sale_at(audit, keys.auditor, sale.id, as_of=as_of))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.fields == {"as_of"}
