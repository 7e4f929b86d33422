"""The event log as stored: explicit topics, and every earlier state of a sale on demand."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger.application import Ledger
from ledger.domain import commands as c
from ledger.domain.errors import NotFound
from ledger.domain.sale import PaymentStatus, Sale, SaleStatus
from tests.integration.conftest import (
    BAGEL,
    COFFEE,
    MERCHANT_A,
    MERCHANT_B,
    Db,
    approved_by_card,
    ctx,
    new_customer,
    open_sale,
    request_payment_cmd,
    sale_with_pending_payment,
)


def _at(ledger: Ledger, sale: Sale, version: int) -> Sale:
    old: object = ledger.repository.get(sale.id, version=version)
    assert isinstance(old, Sale)
    assert old.version == version
    return old


def test_earlier_versions_of_a_sale_can_be_read(ledger: Ledger) -> None:
    sale = open_sale(ledger, MERCHANT_A, COFFEE)
    sale_id = str(sale.id)
    bagel = ledger.add_line_item(ctx(), c.AddLineItem(sale_id, BAGEL)).ids["line_id"]
    customer = new_customer(ledger)
    ledger.attach_customer(ctx(), c.AttachCustomer(sale_id, customer))
    ledger.remove_line_item(ctx(), c.RemoveLineItem(sale_id, bagel))
    paid = ledger.request_payment(ctx(), request_payment_cmd(sale_id, sale.total))
    now = ledger.get_sale(MERCHANT_A, sale_id)
    assert now.version == 5

    v1, v2, v3, v4 = (_at(ledger, sale, v) for v in (1, 2, 3, 4))

    assert [i.sku for i in v1.line_items] == ["COF-1"]
    assert v1.customer_id == ""
    assert [i.sku for i in v2.line_items] == ["COF-1", "BAG-1"]
    assert v2.total > v1.total
    assert v2.customer_id == ""
    assert v3.customer_id == customer
    assert len(v3.line_items) == 2
    assert [i.sku for i in v4.line_items] == ["COF-1"]
    assert v4.payments == {}
    assert list(now.payments) == [paid.ids["payment_id"]]
    assert now.amount_due == 0
    assert v4.amount_due == v1.total


def test_events_are_stored_under_explicit_stable_topics(ledger: Ledger, db: Db) -> None:
    p = sale_with_pending_payment(ledger)
    ledger.record_payment_result(ctx(), approved_by_card(p))
    ledger.refund_payment(ctx(), c.RefundPayment(p.sale_id, p.payment_id, p.amount, "returned"))

    other = open_sale(ledger)
    other_id = str(other.id)
    line = ledger.add_line_item(ctx(), c.AddLineItem(other_id, BAGEL)).ids["line_id"]
    ledger.remove_line_item(ctx(), c.RemoveLineItem(other_id, line))
    ledger.attach_customer(ctx(), c.AttachCustomer(other_id, new_customer(ledger)))
    first = ledger.request_payment(ctx(), request_payment_cmd(other_id, 100)).ids["payment_id"]
    ledger.cancel_payment(ctx(), c.CancelPayment(other_id, first, "changed mind"))
    second = ledger.request_payment(ctx(), request_payment_cmd(other_id, 100)).ids["payment_id"]
    ledger.record_payment_result(
        ctx(),
        c.RecordPaymentResult(
            sale_id=other_id, payment_id=second, outcome=c.Outcome.FAILED, error_code="timeout"
        ),
    )
    ledger.cancel_sale(ctx(), c.CancelSale(other_id, "walked out"))

    assert db.topics(p.sale_id) == [
        "posledger.SaleCreated",
        "posledger.PaymentRequested",
        "posledger.PaymentApproved",
        "posledger.SaleCompleted",
        "posledger.PaymentRefunded",
    ]
    assert db.topics(other_id) == [
        "posledger.SaleCreated",
        "posledger.SaleLineItemAdded",
        "posledger.SaleLineItemRemoved",
        "posledger.SaleCustomerAttached",
        "posledger.PaymentRequested",
        "posledger.PaymentCanceled",
        "posledger.PaymentRequested",
        "posledger.PaymentNotApproved",
        "posledger.SaleCanceled",
    ]
    rows = db.events()
    assert all(":" not in row.topic for row in rows)  # no module paths anywhere
    created = {row.state.get("originator_topic") for row in rows if row.originator_version == 1}
    assert created == {"posledger.Sale", "posledger.Customer"}  # the attached customer too

    refunded = ledger.get_sale(MERCHANT_A, p.sale_id)
    assert refunded.status is SaleStatus.REFUNDED
    canceled = ledger.get_sale(MERCHANT_A, other_id)
    assert canceled.status is SaleStatus.CANCELED
    assert canceled.payments[first].status is PaymentStatus.CANCELED
    assert canceled.payments[second].status is PaymentStatus.FAILED


def test_notification_ids_follow_commit_order(ledger: Ledger, db: Db) -> None:
    for _ in range(3):
        sale_id = str(open_sale(ledger).id)
        ledger.add_line_item(ctx(), c.AddLineItem(sale_id, BAGEL))

    rows = db.events()
    ids = [row.notification_id for row in rows]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids) == 6
    notifications = ledger.recorder.select_notifications(start=None, limit=100)
    assert [n.id for n in notifications] == ids


def test_a_sale_as_of_a_time_is_its_state_after_the_last_event_by_then(ledger: Ledger) -> None:
    sale = open_sale(ledger, MERCHANT_A, COFFEE)
    sale_id = str(sale.id)
    ledger.add_line_item(ctx(), c.AddLineItem(sale_id, BAGEL))
    events = list(ledger.events.get(sale.id))
    created, added = (e.timestamp for e in events)  # type: ignore[attr-defined]
    assert created < added  # two commands, one after the other

    assert ledger.sale_version_at(sale.id, created) == 1
    between = created + (added - created) / 2
    assert ledger.get_sale_at(MERCHANT_A, sale_id, between).version == 1
    assert [i.sku for i in ledger.get_sale_at(MERCHANT_A, sale_id, added).line_items] == [
        "COF-1",
        "BAG-1",
    ]
    before = created - timedelta(microseconds=1)
    assert ledger.sale_version_at(sale.id, before) == 0
    with pytest.raises(NotFound) as missing:
        ledger.get_sale_at(MERCHANT_A, sale_id, before)
    assert missing.value.reason == "SALE_NOT_FOUND"
    with pytest.raises(NotFound):  # another merchant's sale is not found, whatever the time
        ledger.get_sale_at(MERCHANT_B, sale_id, added)
