"""Open imported orders: the Sale's rules, and replay of SaleImported events stored before."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pytest

from ledger.domain import commands as c
from ledger.domain.errors import InvalidRequest
from ledger.domain.sale import Sale, SaleStatus
from tests.unit.test_payment_deadlines import mapper

PRODUCT = "5b0e8f3c-1a2d-4e6f-9a7b-8c9d0e1f2a3b"
MUG = c.LineItemInput(
    sku="MUG", name="Mug", quantity=2, unit_price=500, tax_rate_ppm=0, product_id=PRODUCT
)
OPEN = c.ImportOrder(
    channel="webshop",
    external_order_id="1001",
    sales_channel=c.Channel.IN_STORE,
    location_id="store-1",
    currency_code="USD",
    line_items=(MUG,),
    payments=(),
    open=True,
)


def imported(order: c.ImportOrder) -> Sale:
    return Sale.import_order(uuid.uuid4(), "merchant-1", order, "fp")


def test_an_open_order_is_an_open_sale_that_holds_its_lines_and_may_not_oversell() -> None:
    sale = imported(OPEN)
    assert [type(e).__name__ for e in sale.collect_events()] == ["Created", "Imported"]
    assert (sale.status, sale.amount_due) == (SaleStatus.OPEN, 1000)
    assert sale.holds_stock
    assert sale.reservation() == {PRODUCT: 2}
    assert not sale.may_oversell  # even from an in-store channel: nobody holds the goods


def test_a_finished_order_is_still_completed_and_holds_nothing() -> None:
    finished = replace(OPEN, open=False, payments=(c.ImportedPayment(c.Tender.CASH, 1000),))
    sale = imported(finished)
    assert sale.status is SaleStatus.COMPLETED
    assert not sale.holds_stock


def test_an_open_order_has_no_payments_and_a_finished_one_has_some() -> None:
    c.validate_import(OPEN)
    with pytest.raises(InvalidRequest) as paid:
        c.validate_import(replace(OPEN, payments=(c.ImportedPayment(c.Tender.CASH, 1000),)))
    with pytest.raises(InvalidRequest) as unpaid:
        c.validate_import(replace(OPEN, open=False))
    assert [v.field for v in paid.value.violations] == ["payments"]
    assert [v.field for v in unpaid.value.violations] == ["payments"]


def test_an_import_stored_before_open_orders_replays_as_a_finished_order() -> None:
    finished = replace(OPEN, open=False, payments=(c.ImportedPayment(c.Tender.CASH, 1000),))
    events = imported(finished).collect_events()
    stored = [mapper().to_stored_event(e) for e in events]
    state = json.loads(stored[1].state)
    assert state.pop("class_version") == 2
    del state["open"]
    old = replace(stored[1], state=json.dumps(state).encode())

    again = None
    for event in [mapper().to_domain_event(s) for s in (stored[0], old, stored[2])]:
        again = event.mutate(again)  # type: ignore[attr-defined]
    assert isinstance(again, Sale)
    assert (again.import_open, again.status) == (False, SaleStatus.COMPLETED)
