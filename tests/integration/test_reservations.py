"""Reservations: a sale holds its units from its first payment request to its end.

Online, marketplace and phone sales are refused when the location cannot cover them; an
in-store sale goes ahead and is flagged. The sale and its stock items commit together.
"""

from __future__ import annotations

from functools import partial

import pytest

from ledger.application import Ledger
from ledger.domain import commands as c
from ledger.domain import inventory as d
from ledger.domain.errors import RuleViolated
from ledger.domain.product import Product
from ledger.domain.sale import SaleStatus
from tests.integration.catalog_support import (
    approve,
    catalog_line,
    create_product,
    new_sale,
    receive,
    request_full_payment,
    stock,
    transaction_of_events,
)
from tests.integration.conftest import (
    Db,
    ctx,
    failures,
    race,
    request_payment_cmd,
    successes,
)

ONLINE = c.Channel.ONLINE


def levels(ledger: Ledger, product: Product) -> tuple[int, int, int]:
    item = stock(ledger, product)
    return item.on_hand, item.reserved, item.available


def online_sale(ledger: Ledger, *lines: c.LineItemInput, channel: c.Channel = ONLINE) -> str:
    return str(new_sale(ledger, *lines, channel=channel).sale.id)


def test_first_payment_request_reserves_in_the_same_transaction(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 3)
    sale_id = online_sale(ledger, catalog_line("MUG-1", 2))
    assert levels(ledger, mug) == (3, 0, 3)  # an open sale without a payment holds nothing

    request_full_payment(ledger, sale_id)

    item = stock(ledger, mug)
    assert (item.on_hand, item.reserved, item.available) == (3, 2, 1)
    assert item.reservations == {sale_id: 2}
    sale = ledger.get_sale(ctx().merchant_id, sale_id)
    tx = transaction_of_events(db)
    assert tx[(item.id, item.version)] == tx[(sale.id, sale.version)]
    reserved = db.events(item.id)[-1]
    assert reserved.topic == "posledger.StockReserved"
    assert (reserved.state["sale_id"], reserved.state["quantity"]) == (sale_id, 2)


@pytest.mark.parametrize("channel", [c.Channel.ONLINE, c.Channel.MARKETPLACE, c.Channel.PHONE])
def test_channels_that_must_not_oversell_are_refused_naming_the_lines(
    ledger: Ledger, db: Db, channel: c.Channel
) -> None:
    mug = create_product(ledger)
    bowl = create_product(ledger, sku="BOWL-1", price=900)
    receive(ledger, mug, 3)
    receive(ledger, bowl, 10)
    first = online_sale(ledger, catalog_line("MUG-1", 2), channel=channel)
    request_full_payment(ledger, first)
    second = online_sale(
        ledger,
        catalog_line("MUG-1", 1),
        catalog_line("BOWL-1", 1),
        catalog_line("MUG-1", 1),
        channel=channel,
    )
    before = db.event_count()

    with pytest.raises(RuleViolated) as refused:
        request_full_payment(ledger, second)

    assert refused.value.reason == "INSUFFICIENT_STOCK"
    assert [v.field for v in refused.value.violations] == ["line_items[0]", "line_items[2]"]
    assert {v.reason for v in refused.value.violations} == {"INSUFFICIENT_STOCK"}
    assert "1 units available" in refused.value.violations[0].description
    assert db.event_count() == before  # neither the payment nor any reservation
    assert levels(ledger, mug) == (3, 2, 1)
    assert stock(ledger, bowl).reserved == 0


def test_in_store_may_oversell_and_the_sale_is_flagged(ledger: Ledger) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 1)
    sale = new_sale(ledger, catalog_line("MUG-1", 2), catalog_line("MUG-1", 2)).sale
    sale_id = str(sale.id)

    payment_id = request_full_payment(ledger, sale_id)

    assert levels(ledger, mug) == (1, 4, -3)
    flagged = ledger.get_sale(ctx().merchant_id, sale_id)
    # The 3 units short are put on the last lines first.
    assert flagged.oversold == {sale.line_items[1].line_id: 2, sale.line_items[0].line_id: 1}
    done = ledger.record_payment_result(ctx(), approve(sale_id, payment_id)).sale
    assert done.status is SaleStatus.COMPLETED
    assert levels(ledger, mug) == (-3, 0, -3)


