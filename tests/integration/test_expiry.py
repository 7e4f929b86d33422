"""Payment deadlines against real PostgreSQL: the expiry worker, exactly once.

The worker finds due payments in the orders view, so each test catches the views up
before the deadline passes, as a running server's projections would.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ledger.application import Ledger
from ledger.application.sales import expire_request_id
from ledger.domain import commands as c
from ledger.domain.errors import InvalidRequest
from ledger.domain.product import Product
from ledger.domain.sale import PaymentStatus
from ledger.expiry import Expiry
from ledger.store import Settings
from projections import Projections
from tests.integration.catalog_support import (
    approve,
    catalog_line,
    create_product,
    new_sale,
    receive,
    stock,
)
from tests.integration.conftest import MERCHANT_A, Db, ctx, race, request_payment_cmd
from tests.integration.projection_support import catch_up, ready_projections

DEADLINE = timedelta(seconds=1)


def levels(ledger: Ledger, product: Product) -> tuple[int, int, int]:
    item = stock(ledger, product)
    return item.on_hand, item.reserved, item.available


def payment_with_deadline(
    ledger: Ledger, product: Product, expires_after: timedelta | None = DEADLINE
) -> tuple[str, str]:
    """An online sale of 2 units of `product` with a pending payment: (sale id, payment id)."""
    sale_id = str(new_sale(ledger, catalog_line(product.sku, 2), channel=c.Channel.ONLINE).sale.id)
    amount = ledger.get_sale(MERCHANT_A, sale_id).amount_due
    cmd = replace(request_payment_cmd(sale_id, amount), expires_after=expires_after)
    return sale_id, ledger.request_payment(ctx(), cmd).ids["payment_id"]


def wait_past(ledger: Ledger, sale_id: str, payment_id: str) -> None:
    deadline = ledger.get_sale(MERCHANT_A, sale_id).payment(payment_id).expires_at
    assert deadline is not None
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.05)


@pytest.fixture
def views(ledger: Ledger) -> Projections:
    return ready_projections(ledger)


def test_two_workers_racing_record_one_expiry_and_release_the_reservation(
    ledger: Ledger, settings: Settings, views: Projections, db: Db
) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 3)
    sale_id, payment_id = payment_with_deadline(ledger, mug)
    assert levels(ledger, mug) == (3, 2, 1)
    catch_up(views)
    wait_past(ledger, sale_id, payment_id)
    other = Ledger.open(settings)  # a second server: its own pool and command cache
    try:
        expired = race(Expiry(ledger, views).expire_due, Expiry(other, views).expire_due)
    finally:
        other.close()

    assert sorted(expired) == [0, 1]  # type: ignore[type-var]
    assert db.topics(sale_id).count("posledger.PaymentExpired") == 1
    request_id = expire_request_id(payment_id)
    expiries = [r for r in db.commands(MERCHANT_A) if r["request_id"] == request_id]
    assert len(expiries) == 1
    assert ledger.get_sale(MERCHANT_A, sale_id).payment(payment_id).status is PaymentStatus.EXPIRED
    assert levels(ledger, mug) == (3, 0, 3)
    released = db.events(stock(ledger, mug).id)[-1]
    assert released.topic == "posledger.StockReservationReleased"
    assert (released.state["sale_id"], released.state["reason"]) == (sale_id, "payment_expired")


def test_a_retry_on_a_view_that_still_shows_the_payment_pending_records_nothing(
    ledger: Ledger, views: Projections, db: Db
) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 3)
    sale_id, payment_id = payment_with_deadline(ledger, mug)
    catch_up(views)
    wait_past(ledger, sale_id, payment_id)
    worker = Expiry(ledger, views)
    assert worker.expire_due() == 1
    events = db.event_count()

    assert worker.expire_due() == 0  # the view has not applied the expiry yet
    assert db.event_count() == events
    catch_up(views)
    assert worker.due() == []


def test_payments_not_due_or_with_a_result_are_left_alone(
    ledger: Ledger, views: Projections, db: Db
) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 10)
    later_sale, later = payment_with_deadline(ledger, mug, timedelta(hours=1))
    paid_sale, paid = payment_with_deadline(ledger, mug)
    catch_up(views)
    ledger.record_payment_result(ctx(), approve(paid_sale, paid))  # the view still shows it
    wait_past(ledger, paid_sale, paid)

    assert [row["payment_id"] for row in Expiry(ledger, views).due()] == [paid]
    assert Expiry(ledger, views).expire_due() == 0
    assert "posledger.PaymentExpired" not in db.topics(paid_sale) + db.topics(later_sale)
    statuses = {
        p: ledger.get_sale(MERCHANT_A, s).payment(p).status
        for s, p in ((later_sale, later), (paid_sale, paid))
    }
    assert statuses == {later: PaymentStatus.PENDING, paid: PaymentStatus.APPROVED}


def test_an_approval_after_the_expiry_is_recorded_as_owed_back(
    ledger: Ledger, views: Projections
) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 3)
    sale_id, payment_id = payment_with_deadline(ledger, mug)
    catch_up(views)
    wait_past(ledger, sale_id, payment_id)
    assert Expiry(ledger, views).expire_due() == 1

    result = ledger.record_payment_result(ctx(), approve(sale_id, payment_id))

    payment = result.sale.payment(payment_id)
    assert payment.status is PaymentStatus.APPROVED_AFTER_CANCEL
    assert payment.owed_amount == payment.amount
    assert (result.sale.paid_total, result.sale.owed_total) == (0, payment.amount)
    assert levels(ledger, mug) == (3, 0, 3)  # a late approval sells nothing
    catch_up(views)
    assert Expiry(ledger, views).due() == []


def test_a_request_without_expires_after_gets_the_configured_default(ledger: Ledger) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 3)
    before = datetime.now(UTC)
    sale_id, payment_id = payment_with_deadline(ledger, mug, expires_after=None)
    deadline = ledger.get_sale(MERCHANT_A, sale_id).payment(payment_id).expires_at
    default = timedelta(seconds=ledger.settings.payment_expires_after_seconds)
    assert deadline is not None
    assert before + default <= deadline <= datetime.now(UTC) + default


def test_expires_after_above_the_configured_maximum_is_invalid(ledger: Ledger) -> None:
    mug = create_product(ledger)
    longest = timedelta(seconds=ledger.settings.payment_max_expires_after_seconds)
    with pytest.raises(InvalidRequest) as error:
        payment_with_deadline(ledger, mug, longest + timedelta(seconds=1))
    assert [v.field for v in error.value.violations] == ["expires_after"]
