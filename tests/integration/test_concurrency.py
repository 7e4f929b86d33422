"""Writers racing on one sale: optimistic concurrency against the real event store."""

from __future__ import annotations

from functools import partial

import pytest

from ledger.application import Context, Ledger, SaleResult
from ledger.domain import commands as c
from ledger.domain.errors import RuleViolated, VersionConflict
from ledger.domain.sale import PaymentStatus, Sale
from tests.integration.conftest import (
    BAGEL,
    COFFEE,
    MERCHANT_A,
    Db,
    approved_by_card,
    ctx,
    declined_card,
    failures,
    new_customer,
    open_sale,
    race,
    request_payment_cmd,
    sale_with_pending_payment,
    successes,
)

COFFEE_TOTAL = 2 * 450  # COFFEE: two at 4.50, no tax
RESULT_TOPICS = {"posledger.PaymentApproved", "posledger.PaymentNotApproved"}


def test_two_different_results_for_one_payment_exactly_one_wins(ledger: Ledger, db: Db) -> None:
    for _ in range(10):
        p = sale_with_pending_payment(ledger)
        approve, decline = ctx(), ctx()

        outcomes = race(
            partial(ledger.record_payment_result, approve, approved_by_card(p)),
            partial(ledger.record_payment_result, decline, declined_card(p)),
        )

        (won,) = successes(outcomes)
        (lost,) = failures(outcomes)
        assert isinstance(lost, RuleViolated), lost
        assert lost.reason == "PAYMENT_ALREADY_RESOLVED"
        status = won.sale.payments[p.payment_id].status
        assert status in {PaymentStatus.APPROVED, PaymentStatus.DECLINED}

        results = [
            row
            for row in db.events(p.sale_id)
            if row.topic in RESULT_TOPICS and row.state["payment_id"] == p.payment_id
        ]
        assert len(results) == 1
        stored = ledger.get_sale(MERCHANT_A, p.sale_id)
        assert stored.payments[p.payment_id].status is status
        assert stored.version == won.sale.version
        # Only the winner's request is recorded; the loser may retry after fixing its input.
        recorded = {r["request_id"] for r in db.commands(MERCHANT_A)}
        approved = status is PaymentStatus.APPROVED
        assert (approve.request_id in recorded) is approved
        assert (decline.request_id in recorded) is not approved


def test_concurrent_line_items_without_expected_version_all_land(ledger: Ledger, db: Db) -> None:
    """Five writers, one command each: a writer can lose at most four times, and the
    application retries up to five, so every one of them must succeed."""
    writers = 5
    for _ in range(3):
        sale_id = str(open_sale(ledger).id)
        prices = [100 + i for i in range(writers)]
        items = [
            c.LineItemInput(sku=f"SKU-{i}", name=f"Item {i}", quantity=1, unit_price=price)
            for i, price in enumerate(prices)
        ]

        outcomes = race(
            *[partial(ledger.add_line_item, ctx(), c.AddLineItem(sale_id, i)) for i in items]
        )

        assert failures(outcomes) == []
        added = successes(outcomes)
        line_ids = {r.ids["line_id"] for r in added}
        assert len(line_ids) == writers
        assert sorted(r.sale.version for r in added) == list(range(2, writers + 2))

        sale = ledger.get_sale(MERCHANT_A, sale_id)
        assert sale.version == writers + 1
        assert {i.line_id for i in sale.line_items} >= line_ids
        assert sorted(i.sku for i in sale.line_items) == sorted(["COF-1", *(i.sku for i in items)])
        assert sale.total == COFFEE_TOTAL + sum(prices)

        versions = [row.originator_version for row in db.events(sale_id)]
        assert versions == list(range(1, writers + 2))


def test_stale_expected_version_is_a_version_conflict(ledger: Ledger, db: Db) -> None:
    sale_id = str(open_sale(ledger).id)
    ledger.add_line_item(ctx(), c.AddLineItem(sale_id, BAGEL))  # now at version 2
    before = (db.event_count(), db.command_count())
    stale = Context(MERCHANT_A, ctx().request_id, expected_version=1)

    with pytest.raises(VersionConflict) as error:
        ledger.add_line_item(stale, c.AddLineItem(sale_id, COFFEE))

    assert error.value.reason == "VERSION_CONFLICT"
    assert (db.event_count(), db.command_count()) == before
    # The same request id may be retried with the right version.
    fresh = Context(MERCHANT_A, stale.request_id, expected_version=2)
    result = ledger.add_line_item(fresh, c.AddLineItem(sale_id, COFFEE))
    assert not result.replayed
    assert result.sale.version == 3


def test_racing_writers_with_the_same_expected_version_one_wins(ledger: Ledger, db: Db) -> None:
    customer = new_customer(ledger)
    for _ in range(5):
        sale = open_sale(ledger)
        sale_id = str(sale.id)
        first, second = (
            Context(MERCHANT_A, ctx().request_id, expected_version=sale.version) for _ in range(2)
        )

        outcomes: list[SaleResult | Exception] = race(
            partial(ledger.add_line_item, first, c.AddLineItem(sale_id, BAGEL)),
            partial(ledger.attach_customer, second, c.AttachCustomer(sale_id, customer)),
        )

        (won,) = successes(outcomes)
        (lost,) = failures(outcomes)
        assert isinstance(lost, VersionConflict), lost
        assert lost.reason == "VERSION_CONFLICT"
        assert won.sale.version == 2
        assert [row.originator_version for row in db.events(sale_id)] == [1, 2]


def test_a_lost_race_is_retried_on_fresh_state(ledger: Ledger, db: Db) -> None:
    """A payment request racing a line item re-runs its rules on the state that won."""
    for _ in range(5):
        sale = open_sale(ledger)
        sale_id = str(sale.id)
        due = sale.amount_due

        outcomes: list[SaleResult | Exception] = race(
            partial(ledger.add_line_item, ctx(), c.AddLineItem(sale_id, BAGEL)),
            partial(ledger.request_payment, ctx(), request_payment_cmd(sale_id, due)),
        )

        assert failures(outcomes) == []
        final = ledger.get_sale(MERCHANT_A, sale_id)
        assert isinstance(final, Sale)
        assert final.version == 3
        assert len(final.line_items) == 2
        assert final.pending_total == due
        assert final.amount_due == final.total - due
        assert [row.originator_version for row in db.events(sale_id)] == [1, 2, 3]
