"""A merchant sees only its own sales; another merchant's sale looks exactly like no sale."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from ledger.application import Ledger, SaleResult
from ledger.domain import commands as c
from ledger.domain.errors import NotFound
from tests.integration.conftest import (
    BAGEL,
    MERCHANT_A,
    MERCHANT_B,
    Db,
    PendingPayment,
    approved_by_card,
    ctx,
    new_customer,
    request_payment_cmd,
    sale_with_pending_payment,
)

Mutation = Callable[[Ledger, PendingPayment, str], SaleResult]

# Every command on an existing sale, sent by merchant B.
MUTATIONS: dict[str, Mutation] = {
    "add_line_item": lambda led, p, line: led.add_line_item(
        ctx(MERCHANT_B), c.AddLineItem(p.sale_id, BAGEL)
    ),
    "remove_line_item": lambda led, p, line: led.remove_line_item(
        ctx(MERCHANT_B), c.RemoveLineItem(p.sale_id, line)
    ),
    "attach_customer": lambda led, p, line: led.attach_customer(
        ctx(MERCHANT_B), c.AttachCustomer(p.sale_id, "cust-b")
    ),
    "request_payment": lambda led, p, line: led.request_payment(
        ctx(MERCHANT_B), request_payment_cmd(p.sale_id, 1)
    ),
    "record_payment_result": lambda led, p, line: led.record_payment_result(
        ctx(MERCHANT_B), approved_by_card(p)
    ),
    "cancel_payment": lambda led, p, line: led.cancel_payment(
        ctx(MERCHANT_B), c.CancelPayment(p.sale_id, p.payment_id)
    ),
    "refund_payment": lambda led, p, line: led.refund_payment(
        ctx(MERCHANT_B), c.RefundPayment(p.sale_id, p.payment_id, 1)
    ),
    "cancel_sale": lambda led, p, line: led.cancel_sale(ctx(MERCHANT_B), c.CancelSale(p.sale_id)),
}


def _not_found_message(error: NotFound, sale_id: str) -> str:
    """The error's message with the asked-for id taken out: it must not depend on the owner."""
    return error.message.replace(sale_id, "<id>")


def test_another_merchants_sale_cannot_be_read(ledger: Ledger) -> None:
    p = sale_with_pending_payment(ledger, MERCHANT_A)
    missing = str(uuid.uuid4())

    with pytest.raises(NotFound) as foreign:
        ledger.get_sale(MERCHANT_B, p.sale_id)
    with pytest.raises(NotFound) as absent:
        ledger.get_sale(MERCHANT_B, missing)

    assert foreign.value.reason == absent.value.reason == "SALE_NOT_FOUND"
    assert type(foreign.value) is type(absent.value)
    assert _not_found_message(foreign.value, p.sale_id) == _not_found_message(absent.value, missing)
    assert ledger.get_sale(MERCHANT_A, p.sale_id).merchant_id == MERCHANT_A


@pytest.mark.parametrize("command", sorted(MUTATIONS))
def test_another_merchants_sale_cannot_be_changed(ledger: Ledger, db: Db, command: str) -> None:
    p = sale_with_pending_payment(ledger, MERCHANT_A, amount=100)
    sale = ledger.get_sale(MERCHANT_A, p.sale_id)
    line_id = sale.line_items[0].line_id
    mutate = MUTATIONS[command]
    before = (db.event_count(), db.command_count())

    with pytest.raises(NotFound) as foreign:
        mutate(ledger, p, line_id)
    random_sale = PendingPayment(str(uuid.uuid4()), p.payment_id, p.amount)
    with pytest.raises(NotFound) as absent:
        mutate(ledger, random_sale, line_id)

    assert foreign.value.reason == absent.value.reason == "SALE_NOT_FOUND"
    assert _not_found_message(foreign.value, p.sale_id) == _not_found_message(
        absent.value, random_sale.sale_id
    )
    assert (db.event_count(), db.command_count()) == before
    assert db.commands(MERCHANT_B) == []
    assert ledger.get_sale(MERCHANT_A, p.sale_id).version == sale.version


def test_a_request_id_of_another_merchant_replays_nothing_of_theirs(ledger: Ledger) -> None:
    """B reusing A's request id for the very same command gets its own, new answer."""
    p = sale_with_pending_payment(ledger, MERCHANT_A)
    a_ctx = ctx(MERCHANT_A)
    customer = new_customer(ledger, MERCHANT_A)
    ledger.attach_customer(a_ctx, c.AttachCustomer(p.sale_id, customer))

    with pytest.raises(NotFound) as error:
        ledger.attach_customer(
            ctx(MERCHANT_B, a_ctx.request_id), c.AttachCustomer(p.sale_id, customer)
        )

    assert error.value.reason == "SALE_NOT_FOUND"
