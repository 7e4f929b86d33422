"""SalesService.ImportSales over the wire: per-order outcomes, idempotency by (channel,
external order id), conflicts, rejections, and the events a re-import must not write."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st
from psycopg.sql import SQL, Identifier

from ledger.store import Settings, database_url
from ledger.v1 import sales_pb2 as pb
from tests.e2e import api_client as api
from tests.e2e import strategies as fuzz
from tests.e2e.api_client import Metadata, Stubs

IMPORTED = pb.IMPORT_STATUS_IMPORTED
DUPLICATE = pb.IMPORT_STATUS_DUPLICATE
CONFLICT = pb.IMPORT_STATUS_CONFLICT
REJECTED = pb.IMPORT_STATUS_REJECTED


def _event_count(settings: Settings) -> int:
    """Rows in the event store: what a re-import must leave unchanged."""
    table = Identifier(settings.schema, "ledger_events")
    with psycopg.connect(database_url(settings)) as conn:
        row = conn.execute(SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def _statuses(response: pb.ImportSalesResponse) -> list[int]:
    return [o.status for o in response.outcomes]


def _counts(response: pb.ImportSalesResponse) -> tuple[int, int, int, int]:
    return (response.imported, response.duplicates, response.conflicts, response.rejected)


def _catalog_order(channel: str, external_order_id: str, **overrides: Any) -> pb.ImportedOrder:
    """One unit of COF-250 at its catalog price: 1250 + 8.875 % tax = 1361."""
    fields: dict[str, Any] = {
        "line_items": [pb.LineItemInput(sku="COF-250", name="Coffee", quantity=1)],
        "payments": [pb.ImportedPayment(tender=pb.TENDER_TYPE_OTHER, amount=1361)],
    }
    fields.update(overrides)
    return api.imported_order(channel, external_order_id, **fields)


# ---- the scenario ----------------------------------------------------------------


def test_thousand_orders_from_two_channels_import_exactly_once(
    stubs: Stubs, settings: Settings
) -> None:
    product = api.create_product(stubs.catalog)
    orders: list[pb.ImportedOrder] = []
    for i in range(1000):
        # Both channels use the same order numbers: (channel, id) is the key, not the id.
        channel, number = ("webshop", "marketplace")[i % 2], f"order-{i // 2:04d}"
        if i % 4 < 2:
            orders.append(_catalog_order(channel, number))
        else:
            orders.append(api.imported_order(channel, number))
    batches = [orders[:100], orders[100:400], orders[400:750], orders[750:]]

    first = api.import_sales(stubs.sales, batches)

    assert _counts(first) == (1000, 0, 0, 0)
    assert set(_statuses(first)) == {IMPORTED}
    assert [o.index for o in first.outcomes] == list(range(1000))
    assert [(o.channel, o.external_order_id) for o in first.outcomes] == [
        (o.channel, o.external_order_id) for o in orders
    ]
    sale_ids = [o.sale_id for o in first.outcomes]
    assert len(set(sale_ids)) == 1000
    assert all(uuid.UUID(sale_id) for sale_id in sale_ids)
    assert all(o.message == "" for o in first.outcomes)
    events = _event_count(settings)
    assert events >= 3 * 1000  # each sale: created, imported, completed (and stock sold)

    # Replayed twice, the second time as one message: indexes count the whole stream.
    second = api.import_sales(stubs.sales, batches)
    third = api.import_sales(stubs.sales, [orders])

    for replay in (second, third):
        assert _counts(replay) == (0, 1000, 0, 0)
        assert set(_statuses(replay)) == {DUPLICATE}
        assert [o.sale_id for o in replay.outcomes] == sale_ids
        assert [o.index for o in replay.outcomes] == list(range(1000))
        assert all(o.message == "" for o in replay.outcomes)
    assert second == third
    assert second.SerializeToString() == third.SerializeToString()
    assert _event_count(settings) == events

    # The orders are completed, paid sales; the catalog ones sold stock where they were sold.
    sale = api.get_sale(stubs.sales, sale_ids[0])
    assert sale.status == pb.SALE_STATUS_COMPLETED
    assert (sale.external_order_id, sale.location_id) == ("order-0000", "web")
    assert sale.channel == pb.SALES_CHANNEL_ONLINE
    assert (sale.total, sale.paid_total, sale.amount_due) == (1361, 1361, 0)
    assert sale.line_items[0].product_id == product.id
    assert [p.status for p in sale.payments] == [pb.PAYMENT_STATUS_APPROVED]
    open_item = api.get_sale(stubs.sales, sale_ids[2])
    assert (open_item.total, open_item.line_items[0].product_id) == (1089, "")
    stock = api.get_stock_item(stubs.inventory, product.id, "web")
    assert (stock.sold, stock.on_hand) == (500, -500)


# ---- conflicts, duplicates within a stream -----------------------------------------------


def test_changed_reimport_is_a_conflict_and_changes_nothing(
    stubs: Stubs, settings: Settings
) -> None:
    a = api.imported_order("webshop", "A-1")
    b = api.imported_order("webshop", "B-1")
    first = api.import_sales(stubs.sales, [[a, b]])
    sale_a = api.get_sale(stubs.sales, first.outcomes[0].sale_id)
    events = _event_count(settings)

    changed_note = api.imported_order("webshop", "A-1", note="gift wrap")
    changed_lines = api.imported_order(
        "webshop",
        "B-1",
        line_items=[api.line_item(quantity=2, tax_rate_ppm=88750)],
        payments=[pb.ImportedPayment(tender=pb.TENDER_TYPE_CASH, amount=2178)],
    )
    again = api.import_sales(stubs.sales, [[changed_note], [changed_lines, a]])

    assert _statuses(again) == [CONFLICT, CONFLICT, DUPLICATE]
    assert _counts(again) == (0, 1, 2, 0)
    assert [o.sale_id for o in again.outcomes] == [
        first.outcomes[0].sale_id,
        first.outcomes[1].sale_id,
        first.outcomes[0].sale_id,
    ]
    assert again.outcomes[0].message
    assert again.outcomes[2].message == ""
    assert api.get_sale(stubs.sales, sale_a.id) == sale_a
    assert _event_count(settings) == events


def test_an_order_repeated_within_one_stream(stubs: Stubs) -> None:
    order = api.imported_order("webshop", "X-1")
    changed = api.imported_order("webshop", "X-1", note="changed")

    response = api.import_sales(stubs.sales, [[order, order], [changed]])

    assert _statuses(response) == [IMPORTED, DUPLICATE, CONFLICT]
    assert len({o.sale_id for o in response.outcomes}) == 1
    assert [o.index for o in response.outcomes] == [0, 1, 2]
    assert api.get_sale(stubs.sales, response.outcomes[0].sale_id).note == ""


# ---- rejections --------------------------------------------------------------------------


def test_invalid_orders_are_rejected_while_the_others_import(
    stubs: Stubs, settings: Settings
) -> None:
    api.create_product(stubs.catalog)
    gone = api.create_product(stubs.catalog, sku="GONE-1")
    api.discontinue_product(stubs.catalog, gone.id)
    order = api.imported_order
    rejected: list[tuple[pb.ImportedOrder, str]] = [
        (order("webshop", "r-1", payments=[]), "payments"),
        (order("webshop", "r-2", currency_code="ZZZ"), "currency_code"),
        (order("Web Shop", "r-3"), "channel"),
        (order("webshop", ""), "external_order_id"),
        (order("webshop", "r-5", sales_channel=99), "sales_channel"),
        (order("webshop", "r-6", line_items=[]), "line_items"),
        (order("webshop", "r-7", line_items=[api.line_item(quantity=0)]), "quantity"),
        (order("webshop", "r-8", placed_at=Timestamp(seconds=2**62)), "placed_at"),
        (order("webshop", "r-9", note="card 4111 1111 1111 1111"), "note"),
        (
            order(
                "webshop",
                "r-10",
                payments=[pb.ImportedPayment(tender=pb.TENDER_TYPE_CARD, amount=1000)],
            ),
            "1089",  # payments do not add up to the total
        ),
        (
            order(
                "webshop", "r-11", line_items=[pb.LineItemInput(sku="NOPE", name="x", quantity=1)]
            ),
            "NOPE",  # an unknown sku needs a price
        ),
        (
            _catalog_order(
                "webshop",
                "r-12",
                line_items=[pb.LineItemInput(sku="GONE-1", name="Gone", quantity=1)],
            ),
            "discontinued",
        ),
        (
            _catalog_order(
                "webshop",
                "r-13",
                line_items=[
                    pb.LineItemInput(sku="COF-250", name="Coffee", quantity=1, discount=5000)
                ],
            ),
            "discount",
        ),
    ]
    good = [order("webshop", "g-1"), _catalog_order("marketplace", "g-2"), order("pos", "g-3")]
    batch = [
        good[0],
        *(o for o, _ in rejected[:7]),
        good[1],
        *(o for o, _ in rejected[7:]),
        good[2],
    ]

    response = api.import_sales(stubs.sales, [batch])

    expected = [IMPORTED, *[REJECTED] * 7, IMPORTED, *[REJECTED] * 6, IMPORTED]
    assert _statuses(response) == expected
    assert _counts(response) == (3, 0, 0, 13)
    outcomes = [o for o in response.outcomes if o.status == REJECTED]
    for outcome, (_, hint) in zip(outcomes, rejected, strict=True):
        assert hint in outcome.message, (hint, outcome)
        assert outcome.sale_id == ""
        assert "4111" not in outcome.message  # card data is never echoed
    for outcome in response.outcomes:
        if outcome.status == IMPORTED:
            assert api.get_sale(stubs.sales, outcome.sale_id).status == pb.SALE_STATUS_COMPLETED

    # A rejected order recorded nothing, so its corrected version imports.
    events = _event_count(settings)
    fixed = api.import_sales(stubs.sales, [[order("webshop", "r-1"), *good]])
    assert _statuses(fixed) == [IMPORTED, DUPLICATE, DUPLICATE, DUPLICATE]
    assert _event_count(settings) > events


def test_empty_streams_import_nothing(stubs: Stubs) -> None:
    streams: list[list[list[pb.ImportedOrder]]] = [[], [[]], [[], []]]
    for batches in streams:
        response = api.import_sales(stubs.sales, batches)
        assert response == pb.ImportSalesResponse()


# ---- tenancy -----------------------------------------------------------------------------


def test_imports_are_per_merchant(stubs: Stubs, two_merchants: tuple[Metadata, Metadata]) -> None:
    a, b = two_merchants
    order = api.imported_order("webshop", "1001")

    mine = api.import_sales(stubs.sales, [[order]], metadata=a)
    theirs = api.import_sales(stubs.sales, [[order]], metadata=b)

    assert _statuses(mine) == _statuses(theirs) == [IMPORTED]
    sale_id = mine.outcomes[0].sale_id
    assert sale_id != theirs.outcomes[0].sale_id
    failure = api.expect_failure(lambda: api.get_sale(stubs.sales, sale_id, metadata=b))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "SALE_NOT_FOUND")
    # Other merchants' catalogs do not price imported lines.
    api.create_product(stubs.catalog, metadata=a)
    priced = api.import_sales(stubs.sales, [[_catalog_order("webshop", "1002")]], metadata=b)
    assert _statuses(priced) == [REJECTED]
    unauthenticated = api.expect_failure(lambda: api.import_sales(stubs.sales, [[order]]))
    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED


# ---- malformed input never breaks the server ---------------------------------------------


TENDER = fuzz.INT32.map(pb.TenderType.ValueType)


def _total(lines: list[pb.LineItemInput]) -> int:
    """What the ledger should charge for lines (COF-250: 1250 at 8.875 %), or 0 if unknown."""
    total = 0
    for line in lines:
        catalog = line.sku == "COF-250"
        price = line.unit_price if line.HasField("unit_price") else (1250 if catalog else 0)
        tax = line.tax_rate_ppm if line.HasField("tax_rate_ppm") else (88750 if catalog else 0)
        net = line.quantity * price - line.discount
        if net < 0:
            return 0
        total += net + (net * tax + 500_000) // 1_000_000
    return total


ENTRY_METHOD = fuzz.INT32.map(pb.CardEntryMethod.ValueType)
CHANNEL = fuzz.INT32.map(pb.SalesChannel.ValueType)


@st.composite
def _well_formed_order(draw: st.DrawFn) -> pb.ImportedOrder:
    """An order that should import, but for the odd hostile discount, price or payment."""
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        line = pb.LineItemInput(
            sku=draw(st.sampled_from(["COF-250", "OPEN-1", "NOPE"])),
            name="Coffee",
            quantity=draw(st.integers(1, 5)),
            # Now and then more than the line is worth (at its own or the catalog's price).
            discount=draw(
                st.integers(0, 2**63 - 1) if draw(st.integers(0, 9)) == 9 else st.integers(0, 100)
            ),
        )
        if line.sku != "COF-250" or draw(st.booleans()):
            line.unit_price = draw(st.integers(100, 2000) | st.integers(0, 10**15))
        if draw(st.booleans()):
            line.tax_rate_ppm = draw(st.integers(0, 10**6))
        lines.append(line)
    total = _total(lines)
    amount = draw(st.integers(1, 10**15)) if total < 1 or draw(st.integers(0, 9)) == 9 else total
    order = api.imported_order(
        draw(st.sampled_from(["webshop", "marketplace"])),
        # A few ids that collide (duplicates, conflicts) and fresh ones (imports).
        draw(st.sampled_from(["1", "2", "3", "4"]) | st.uuids().map(str)),
        line_items=lines,
        note=draw(st.sampled_from(["", "gift"])),
    )
    order.payments[0].amount = amount
    return order


@st.composite
def _wild_order(draw: st.DrawFn) -> pb.ImportedOrder:
    line = pb.LineItemInput(
        sku=draw(fuzz.TEXT),
        name=draw(fuzz.TEXT),
        quantity=draw(fuzz.SMALL | fuzz.INT32),
        discount=draw(fuzz.NUMBER),
    )
    if draw(st.booleans()):
        line.unit_price = draw(fuzz.NUMBER)
    if draw(st.booleans()):
        line.tax_rate_ppm = draw(fuzz.UINT32)
    payment = pb.ImportedPayment(
        tender=draw(TENDER), amount=draw(fuzz.NUMBER), auth_code=draw(fuzz.TEXT)
    )
    if draw(st.booleans()):
        payment.card.CopyFrom(
            pb.CardDetails(
                brand=draw(fuzz.TEXT), last4=draw(fuzz.TEXT), entry_method=draw(ENTRY_METHOD)
            )
        )
    order = pb.ImportedOrder(
        channel=draw(st.sampled_from(["webshop"]) | fuzz.TEXT),
        external_order_id=draw(st.sampled_from(["1"]) | fuzz.TEXT),
        sales_channel=draw(CHANNEL),
        location_id=draw(fuzz.TEXT),
        currency_code=draw(st.sampled_from(["USD"]) | fuzz.TEXT),
        line_items=draw(st.lists(st.just(line), max_size=2)),
        customer_id=draw(fuzz.TEXT),
        payments=draw(st.lists(st.just(payment), max_size=2)),
        note=draw(fuzz.TEXT),
    )
    if draw(st.booleans()):
        order.placed_at.seconds = draw(st.integers(-(2**40), 2**40))
        order.placed_at.nanos = draw(fuzz.INT32)
    return order


def _import_streams(stubs: Stubs) -> st.SearchStrategy[Callable[[], object]]:
    def call(batches: list[list[pb.ImportedOrder]]) -> Callable[[], object]:
        def run() -> None:
            response = api.import_sales(stubs.sales, batches)
            sent = [order for batch in batches for order in batch]
            assert [o.index for o in response.outcomes] == list(range(len(sent)))
            assert sum(_counts(response)) == len(sent)
            for outcome, order in zip(response.outcomes, sent, strict=True):
                assert outcome.external_order_id == order.external_order_id
                assert outcome.status in (IMPORTED, DUPLICATE, CONFLICT, REJECTED)
                assert bool(outcome.sale_id) == (outcome.status != REJECTED), outcome
                if outcome.status in (REJECTED, CONFLICT):
                    assert outcome.message, outcome

        return run

    orders = _well_formed_order() | _well_formed_order() | _wild_order()
    return st.lists(st.lists(orders, max_size=3), max_size=3).map(call)


def test_malformed_imports_never_answer_internal_or_unknown(stubs: Stubs) -> None:
    api.create_product(stubs.catalog)

    fuzz.never_internal(_import_streams(stubs), max_examples=100)


def test_an_open_order_imports_unpaid_and_is_paid_later_by_the_usual_rpcs(stubs: Stubs) -> None:
    ext = f"open-{uuid.uuid4()}"
    open_order = api.imported_order("webshop", ext, payments=[], open=True)
    paid_open = api.imported_order("webshop", f"{ext}-paid", open=True)

    response = api.import_sales(stubs.sales, [[open_order, paid_open]])

    imported, rejected = response.outcomes
    assert imported.status == pb.IMPORT_STATUS_IMPORTED
    assert rejected.status == pb.IMPORT_STATUS_REJECTED
    assert "payments" in rejected.message
    sale = api.get_sale(stubs.sales, imported.sale_id)
    assert (sale.status, sale.amount_due, len(sale.payments)) == (pb.SALE_STATUS_OPEN, 1089, 0)
    payment = api.request_payment(stubs.sales, sale.id, sale.amount_due).payment
    done = api.record_result(stubs.sales, sale.id, payment.id).sale
    assert done.status == pb.SALE_STATUS_COMPLETED
