"""Open orders from other channels: imported unpaid, they hold their stock like an online
sale, and are paid, completed or canceled later by the same commands as any sale."""

from __future__ import annotations

from dataclasses import replace

from ledger.application import ImportStatus, Ledger
from ledger.domain import commands as c
from ledger.domain.product import Product
from ledger.domain.sale import SaleStatus
from tests.integration.catalog_support import (
    approve,
    catalog_line,
    create_product,
    receive,
    request_full_payment,
    stock,
)
from tests.integration.conftest import MERCHANT_A, ctx


def open_order(n: int, mugs: int) -> c.ImportOrder:
    return c.ImportOrder(
        channel="webshop",
        external_order_id=f"open-{n}",
        sales_channel=c.Channel.ONLINE,
        location_id="web",
        currency_code="USD",
        line_items=(catalog_line("MUG-1", mugs),),
        payments=(),
        open=True,
    )


def levels(ledger: Ledger, mug: Product) -> tuple[int, int, int]:
    item = stock(ledger, mug, "web")
    return item.on_hand, item.reserved, item.available


def test_open_orders_reserve_and_a_short_one_alone_is_refused(ledger: Ledger) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 5, "web")

    results = ledger.import_sales(ctx(), [open_order(1, 2), open_order(2, 4), open_order(3, 3)])

    assert [r.status for r in results] == [
        ImportStatus.IMPORTED,
        ImportStatus.REJECTED,  # 4 wanted, 3 left after the first order
        ImportStatus.IMPORTED,
    ]
    assert "INSUFFICIENT_STOCK" in results[1].message
    assert levels(ledger, mug) == (5, 5, 0)
    sale = ledger.get_sale(MERCHANT_A, results[0].sale_id)
    assert (sale.status, sale.amount_due, sale.payments) == (SaleStatus.OPEN, sale.total, {})
    item = stock(ledger, mug, "web")
    assert item.reservations == {results[0].sale_id: 2, results[2].sale_id: 3}
    # The same open order again is a duplicate and reserves nothing more.
    (again,) = ledger.import_sales(ctx(), [open_order(1, 2)])
    assert again.status is ImportStatus.DUPLICATE
    assert levels(ledger, mug) == (5, 5, 0)


def test_an_open_order_is_paid_and_completed_or_canceled_like_any_sale(ledger: Ledger) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 5, "web")
    paid, canceled = ledger.import_sales(ctx(), [open_order(1, 2), open_order(2, 3)])

    payment_id = request_full_payment(ledger, paid.sale_id)
    done = ledger.record_payment_result(ctx(), approve(paid.sale_id, payment_id)).sale
    ledger.cancel_sale(ctx(), c.CancelSale(canceled.sale_id, "customer canceled"))

    assert done.status is SaleStatus.COMPLETED
    assert ledger.get_sale(MERCHANT_A, canceled.sale_id).status is SaleStatus.CANCELED
    assert levels(ledger, mug) == (3, 0, 3)  # 2 sold from the reservation, 3 released


def test_an_open_order_with_payments_is_rejected(ledger: Ledger) -> None:
    create_product(ledger)
    order = replace(open_order(1, 1), payments=(c.ImportedPayment(c.Tender.CASH, 100),))
    (result,) = ledger.import_sales(ctx(), [order])
    assert result.status is ImportStatus.REJECTED
    assert "payments" in result.message
