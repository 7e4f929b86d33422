"""InventoryService over the wire, and the stock that sales and refunds move."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
from hypothesis import strategies as st

from ledger.v1 import inventory_pb2 as ipb
from ledger.v1 import sales_pb2 as pb
from tests.e2e import api_client as api
from tests.e2e import strategies as fuzz
from tests.e2e.api_client import Metadata, Stubs


def _invalid(call: Callable[[], object]) -> api.RpcFailure:
    failure = api.expect_failure(call)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.domain == "posledger"
    assert failure.violations, "INVALID_ARGUMENT must name the bad fields"
    return failure


def _fails(call: Callable[[], object], code: grpc.StatusCode, reason: str) -> api.RpcFailure:
    failure = api.expect_failure(call)
    assert (failure.code, failure.reason) == (code, reason), failure
    assert failure.violations == []
    return failure


def _levels(item: ipb.StockItem) -> dict[str, int]:
    """The counters of a stock item that are not zero."""
    names = [
        "on_hand",
        "received",
        "sold",
        "returned",
        "adjusted",
        "transferred_in",
        "transferred_out",
        "count_variance",
        "last_count",
        "last_count_variance",
    ]
    return {name: getattr(item, name) for name in names if getattr(item, name)}


def _product(stubs: Stubs, **overrides: Any) -> str:
    return api.create_product(stubs.catalog, **overrides).id


# ---- receive, adjust, count --------------------------------------------------------------


def test_receive_adjust_and_count(stubs: Stubs) -> None:
    product_id = _product(stubs)

    received = api.receive_stock(stubs.inventory, product_id, 10)

    assert (received.product_id, received.location_id) == (product_id, "store-1")
    assert _levels(received) == {"on_hand": 10, "received": 10}
    assert received.HasField("updated_at")
    assert not received.HasField("last_counted_at")

    damaged = api.adjust_stock(stubs.inventory, product_id, -3)
    assert _levels(damaged) == {"on_hand": 7, "received": 10, "adjusted": -3}
    found = api.adjust_stock(
        stubs.inventory, product_id, 1, reason=ipb.ADJUSTMENT_REASON_RETURN_TO_STOCK
    )
    assert _levels(found) == {"on_hand": 8, "received": 10, "adjusted": -2}
    assert found.version == damaged.version + 1 == received.version + 2

    # A count sets on-hand and records how far it was off.
    counted = api.record_stock_count(stubs.inventory, product_id, 5, note="cycle count")
    assert _levels(counted) == {
        "on_hand": 5,
        "received": 10,
        "adjusted": -2,
        "count_variance": -3,
        "last_count": 5,
        "last_count_variance": -3,
    }
    assert counted.HasField("last_counted_at")
    recounted = api.record_stock_count(stubs.inventory, product_id, 6)
    assert (recounted.on_hand, recounted.last_count, recounted.last_count_variance) == (6, 6, 1)
    assert recounted.count_variance == -2
    # Zero is a valid count.
    empty = api.record_stock_count(stubs.inventory, product_id, 0)
    assert (empty.on_hand, empty.last_count_variance, empty.count_variance) == (0, -6, -8)
    assert api.get_stock_item(stubs.inventory, product_id) == empty


def test_every_adjustment_reason_is_accepted(stubs: Stubs) -> None:
    product_id = _product(stubs)
    reasons = [
        ipb.ADJUSTMENT_REASON_DAMAGE,
        ipb.ADJUSTMENT_REASON_THEFT,
        ipb.ADJUSTMENT_REASON_LOSS,
        ipb.ADJUSTMENT_REASON_CORRECTION,
        ipb.ADJUSTMENT_REASON_RETURN_TO_STOCK,
        ipb.ADJUSTMENT_REASON_OTHER,
    ]

    for reason in reasons:
        item = api.adjust_stock(stubs.inventory, product_id, -1, reason=reason)

    assert (item.on_hand, item.adjusted) == (-6, -6)  # adjustments may take stock negative


def test_stock_is_per_location(stubs: Stubs) -> None:
    product_id = _product(stubs)
    other_id = _product(stubs, sku="TEA-1")

    api.receive_stock(stubs.inventory, product_id, 5, location_id="store-1")
    api.receive_stock(stubs.inventory, product_id, 7, location_id="warehouse")
    api.receive_stock(stubs.inventory, other_id, 2, location_id="store-1")

    assert api.get_stock_item(stubs.inventory, product_id, "store-1").on_hand == 5
    assert api.get_stock_item(stubs.inventory, product_id, "warehouse").on_hand == 7
    assert api.get_stock_item(stubs.inventory, other_id, "store-1").on_hand == 2
    assert api.get_stock_item(stubs.inventory, other_id, "warehouse").on_hand == 0


# ---- get ---------------------------------------------------------------------------------


def test_product_without_movements_has_an_empty_stock_item(stubs: Stubs) -> None:
    product_id = _product(stubs)

    item = api.get_stock_item(stubs.inventory, product_id, "store-9")

    assert item == ipb.StockItem(product_id=product_id, location_id="store-9")
    assert item.version == 0
    # Ids name the product however they are spelled, and the answer spells them one way.
    assert api.get_stock_item(stubs.inventory, product_id.upper(), "store-9") == item
    api.receive_stock(stubs.inventory, product_id.upper(), 1, location_id="store-9")
    moved = api.get_stock_item(stubs.inventory, product_id.upper(), "store-9")
    assert (moved.product_id, moved.on_hand) == (product_id, 1)


def test_stock_of_unknown_and_foreign_products_is_not_found(
    stubs: Stubs, two_merchants: tuple[Metadata, Metadata]
) -> None:
    a, b = two_merchants
    product_id = _product(stubs, metadata=a)
    api.receive_stock(stubs.inventory, product_id, 3, metadata=a)
    missing = str(uuid.uuid4())

    for call in [
        lambda: api.get_stock_item(stubs.inventory, missing, metadata=a),
        lambda: api.get_stock_item(stubs.inventory, product_id, metadata=b),
        lambda: api.receive_stock(stubs.inventory, product_id, 1, metadata=b),
        lambda: api.adjust_stock(stubs.inventory, product_id, -1, metadata=b),
        lambda: api.record_stock_count(stubs.inventory, product_id, 0, metadata=b),
        lambda: api.transfer_stock(stubs.inventory, product_id, 1, metadata=b),
        lambda: api.receive_stock(stubs.inventory, missing, 1, metadata=a),
        lambda: api.transfer_stock(stubs.inventory, missing, 1, metadata=a),
    ]:
        _fails(call, grpc.StatusCode.NOT_FOUND, "PRODUCT_NOT_FOUND")

    assert api.get_stock_item(stubs.inventory, product_id, metadata=a).on_hand == 3


def test_bad_stock_lookups_are_invalid(stubs: Stubs) -> None:
    product_id = _product(stubs)

    for product, location, fields in [
        ("", "store-1", {"product_id"}),
        ("nope", "store-1", {"product_id"}),
        (product_id, "", {"location_id"}),
        (product_id, " ", {"location_id"}),
        (product_id, "l" * 65, {"location_id"}),
        ("nope", "", {"product_id", "location_id"}),
    ]:
        failure = _invalid(
            lambda p=product, loc=location: api.get_stock_item(stubs.inventory, p, loc)  # type: ignore[misc]
        )
        assert failure.fields == fields, (product, location, failure)


# ---- transfers ---------------------------------------------------------------------------


def test_transfer_moves_stock_between_locations(stubs: Stubs) -> None:
    product_id = _product(stubs)
    api.receive_stock(stubs.inventory, product_id, 10)

    moved = api.transfer_stock(stubs.inventory, product_id, 4)

    assert (moved.from_stock_item.location_id, moved.to_stock_item.location_id) == (
        "store-1",
        "store-2",
    )
    assert _levels(moved.from_stock_item) == {"on_hand": 6, "received": 10, "transferred_out": 4}
    assert _levels(moved.to_stock_item) == {"on_hand": 4, "transferred_in": 4}
    assert api.get_stock_item(stubs.inventory, product_id, "store-1") == moved.from_stock_item
    assert api.get_stock_item(stubs.inventory, product_id, "store-2") == moved.to_stock_item

    back = api.transfer_stock(
        stubs.inventory, product_id, 4, from_location_id="store-2", to_location_id="store-1"
    )
    assert (back.from_stock_item.on_hand, back.to_stock_item.on_hand) == (0, 10)
    # All of it may go.
    everything = api.transfer_stock(stubs.inventory, product_id, 10)
    assert (everything.from_stock_item.on_hand, everything.to_stock_item.on_hand) == (0, 10)


def test_transfer_of_more_than_on_hand_is_refused(stubs: Stubs) -> None:
    product_id = _product(stubs)
    api.receive_stock(stubs.inventory, product_id, 3)
    before = api.get_stock_item(stubs.inventory, product_id)

    for call in [
        lambda: api.transfer_stock(stubs.inventory, product_id, 4),
        # Nothing was ever at the source.
        lambda: api.transfer_stock(
            stubs.inventory, product_id, 1, from_location_id="empty", to_location_id="store-1"
        ),
    ]:
        _fails(call, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_STOCK")

    assert api.get_stock_item(stubs.inventory, product_id) == before
    assert api.get_stock_item(stubs.inventory, product_id, "store-2").version == 0
    assert api.get_stock_item(stubs.inventory, product_id, "empty").version == 0
    # Negative stock can never be transferred away.
    api.adjust_stock(stubs.inventory, product_id, -5)
    _fails(
        lambda: api.transfer_stock(stubs.inventory, product_id, 1),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_STOCK",
    )


# ---- bad input ---------------------------------------------------------------------------


def test_stock_command_field_violations(stubs: Stubs) -> None:
    product_id = _product(stubs)
    inventory = stubs.inventory
    cases: list[tuple[Callable[[], object], set[str]]] = [
        (lambda: api.receive_stock(inventory, product_id, 0), {"quantity"}),
        (lambda: api.receive_stock(inventory, product_id, -1), {"quantity"}),
        (lambda: api.receive_stock(inventory, product_id, 10**9 + 1), {"quantity"}),
        (lambda: api.receive_stock(inventory, product_id, 1, location_id=""), {"location_id"}),
        (lambda: api.receive_stock(inventory, product_id, 1, reference="r" * 129), {"reference"}),
        (lambda: api.receive_stock(inventory, product_id, 1, note="n" * 1001), {"note"}),
        (lambda: api.receive_stock(inventory, "", 1), {"product_id"}),
        (lambda: api.receive_stock(inventory, "nope", 1), {"product_id"}),
        (lambda: api.receive_stock(inventory, product_id, 1, request_id=""), {"request_id"}),
        (lambda: api.adjust_stock(inventory, product_id, 0), {"quantity"}),
        (lambda: api.adjust_stock(inventory, product_id, -(10**9) - 1), {"quantity"}),
        (lambda: api.adjust_stock(inventory, product_id, 1, reason=99), {"reason"}),
        (
            lambda: api.adjust_stock(
                inventory, product_id, 1, reason=ipb.ADJUSTMENT_REASON_UNSPECIFIED
            ),
            {"reason"},
        ),
        (lambda: api.record_stock_count(inventory, product_id, -1), {"counted_quantity"}),
        (lambda: api.record_stock_count(inventory, product_id, 1, location_id=""), {"location_id"}),
        (lambda: api.transfer_stock(inventory, product_id, 0), {"quantity"}),
        (lambda: api.transfer_stock(inventory, product_id, -2), {"quantity"}),
        (
            lambda: api.transfer_stock(inventory, product_id, 1, to_location_id="store-1"),
            {"to_location_id"},
        ),
        (
            lambda: api.transfer_stock(inventory, product_id, 1, from_location_id=""),
            {"from_location_id"},
        ),
        (
            lambda: api.transfer_stock(inventory, product_id, 1, to_location_id=""),
            {"to_location_id"},
        ),
        (
            lambda: api.adjust_stock(inventory, "x", 0, reason=42, location_id="", note="bell\x07"),
            {"product_id", "quantity", "reason", "location_id", "note"},
        ),
        (
            lambda: api.transfer_stock(
                inventory, product_id, 0, from_location_id="a", to_location_id="a"
            ),
            {"quantity", "to_location_id"},
        ),
    ]
    for call, fields in cases:
        failure = _invalid(call)
        assert failure.fields == fields, failure

    assert api.get_stock_item(inventory, product_id).version == 0


def test_expected_version_guards_stock_commands(stubs: Stubs) -> None:
    product_id = _product(stubs)
    received = api.receive_stock(stubs.inventory, product_id, 5)

    for call in [
        lambda: api.adjust_stock(
            stubs.inventory, product_id, -1, expected_version=received.version - 1
        ),
        lambda: api.record_stock_count(
            stubs.inventory, product_id, 1, expected_version=received.version + 1
        ),
        # Nothing has moved at a new location: no version can match.
        lambda: api.adjust_stock(
            stubs.inventory, product_id, 1, location_id="new", expected_version=1
        ),
    ]:
        _fails(call, grpc.StatusCode.ABORTED, "VERSION_CONFLICT")

    adjusted = api.adjust_stock(stubs.inventory, product_id, -1, expected_version=received.version)
    counted = api.record_stock_count(
        stubs.inventory, product_id, 9, expected_version=adjusted.version
    )
    assert (counted.on_hand, counted.version) == (9, received.version + 2)
    failure = _invalid(
        lambda: api.record_stock_count(stubs.inventory, product_id, 1, expected_version=0)
    )
    assert failure.fields == {"expected_version"}


# ---- idempotency -------------------------------------------------------------------------


def test_retries_return_byte_identical_responses(stubs: Stubs) -> None:
    product_id = _product(stubs)
    inventory = stubs.inventory
    receive = api.receive_stock_request(product_id, 10)
    adjust = api.adjust_stock_request(product_id, -2)
    count = api.record_stock_count_request(product_id, 7)
    transfer = api.transfer_stock_request(product_id, 3)

    first = [
        inventory.ReceiveStock(receive, timeout=api.TIMEOUT),
        inventory.AdjustStock(adjust, timeout=api.TIMEOUT),
        inventory.RecordStockCount(count, timeout=api.TIMEOUT),
        inventory.TransferStock(transfer, timeout=api.TIMEOUT),
    ]
    for _ in range(2):
        again = [
            inventory.ReceiveStock(receive, timeout=api.TIMEOUT),
            inventory.AdjustStock(adjust, timeout=api.TIMEOUT),
            inventory.RecordStockCount(count, timeout=api.TIMEOUT),
            inventory.TransferStock(transfer, timeout=api.TIMEOUT),
        ]
        assert [r.SerializeToString() for r in again] == [r.SerializeToString() for r in first]

    # Nothing was applied twice.
    assert _levels(api.get_stock_item(inventory, product_id)) == {
        "on_hand": 4,
        "received": 10,
        "adjusted": -2,
        "count_variance": -1,
        "last_count": 7,
        "last_count_variance": -1,
        "transferred_out": 3,
    }
    assert api.get_stock_item(inventory, product_id, "store-2").on_hand == 3
    _fails(
        lambda: api.receive_stock(inventory, product_id, 11, request_id=receive.request_id),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )


# ---- sales move stock --------------------------------------------------------------------


def _catalog_line(sku: str = "COF-250", quantity: int = 1) -> pb.LineItemInput:
    return pb.LineItemInput(sku=sku, name="Coffee", quantity=quantity)


def test_completed_sale_takes_stock_and_a_restocking_refund_returns_it(stubs: Stubs) -> None:
    product_id = _product(stubs)
    api.receive_stock(stubs.inventory, product_id, 2)
    sale = api.create_sale(
        stubs.sales,
        line_items=[_catalog_line(quantity=2), _catalog_line(quantity=1), api.line_item()],
    )

    # An open sale reserves nothing.
    assert api.get_stock_item(stubs.inventory, product_id).on_hand == 2
    payment = api.request_payment(stubs.sales, sale.id, sale.total).payment
    completed = api.record_result(stubs.sales, sale.id, payment.id).sale
    assert completed.status == pb.SALE_STATUS_COMPLETED

    # A till sells what is on the counter: on-hand may go negative.
    sold = api.get_stock_item(stubs.inventory, product_id)
    assert _levels(sold) == {"on_hand": -1, "received": 2, "sold": 3}
    assert api.get_stock_item(stubs.inventory, product_id, "store-2").version == 0

    first_line, second_line, open_line = (i.line_id for i in completed.line_items)
    refund = api.refund(
        stubs.sales,
        sale.id,
        payment.id,
        100,
        restock_items=[pb.RestockItem(line_id=first_line, quantity=2)],
    )
    assert refund.sale.status == pb.SALE_STATUS_COMPLETED
    returned = api.get_stock_item(stubs.inventory, product_id)
    assert _levels(returned) == {"on_hand": 1, "received": 2, "sold": 3, "returned": 2}

    for restock, reason in [
        ([pb.RestockItem(line_id=first_line, quantity=1)], "RESTOCK_EXCEEDS_SOLD"),
        ([pb.RestockItem(line_id=second_line, quantity=2)], "RESTOCK_EXCEEDS_SOLD"),
        ([pb.RestockItem(line_id=open_line, quantity=1)], "LINE_NOT_STOCKED"),
    ]:
        _fails(
            lambda r=restock: api.refund(stubs.sales, sale.id, payment.id, 1, restock_items=r),  # type: ignore[misc]
            grpc.StatusCode.FAILED_PRECONDITION,
            reason,
        )
    _fails(
        lambda: api.refund(
            stubs.sales,
            sale.id,
            payment.id,
            1,
            restock_items=[pb.RestockItem(line_id=str(uuid.uuid4()), quantity=1)],
        ),
        grpc.StatusCode.NOT_FOUND,
        "LINE_ITEM_NOT_FOUND",
    )
    # A refund without restocking leaves stock alone.
    api.refund(stubs.sales, sale.id, payment.id, 1)
    assert api.get_stock_item(stubs.inventory, product_id) == returned


def test_stock_moves_at_the_sales_location_only_once_it_completes(stubs: Stubs) -> None:
    product_id = _product(stubs)
    open_sale = api.create_sale(stubs.sales, line_items=[_catalog_line(quantity=5)])
    canceled = api.create_sale(stubs.sales, line_items=[_catalog_line(quantity=4)])
    api.cancel_sale(stubs.sales, canceled.id)

    api.paid_sale(stubs.sales, location_id="kiosk", line_items=[_catalog_line(quantity=2)])

    assert _levels(api.get_stock_item(stubs.inventory, product_id, "kiosk")) == {
        "on_hand": -2,
        "sold": 2,
    }
    assert api.get_stock_item(stubs.inventory, product_id, "store-1").version == 0
    assert api.get_sale(stubs.sales, open_sale.id).status == pb.SALE_STATUS_OPEN


def test_restocking_needs_a_completed_sale(stubs: Stubs) -> None:
    _product(stubs)
    sale = api.create_sale(stubs.sales, line_items=[_catalog_line(quantity=2)])
    payment = api.request_payment(stubs.sales, sale.id, 100).payment
    api.record_result(stubs.sales, sale.id, payment.id)

    _fails(
        lambda: api.refund(
            stubs.sales,
            sale.id,
            payment.id,
            100,
            restock_items=[pb.RestockItem(line_id=sale.line_items[0].line_id, quantity=1)],
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SALE_NOT_COMPLETED",
    )


def test_restocking_refund_retried_returns_stock_once(stubs: Stubs) -> None:
    product_id = _product(stubs)
    sale, payment = api.paid_sale(stubs.sales, line_items=[_catalog_line(quantity=3)])
    line_id = sale.line_items[0].line_id
    request = api.refund_request(
        sale.id, payment.id, 500, restock_items=[pb.RestockItem(line_id=line_id, quantity=2)]
    )

    first = stubs.sales.RefundPayment(request, timeout=api.TIMEOUT)
    again = stubs.sales.RefundPayment(request, timeout=api.TIMEOUT)

    assert again.SerializeToString() == first.SerializeToString()
    assert _levels(api.get_stock_item(stubs.inventory, product_id)) == {
        "on_hand": -1,
        "sold": 3,
        "returned": 2,
    }
    for restock, fields in [
        ([pb.RestockItem(line_id=line_id, quantity=0)], {"restock_items[0].quantity"}),
        ([pb.RestockItem(line_id="line-1", quantity=1)], {"restock_items[0].line_id"}),
        (
            [pb.RestockItem(line_id=line_id, quantity=1)] * 2,
            {"restock_items"},
        ),
    ]:
        failure = _invalid(
            lambda r=restock: api.refund(stubs.sales, sale.id, payment.id, 1, restock_items=r)  # type: ignore[misc]
        )
        assert failure.fields == fields, failure


# ---- malformed input never breaks the server ---------------------------------------------

REASON = fuzz.INT32.map(ipb.AdjustmentReason.ValueType)


@st.composite
def _stock_calls(draw: st.DrawFn, stubs: Stubs, product_id: str) -> Callable[[], object]:
    pick = fuzz.Picker(draw)
    rid = pick(st.uuids().map(str), st.uuids().map(str) | fuzz.TEXT)
    product = pick(
        st.sampled_from([product_id, product_id.upper(), str(uuid.uuid4())]), fuzz.UUIDISH
    )
    location = pick(st.sampled_from(["store-1", "store-2"]), fuzz.TEXT)
    other = pick(st.just("store-2" if location == "store-1" else "store-1"), fuzz.TEXT)
    quantity = pick(st.integers(1, 20) | st.integers(1, 10**9), fuzz.NUMBER)
    if not pick.wild and draw(st.booleans()):
        quantity = -quantity  # a removal (an adjustment) or a bad quantity (the others)
    text = pick(st.just("ref"), fuzz.TEXT)
    version = pick(st.none() | st.integers(1, 6), fuzz.VERSION)
    kind = draw(st.sampled_from(["receive", "adjust", "count", "transfer", "get"]))
    if kind == "receive":
        receive = ipb.ReceiveStockRequest(
            request_id=rid,
            product_id=product,
            location_id=location,
            quantity=quantity,
            reference=text,
            note=text,
        )
        return lambda: stubs.inventory.ReceiveStock(receive, timeout=api.TIMEOUT)
    if kind == "adjust":
        adjust = ipb.AdjustStockRequest(
            request_id=rid,
            product_id=product,
            location_id=location,
            quantity=quantity,
            reason=pick(st.integers(0, 6).map(ipb.AdjustmentReason.ValueType), REASON),
            note=text,
        )
        fuzz.set_version(adjust, version)
        return lambda: stubs.inventory.AdjustStock(adjust, timeout=api.TIMEOUT)
    if kind == "count":
        count = ipb.RecordStockCountRequest(
            request_id=rid,
            product_id=product,
            location_id=location,
            counted_quantity=quantity,
            note=text,
        )
        fuzz.set_version(count, version)
        return lambda: stubs.inventory.RecordStockCount(count, timeout=api.TIMEOUT)
    if kind == "transfer":
        transfer = ipb.TransferStockRequest(
            request_id=rid,
            product_id=product,
            from_location_id=location,
            to_location_id=other,
            quantity=quantity,
            reference=text,
            note=text,
        )
        return lambda: stubs.inventory.TransferStock(transfer, timeout=api.TIMEOUT)
    get = ipb.GetStockItemRequest(product_id=product, location_id=location)
    return lambda: stubs.inventory.GetStockItem(get, timeout=api.TIMEOUT)


def test_malformed_stock_requests_never_answer_internal_or_unknown(stubs: Stubs) -> None:
    product_id = _product(stubs)
    api.receive_stock(stubs.inventory, product_id, 50)

    fuzz.never_internal(_stock_calls(stubs, product_id))
