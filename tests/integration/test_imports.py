"""Importing finished orders against the real event store.

An order is known by (channel, external order id): the same content again is a DUPLICATE,
different content a CONFLICT, and neither writes anything. Invalid orders are REJECTED one
by one while the rest of the batch imports.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from ledger.application import ImportResult, ImportStatus, Ledger
from ledger.application.imports import imported_sale_id
from ledger.domain import commands as c
from ledger.domain import product as prod
from ledger.domain.errors import FieldViolation, InvalidRequest, NotFound
from ledger.domain.sale import PaymentStatus, SaleStatus
from tests.integration.catalog_support import (
    MUG_UNIT_TOTAL,
    catalog_line,
    create_product,
    receive,
    stock,
    topic_count,
)
from tests.integration.conftest import (
    CARD,
    MERCHANT_A,
    MERCHANT_B,
    Db,
    ctx,
    failures,
    race,
    successes,
)

WRAP = c.LineItemInput(sku="GIFT-WRAP", name="Gift wrap", quantity=1, unit_price=250)
PLACED = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
CHANNELS = ("shopify", "amazon")


def order(n: int, channel: str = "shopify", mugs: int = 1, **changes: object) -> c.ImportOrder:
    """Order `n` of a channel: `mugs` catalog mugs and gift wrap, paid by card and gift card."""
    total = mugs * MUG_UNIT_TOTAL + WRAP.quantity * (WRAP.unit_price or 0)
    base = c.ImportOrder(
        channel=channel,
        external_order_id=f"{channel}-{n}",
        sales_channel=c.Channel.ONLINE,
        location_id="web",
        currency_code="USD",
        line_items=(catalog_line("MUG-1", mugs), WRAP),
        payments=(
            c.ImportedPayment(c.Tender.CARD, total - 100, CARD, f"AUTH{n}", f"ch_{n}"),
            c.ImportedPayment(c.Tender.GIFT_CARD, 100),
        ),
        placed_at=PLACED + timedelta(minutes=n),
        note=f"order {n}",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def batch(count: int, start: int = 0) -> list[c.ImportOrder | InvalidRequest]:
    """`count` orders, alternating between the two channels, of 1 to 3 mugs each."""
    return [order(n, CHANNELS[n % 2], mugs=1 + n % 3) for n in range(start, start + count)]


def mugs_in(orders: list[c.ImportOrder | InvalidRequest]) -> int:
    return sum(o.line_items[0].quantity for o in orders if isinstance(o, c.ImportOrder))


def statuses(results: list[ImportResult]) -> list[ImportStatus]:
    return [r.status for r in results]


def test_thousand_orders_import_once_and_again_as_duplicates(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    orders = batch(1000)
    started = time.monotonic()

    first = ledger.import_sales(ctx(), orders)

    imported_in = time.monotonic() - started
    assert statuses(first) == [ImportStatus.IMPORTED] * 1000
    assert len({r.sale_id for r in first}) == 1000
    assert topic_count(db, "posledger.SaleImported") == 1000
    assert topic_count(db, "posledger.SaleCompleted") == 1000
    item = stock(ledger, mug, "web")
    assert item.sold == mugs_in(orders)
    assert item.on_hand == -mugs_in(orders)
    assert item.version == 1 + 1000  # opened, then one movement per order
    events = db.event_count()

    again = ledger.import_sales(ctx(), orders)

    assert statuses(again) == [ImportStatus.DUPLICATE] * 1000
    assert [r.sale_id for r in again] == [r.sale_id for r in first]
    assert db.event_count() == events
    assert stock(ledger, mug, "web").sold == mugs_in(orders)
    assert imported_in < 15, f"importing 1,000 orders took {imported_in:.1f}s"


def test_imported_order_is_a_completed_sale_priced_from_the_catalog(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 10, "web")

    (result,) = ledger.import_sales(ctx(), [order(7, mugs=2)])

    assert result.status is ImportStatus.IMPORTED
    assert result.sale_id == str(imported_sale_id(MERCHANT_A, "shopify", "shopify-7"))
    sale = ledger.get_sale(MERCHANT_A, result.sale_id)
    assert sale.status is SaleStatus.COMPLETED
    assert sale.total == sale.paid_total == 2 * MUG_UNIT_TOTAL + 250
    assert (sale.import_channel, sale.external_order_id, sale.placed_at) == (
        "shopify",
        "shopify-7",
        PLACED + timedelta(minutes=7),
    )
    mug_line = sale.line_items[0]
    assert (mug_line.unit_price, mug_line.tax_rate_ppm, mug_line.product_id) == (
        mug.price,
        mug.tax_rate_ppm,
        str(mug.id),
    )
    assert [(p.tender, p.status) for p in sale.payments.values()] == [
        ("card", PaymentStatus.APPROVED),
        ("gift_card", PaymentStatus.APPROVED),
    ]
    assert db.topics(result.sale_id) == [
        "posledger.SaleCreated",
        "posledger.SaleImported",
        "posledger.SaleCompleted",
    ]
    assert stock(ledger, mug, "web").on_hand == 8

    # An imported sale refunds like any other, and returned goods go back on the shelf.
    card_payment = next(p.id for p in sale.payments.values() if p.tender == "card")
    ledger.refund_payment(
        ctx(),
        c.RefundPayment(
            result.sale_id,
            card_payment,
            MUG_UNIT_TOTAL,
            "",
            "",
            (c.RestockItem(mug_line.line_id, 1),),
        ),
    )
    assert stock(ledger, mug, "web").on_hand == 9


def test_changed_reimport_is_a_conflict_and_changes_nothing(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    (first,) = ledger.import_sales(ctx(), [order(1)])
    events = db.event_count()
    # A catalog price change later does not make the same order look different.
    ledger.update_product(ctx(), prod.UpdateProduct(str(mug.id), (("price", 1),)))
    events += 1

    results = ledger.import_sales(
        ctx(),
        [
            order(1, note="edited"),
            order(1, mugs=2),
            order(1),
        ],
    )

    assert statuses(results) == [
        ImportStatus.CONFLICT,
        ImportStatus.CONFLICT,
        ImportStatus.DUPLICATE,
    ]
    assert {r.sale_id for r in results} == {first.sale_id}
    assert results[0].message
    assert db.event_count() == events
    sale = ledger.get_sale(MERCHANT_A, first.sale_id)
    assert sale.note == "order 1"
    assert sale.line_items[0].unit_price == mug.price
    assert stock(ledger, mug, "web").sold == 1


def test_invalid_orders_are_rejected_while_the_rest_import(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    create_product(ledger, sku="OLD-1")
    ledger.discontinue_product(
        ctx(), prod.DiscontinueProduct(str(create_product(ledger, sku="GONE-1").id))
    )
    unpaid = order(3)
    bad: list[c.ImportOrder | InvalidRequest] = [
        order(1, currency_code="usd"),  # fails validation
        replace(unpaid, payments=unpaid.payments[:1]),  # payments short of the total
        order(4, line_items=(catalog_line("NOPE-1"),)),  # unknown sku, no price
        order(5, line_items=(catalog_line("GONE-1"), WRAP)),  # discontinued
        InvalidRequest([FieldViolation("orders[6].placed_at", "is not a timestamp")]),
    ]
    good = batch(20, start=100)
    orders: list[c.ImportOrder | InvalidRequest] = [*good[:10], *bad, *good[10:]]

    results = ledger.import_sales(ctx(), orders)

    assert statuses(results[:10]) == statuses(results[-10:]) == [ImportStatus.IMPORTED] * 10
    rejected = results[10:15]
    assert statuses(rejected) == [ImportStatus.REJECTED] * 5
    assert all(r.sale_id == "" for r in rejected)
    assert "currency_code" in rejected[0].message
    assert "payments add up to" in rejected[1].message
    assert "NOPE-1" in rejected[2].message
    assert "discontinued" in rejected[3].message
    assert "placed_at" in rejected[4].message
    assert topic_count(db, "posledger.SaleImported") == 20
    assert stock(ledger, mug, "web").sold == mugs_in(good)
    for n, channel in ((1, "shopify"), (3, "shopify"), (4, "shopify"), (5, "shopify")):
        with pytest.raises(NotFound):
            ledger.get_sale(
                MERCHANT_A, str(imported_sale_id(MERCHANT_A, channel, f"{channel}-{n}"))
            )

    # Fixed, a rejected order imports: a rejection recorded nothing.
    (fixed,) = ledger.import_sales(ctx(), [order(3)])
    assert fixed.status is ImportStatus.IMPORTED


def test_an_order_twice_in_one_batch_is_recorded_once(ledger: Ledger, db: Db) -> None:
    create_product(ledger)

    results = ledger.import_sales(ctx(), [order(1), order(1), order(1, note="other")])

    assert statuses(results) == [
        ImportStatus.IMPORTED,
        ImportStatus.DUPLICATE,
        ImportStatus.CONFLICT,
    ]
    assert topic_count(db, "posledger.SaleImported") == 1


def test_one_external_id_on_two_channels_or_merchants_is_two_orders(ledger: Ledger) -> None:
    create_product(ledger, MERCHANT_A)
    create_product(ledger, MERCHANT_B)
    shopify = order(1, "shopify")
    amazon = replace(order(1, "amazon"), external_order_id=shopify.external_order_id)

    a = ledger.import_sales(ctx(MERCHANT_A), [shopify, amazon])
    b = ledger.import_sales(ctx(MERCHANT_B), [shopify])

    assert statuses(a) == statuses(b)[:1] * 2 == [ImportStatus.IMPORTED] * 2
    assert len({a[0].sale_id, a[1].sale_id, b[0].sale_id}) == 3
    with pytest.raises(NotFound):
        ledger.get_sale(MERCHANT_B, a[0].sale_id)
    with pytest.raises(NotFound):
        ledger.get_sale(MERCHANT_A, b[0].sale_id)


def test_concurrent_imports_of_the_same_orders_record_each_once(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    orders = batch(300)  # two chunks each

    outcomes = race(
        partial(ledger.import_sales, ctx(), orders),
        partial(ledger.import_sales, ctx(), orders),
    )

    assert failures(outcomes) == []
    first, second = successes(outcomes)
    for mine, theirs in zip(first, second, strict=True):
        assert {mine.status, theirs.status} == {ImportStatus.IMPORTED, ImportStatus.DUPLICATE}
        assert mine.sale_id == theirs.sale_id
    assert topic_count(db, "posledger.SaleImported") == 300
    assert (
        len({row.originator_id for row in db.events() if row.topic == "posledger.SaleImported"})
        == 300
    )
    assert stock(ledger, mug, "web").sold == mugs_in(orders)