def test_completion_turns_the_reservation_into_the_sale(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 5)
    sale_id = online_sale(ledger, catalog_line("MUG-1", 2))
    payment_id = request_full_payment(ledger, sale_id)

    ledger.record_payment_result(ctx(), approve(sale_id, payment_id))

    item = stock(ledger, mug)
    assert (item.on_hand, item.reserved, item.sold, item.reservations) == (3, 0, 2, {})
    sold = db.events(item.id)[-1]
    assert sold.topic == "posledger.StockSoldFromReservation"
    assert (sold.state["quantity"], sold.state["released"]) == (2, 2)


@pytest.mark.parametrize("ending", ["declined", "canceled"])
def test_the_last_pending_payment_ending_without_money_releases(
    ledger: Ledger, db: Db, ending: str
) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 2)
    sale_id = online_sale(ledger, catalog_line("MUG-1", 2))
    payment_id = request_full_payment(ledger, sale_id)
    assert levels(ledger, mug) == (2, 2, 0)

    if ending == "declined":
        declined = c.RecordPaymentResult(
            sale_id, payment_id, c.Outcome.DECLINED, tender=c.Tender.CASH
        )
        ledger.record_payment_result(ctx(), declined)
    else:
        ledger.cancel_payment(ctx(), c.CancelPayment(sale_id, payment_id, "customer left"))

    assert levels(ledger, mug) == (2, 0, 2)
    released = db.events(stock(ledger, mug).id)[-1]
    assert released.topic == "posledger.StockReservationReleased"
    assert released.state["reason"] == "payments_ended"
    # Asking again reserves again, and the sale can still be canceled, holding nothing.
    again = request_full_payment(ledger, sale_id)
    assert levels(ledger, mug) == (2, 2, 0)
    ledger.cancel_payment(ctx(), c.CancelPayment(sale_id, again, ""))
    ledger.cancel_sale(ctx(), c.CancelSale(sale_id, "changed mind"))
    assert levels(ledger, mug) == (2, 0, 2)


def test_a_part_paid_sale_keeps_holding_its_units(ledger: Ledger) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 2)
    sale_id = online_sale(ledger, catalog_line("MUG-1", 2))
    part = ledger.request_payment(ctx(), request_payment_cmd(sale_id, 500)).ids["payment_id"]
    ledger.record_payment_result(ctx(), approve(sale_id, part))
    rest = request_full_payment(ledger, sale_id)
    ledger.cancel_payment(ctx(), c.CancelPayment(sale_id, rest, ""))

    assert levels(ledger, mug) == (2, 2, 0)  # money is kept: the units stay promised


def test_a_line_added_to_a_reserving_sale_is_reserved_too(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 3)
    sale_id = online_sale(ledger, catalog_line("MUG-1", 1))
    ledger.request_payment(ctx(), request_payment_cmd(sale_id, 100))
    ledger.add_line_item(ctx(), c.AddLineItem(sale_id, catalog_line("MUG-1", 2)))
    assert levels(ledger, mug) == (3, 3, 0)
    before = db.event_count()

    with pytest.raises(RuleViolated) as refused:
        ledger.add_line_item(ctx(), c.AddLineItem(sale_id, catalog_line("MUG-1", 1)))

    assert refused.value.reason == "INSUFFICIENT_STOCK"
    assert db.event_count() == before


def test_transfers_never_move_reserved_units(ledger: Ledger) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 3)
    request_full_payment(ledger, online_sale(ledger, catalog_line("MUG-1", 2)))
    move = partial(d.TransferStock, str(mug.id), "loc-1", "loc-2")

    with pytest.raises(RuleViolated) as refused:
        ledger.transfer_stock(ctx(), move(2))

    assert refused.value.reason == "INSUFFICIENT_STOCK"
    ledger.transfer_stock(ctx(), move(1))
    assert levels(ledger, mug) == (2, 2, 0)


def test_racing_online_sales_never_take_more_than_is_available(ledger: Ledger) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 5)
    sales = [online_sale(ledger, catalog_line("MUG-1", 1)) for _ in range(12)]

    outcomes = race(*[partial(request_full_payment, ledger, s) for s in sales])

    assert len(successes(outcomes)) == 5
    refused = failures(outcomes)
    assert len(refused) == 7
    assert all(isinstance(e, RuleViolated) and e.reason == "INSUFFICIENT_STOCK" for e in refused)
    item = stock(ledger, mug)
    assert (item.on_hand, item.reserved, item.available) == (5, 5, 0)
    assert sum(item.reservations.values()) == 5
