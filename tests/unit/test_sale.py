"""The Sale aggregate's rules, given / when / then.

Given: a sale built through its own commands (its events are collected and set aside).
When: one command.
Then: the events that command recorded, the state, or the refusal (class and reason).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.domain.commands import (
    MAX_LINE_ITEMS,
    CardInput,
    Channel,
    EntryMethod,
    LineItemInput,
    Outcome,
    RecordPaymentResult,
    RestockItem,
    Tender,
)
from ledger.domain.errors import DomainError, NotFound, RuleViolated
from ledger.domain.money import MAX_AMOUNT, PPM
from ledger.domain.sale import PaymentStatus, Sale, SaleStatus

MUG = LineItemInput(
    sku="MUG", name="Mug", quantity=2, unit_price=500, discount=100, tax_rate_ppm=88_750
)  # 2 x 500 - 100 = 900, tax 79.875 -> 80, total 980
TEA = LineItemInput(sku="TEA", name="Tea", quantity=1, unit_price=1999, tax_rate_ppm=0)
VISA = CardInput(brand="visa", last4="4242", entry_method=EntryMethod.DIPPED)
UNKNOWN_PAYMENT = "7d0f1c52-2c4e-4a2b-9a53-000000000000"


# ---- givens ----------------------------------------------------------------------------------


def given_sale(*items: LineItemInput, currency: str = "USD") -> Sale:
    sale = Sale.create(
        merchant_id="merchant-1",
        location_id="store-1",
        channel=Channel.IN_STORE,
        currency_code=currency,
        line_items=items,
        customer_id="",
        external_order_id="order-1",
        note="",
    )
    sale.collect_events()
    return sale


def given_payment(sale: Sale, amount: int, *tenders: Tender, currency: str | None = None) -> str:
    payment_id = sale.request_payment(
        amount=amount,
        currency_code=currency or sale.currency_code,
        tender_types=list(tenders or (Tender.CARD,)),
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
        note="",
        state="s-1",
    )
    sale.collect_events()
    return payment_id


def result(
    sale: Sale,
    payment_id: str,
    outcome: Outcome = Outcome.APPROVED,
    tender: Tender | None = Tender.CARD,
    **details: Any,
) -> RecordPaymentResult:
    card = VISA if tender in (Tender.CARD, Tender.CARD_ON_FILE) else None
    base = RecordPaymentResult(
        sale_id=str(sale.id),
        payment_id=payment_id,
        outcome=outcome,
        tender=tender,
        card=card,
        auth_code="AUTH1" if outcome is Outcome.APPROVED else "",
        processor_reference="proc-1",
    )
    return replace(base, **details)


def given_approved(sale: Sale, amount: int, **details: Any) -> str:
    payment_id = given_payment(sale, amount)
    sale.record_payment_result(result(sale, payment_id, **details))
    sale.collect_events()
    return payment_id


def given_completed_sale() -> tuple[Sale, str]:
    sale = given_sale(MUG)
    payment_id = given_approved(sale, 980)
    assert sale.status is SaleStatus.COMPLETED
    return sale, payment_id


def status(sale: Sale) -> SaleStatus:
    """The status, read afresh (a plain attribute read would be narrowed by the type checker)."""
    return sale.status


def recorded(sale: Sale) -> list[str]:
    return [type(event).__name__ for event in sale.collect_events()]


def refused(error: pytest.ExceptionInfo[DomainError], cls: type[DomainError], reason: str) -> None:
    assert type(error.value) is cls
    assert error.value.reason == reason


# ---- creating a sale and its totals ----------------------------------------------------------


def test_create_sale_records_created_with_totals() -> None:
    sale = Sale.create(
        merchant_id="merchant-1",
        location_id="store-1",
        channel=Channel.ONLINE,
        currency_code="USD",
        line_items=(MUG, TEA),
        customer_id="customer-1",
        external_order_id="web-1",
        note="leave at door",
    )
    assert recorded(sale) == ["Created"]
    assert sale.version == 1
    assert sale.status is SaleStatus.OPEN
    assert (sale.merchant_id, sale.location_id, sale.channel) == (
        "merchant-1",
        "store-1",
        Channel.ONLINE,
    )
    assert (sale.customer_id, sale.external_order_id, sale.note) == (
        "customer-1",
        "web-1",
        "leave at door",
    )
    assert sale.subtotal == 1000 + 1999
    assert sale.discount_total == 100
    assert sale.tax_total == 80
    assert sale.total == 980 + 1999
    assert sale.total == sale.subtotal - sale.discount_total + sale.tax_total
    assert sale.amount_due == sale.total
    assert (sale.paid_total, sale.pending_total, sale.refunded_total, sale.tip_total) == (
        0,
        0,
        0,
        0,
    )
    assert [line.sku for line in sale.line_items] == ["MUG", "TEA"]
    assert len({line.line_id for line in sale.line_items}) == 2


def test_empty_sale_has_zero_totals() -> None:
    sale = given_sale()
    assert (sale.total, sale.amount_due, sale.status) == (0, 0, SaleStatus.OPEN)


def test_create_sale_refuses_a_total_above_the_maximum() -> None:
    huge = LineItemInput(
        sku="YACHT", name="Yacht", quantity=1, unit_price=MAX_AMOUNT, tax_rate_ppm=PPM
    )
    with pytest.raises(DomainError) as error:
        given_sale(huge)
    refused(error, RuleViolated, "AMOUNT_TOO_LARGE")


def test_create_sale_allows_exactly_the_maximum() -> None:
    top = LineItemInput(sku="TOP", name="Top", quantity=1, unit_price=MAX_AMOUNT, tax_rate_ppm=0)
    assert given_sale(top).total == MAX_AMOUNT


# ---- line items ------------------------------------------------------------------------------


def test_add_line_item() -> None:
    sale = given_sale(MUG)
    line_id = sale.add_line_item(TEA)
    assert recorded(sale) == ["LineItemAdded"]
    assert sale.line_items[-1].line_id == line_id
    assert sale.total == 980 + 1999
    assert sale.amount_due == 980 + 1999


def test_add_line_item_refuses_a_total_above_the_maximum() -> None:
    sale = given_sale(
        LineItemInput(sku="A", name="A", quantity=1, unit_price=MAX_AMOUNT - 10, tax_rate_ppm=0)
    )
    with pytest.raises(DomainError) as error:
        sale.add_line_item(replace(TEA, unit_price=11))
    refused(error, RuleViolated, "AMOUNT_TOO_LARGE")
    assert recorded(sale) == []
    assert len(sale.line_items) == 1


def test_add_line_item_refuses_more_than_the_maximum_count() -> None:
    sale = given_sale(*([TEA] * MAX_LINE_ITEMS))
    with pytest.raises(DomainError) as error:
        sale.add_line_item(TEA)
    refused(error, RuleViolated, "TOO_MANY_LINE_ITEMS")


def test_remove_line_item() -> None:
    sale = given_sale(MUG, TEA)
    sale.remove_line_item(sale.line_items[0].line_id)
    assert recorded(sale) == ["LineItemRemoved"]
    assert [line.sku for line in sale.line_items] == ["TEA"]
    assert sale.total == 1999


def test_remove_unknown_line_item_is_not_found() -> None:
    sale = given_sale(MUG)
    with pytest.raises(DomainError) as error:
        sale.remove_line_item(UNKNOWN_PAYMENT)
    refused(error, NotFound, "LINE_ITEM_NOT_FOUND")


def test_remove_line_item_refused_below_pending() -> None:
    sale = given_sale(MUG, TEA)
    given_payment(sale, 1000)
    with pytest.raises(DomainError) as error:
        sale.remove_line_item(sale.line_items[1].line_id)  # total would be 980 < 1000 pending
    refused(error, RuleViolated, "TOTAL_BELOW_PAID")
    assert recorded(sale) == []


def test_remove_line_item_refused_below_paid() -> None:
    sale = given_sale(MUG, TEA)
    given_approved(sale, 1000)
    with pytest.raises(DomainError) as error:
        sale.remove_line_item(sale.line_items[1].line_id)
    refused(error, RuleViolated, "TOTAL_BELOW_PAID")


def test_remove_line_item_allowed_down_to_what_is_pending() -> None:
    sale = given_sale(MUG, TEA)
    given_payment(sale, 980)
    sale.remove_line_item(sale.line_items[1].line_id)
    assert recorded(sale) == ["LineItemRemoved"]
    assert (sale.total, sale.pending_total, sale.amount_due) == (980, 980, 0)


def test_remove_line_item_down_to_what_is_paid_completes_the_sale() -> None:
    sale = given_sale(MUG, TEA)
    given_approved(sale, 980)
    sale.remove_line_item(sale.line_items[1].line_id)
    assert recorded(sale) == ["LineItemRemoved", "Completed"]
    assert sale.status is SaleStatus.COMPLETED
    assert sale.amount_due == 0


def test_refunded_money_does_not_count_against_removal() -> None:
    sale = given_sale(MUG, TEA)
    payment_id = given_approved(sale, 1000)
    sale.refund_payment(payment_id, 1000, "returned", "")
    sale.collect_events()
    sale.remove_line_item(sale.line_items[1].line_id)
    assert recorded(sale) == ["LineItemRemoved"]
    assert sale.amount_due == 980


# ---- customer --------------------------------------------------------------------------------


def test_attach_customer() -> None:
    sale = given_sale(MUG)
    sale.attach_customer("customer-7")
    assert recorded(sale) == ["CustomerAttached"]
    assert sale.customer_id == "customer-7"


def test_attach_same_customer_again_records_nothing() -> None:
    sale = given_sale(MUG)
    sale.attach_customer("customer-7")
    sale.collect_events()
    sale.attach_customer("customer-7")
    assert recorded(sale) == []


def test_attach_another_customer_replaces_the_first() -> None:
    sale = given_sale(MUG)
    sale.attach_customer("customer-7")
    sale.attach_customer("customer-8")
    assert recorded(sale) == ["CustomerAttached", "CustomerAttached"]
    assert sale.customer_id == "customer-8"


def test_attach_customer_to_a_completed_sale_is_refused() -> None:
    sale, _ = given_completed_sale()
    with pytest.raises(DomainError) as error:
        sale.attach_customer("customer-7")
    refused(error, RuleViolated, "SALE_NOT_OPEN")


# ---- requesting payments ---------------------------------------------------------------------


def test_request_payment() -> None:
    sale = given_sale(MUG)
    payment_id = sale.request_payment(
        amount=500,
        currency_code="USD",
        tender_types=[Tender.CARD, Tender.CASH],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
        note="first half",
        state="opaque",
    )
    assert recorded(sale) == ["PaymentRequested"]
    payment = sale.payment(payment_id)
    assert payment.status is PaymentStatus.PENDING
    assert (payment.amount, payment.currency_code) == (500, "USD")
    assert payment.tender_types == ["card", "cash"]
    assert (payment.callback_url, payment.app_id, payment.api_version) == (
        "https://pos.example.com/cb",
        "pos-app",
        "1.0",
    )
    assert (payment.note, payment.state) == ("first half", "opaque")
    assert (sale.pending_total, sale.amount_due, sale.paid_total) == (500, 480, 0)


def test_request_payment_in_another_currency_is_refused() -> None:
    sale = given_sale(MUG)
    with pytest.raises(DomainError) as error:
        given_payment(sale, 500, currency="EUR")
    refused(error, RuleViolated, "CURRENCY_MISMATCH")
    assert sale.payments == {}


def test_request_payment_above_amount_due_is_refused() -> None:
    sale = given_sale(MUG)
    with pytest.raises(DomainError) as error:
        given_payment(sale, 981)
    refused(error, RuleViolated, "AMOUNT_EXCEEDS_DUE")


def test_pending_payments_reduce_what_may_be_requested() -> None:
    sale = given_sale(MUG)
    given_payment(sale, 900)
    with pytest.raises(DomainError) as error:
        given_payment(sale, 81)
    refused(error, RuleViolated, "AMOUNT_EXCEEDS_DUE")
    given_payment(sale, 80)
    assert sale.amount_due == 0


def test_request_payment_on_an_empty_sale_is_refused() -> None:
    sale = given_sale()
    with pytest.raises(DomainError) as error:
        given_payment(sale, 1)
    refused(error, RuleViolated, "AMOUNT_EXCEEDS_DUE")


def test_request_payment_on_a_completed_sale_is_refused() -> None:
    sale, _ = given_completed_sale()
    with pytest.raises(DomainError) as error:
        given_payment(sale, 1)
    refused(error, RuleViolated, "SALE_NOT_OPEN")


def test_unknown_payment_is_not_found() -> None:
    sale = given_sale(MUG)
    with pytest.raises(DomainError) as error:
        sale.payment(UNKNOWN_PAYMENT)
    refused(error, NotFound, "PAYMENT_NOT_FOUND")


# ---- recording results -----------------------------------------------------------------------


def test_approval_of_the_whole_amount_completes_the_sale_in_the_same_command() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    occurred = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    sale.record_payment_result(result(sale, payment_id, occurred_at=occurred, tip_amount=150))
    assert recorded(sale) == ["PaymentApproved", "Completed"]
    payment = sale.payment(payment_id)
    assert payment.status is PaymentStatus.APPROVED
    assert (payment.approved_amount, payment.tip_amount, payment.tender) == (980, 150, "card")
    assert payment.card == {"brand": "visa", "last4": "4242", "entry_method": "dipped"}
    assert (payment.auth_code, payment.processor_reference) == ("AUTH1", "proc-1")
    assert payment.occurred_at == occurred
    assert payment.resolved_at is not None
    assert sale.status is SaleStatus.COMPLETED
    assert sale.completed_at is not None
    assert (sale.paid_total, sale.tip_total, sale.pending_total, sale.amount_due) == (
        980,
        150,
        0,
        0,
    )


def test_split_tender_completes_when_the_last_part_is_approved() -> None:
    sale = given_sale(MUG, TEA)  # total 2979
    card = given_payment(sale, 1000, Tender.CARD)
    cash = given_payment(sale, 979, Tender.CASH)
    gift = given_payment(sale, 1000, Tender.GIFT_CARD, Tender.CARD)
    assert sale.amount_due == 0

    sale.record_payment_result(result(sale, card))
    assert recorded(sale) == ["PaymentApproved"]
    assert status(sale) is SaleStatus.OPEN

    cash_result = result(sale, cash, tender=Tender.CASH, cash_tendered=1000, change_given=21)
    sale.record_payment_result(cash_result)
    assert recorded(sale) == ["PaymentApproved"]
    assert (sale.paid_total, sale.pending_total) == (1979, 1000)

    sale.record_payment_result(result(sale, gift, tender=Tender.GIFT_CARD))
    assert recorded(sale) == ["PaymentApproved", "Completed"]
    assert sale.status is SaleStatus.COMPLETED
    assert sale.paid_total == sale.total == 2979


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.DECLINED, PaymentStatus.DECLINED),
        (Outcome.FAILED, PaymentStatus.FAILED),
        (Outcome.CANCELED, PaymentStatus.CANCELED),
    ],
)
def test_payment_not_approved_frees_the_amount(outcome: Outcome, status: PaymentStatus) -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id, outcome, error_code="05"))
    assert recorded(sale) == ["PaymentNotApproved"]
    payment = sale.payment(payment_id)
    assert payment.status is status
    assert (payment.error_code, payment.approved_amount, payment.cancel_reason) == ("05", 0, "")
    assert payment.card == {"brand": "visa", "last4": "4242", "entry_method": "dipped"}
    assert (sale.status, sale.paid_total, sale.pending_total, sale.amount_due) == (
        SaleStatus.OPEN,
        0,
        0,
        980,
    )


def test_partial_approval_leaves_the_rest_due() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id, approved_amount=600))
    assert recorded(sale) == ["PaymentApproved"]
    assert sale.payment(payment_id).approved_amount == 600
    assert (sale.status, sale.paid_total, sale.pending_total, sale.amount_due) == (
        SaleStatus.OPEN,
        600,
        0,
        380,
    )
    given_approved(sale, 380)
    assert sale.status is SaleStatus.COMPLETED


def test_approved_amount_above_the_request_is_refused() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 500)
    with pytest.raises(DomainError) as error:
        sale.record_payment_result(result(sale, payment_id, approved_amount=501))
    refused(error, RuleViolated, "APPROVED_AMOUNT_EXCEEDS_REQUESTED")
    assert recorded(sale) == []
    assert sale.payment(payment_id).status is PaymentStatus.PENDING


def test_approval_with_a_tender_not_requested_is_refused() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980, Tender.CARD, Tender.GIFT_CARD)
    with pytest.raises(DomainError) as error:
        sale.record_payment_result(result(sale, payment_id, tender=Tender.CASH))
    refused(error, RuleViolated, "TENDER_NOT_ALLOWED")
    assert sale.payment(payment_id).status is PaymentStatus.PENDING


def test_cash_change_must_add_up() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980, Tender.CASH)
    wrong = result(sale, payment_id, tender=Tender.CASH, cash_tendered=2000, change_given=1000)
    with pytest.raises(DomainError) as error:
        sale.record_payment_result(wrong)
    refused(error, RuleViolated, "CHANGE_MISMATCH")
    assert recorded(sale) == []


def test_change_given_without_cash_tendered_is_refused() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980, Tender.CASH)
    wrong = result(sale, payment_id, tender=Tender.CASH, change_given=20)
    with pytest.raises(DomainError) as error:
        sale.record_payment_result(wrong)
    refused(error, RuleViolated, "CHANGE_MISMATCH")


def test_cash_change_accounts_for_the_tip() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980, Tender.CASH)
    cash = result(
        sale, payment_id, tender=Tender.CASH, cash_tendered=2000, tip_amount=20, change_given=1000
    )
    sale.record_payment_result(cash)
    assert recorded(sale) == ["PaymentApproved", "Completed"]
    payment = sale.payment(payment_id)
    assert (payment.cash_tendered, payment.change_given, payment.tip_amount) == (2000, 1000, 20)
    assert payment.card is None
    assert (sale.paid_total, sale.tip_total) == (980, 20)


def test_cash_without_amounts_tendered_is_accepted() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980, Tender.CASH)
    sale.record_payment_result(result(sale, payment_id, tender=Tender.CASH))
    assert recorded(sale) == ["PaymentApproved", "Completed"]


@pytest.mark.parametrize(
    "outcome", [Outcome.APPROVED, Outcome.DECLINED, Outcome.FAILED, Outcome.CANCELED]
)
def test_same_result_twice_records_nothing_new(outcome: Outcome) -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id, outcome))
    sale.collect_events()
    version = sale.version
    sale.record_payment_result(result(sale, payment_id, outcome))
    assert recorded(sale) == []
    assert sale.version == version


def test_approved_amount_defaulted_or_spelled_out_is_the_same_result() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id))
    sale.collect_events()
    sale.record_payment_result(result(sale, payment_id, approved_amount=980))
    assert recorded(sale) == []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({}, {"outcome": Outcome.DECLINED}),
        ({}, {"auth_code": "OTHER"}),
        ({}, {"approved_amount": 500}),
        ({}, {"tip_amount": 1}),
        ({}, {"processor_reference": "proc-2"}),
        ({}, {"card": CardInput(brand="visa", last4="0000", entry_method=EntryMethod.DIPPED)}),
        ({"outcome": Outcome.DECLINED}, {}),
        ({"outcome": Outcome.DECLINED}, {"outcome": Outcome.FAILED}),
        ({"outcome": Outcome.DECLINED, "error_code": "05"}, {"outcome": Outcome.DECLINED}),
    ],
)
def test_a_different_second_result_is_refused(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id, **first))
    sale.collect_events()
    with pytest.raises(DomainError) as error:
        sale.record_payment_result(result(sale, payment_id, **second))
    refused(error, RuleViolated, "PAYMENT_ALREADY_RESOLVED")
    assert recorded(sale) == []


def test_result_for_an_unknown_payment_is_not_found() -> None:
    sale = given_sale(MUG)
    with pytest.raises(DomainError) as error:
        sale.record_payment_result(result(sale, UNKNOWN_PAYMENT))
    refused(error, NotFound, "PAYMENT_NOT_FOUND")


def test_tip_total_is_kept_within_the_maximum() -> None:
    sale = given_sale(replace(TEA, unit_price=10))
    given_approved(sale, 1, tip_amount=MAX_AMOUNT)
    payment_id = given_payment(sale, 1)
    with pytest.raises(DomainError) as error:
        sale.record_payment_result(result(sale, payment_id, tip_amount=1))
    refused(error, RuleViolated, "AMOUNT_TOO_LARGE")


# ---- canceling payments ----------------------------------------------------------------------


def test_cancel_pending_payment() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.cancel_payment(payment_id, "customer walked away")
    assert recorded(sale) == ["PaymentCanceled"]
    payment = sale.payment(payment_id)
    assert payment.status is PaymentStatus.CANCELED
    assert payment.cancel_reason == "customer walked away"
    assert payment.resolved_at is not None
    assert (sale.pending_total, sale.amount_due) == (0, 980)


def test_cancel_payment_without_reason_still_says_it_was_canceled() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.cancel_payment(payment_id, "")
    assert sale.payment(payment_id).cancel_reason == "canceled"


def test_cancel_canceled_payment_records_nothing() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.cancel_payment(payment_id, "first")
    sale.collect_events()
    sale.cancel_payment(payment_id, "second")
    assert recorded(sale) == []
    assert sale.payment(payment_id).cancel_reason == "first"


def test_cancel_payment_the_app_reported_canceled_records_nothing() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id, Outcome.CANCELED))
    sale.collect_events()
    sale.cancel_payment(payment_id, "")
    assert recorded(sale) == []


@pytest.mark.parametrize("outcome", [Outcome.APPROVED, Outcome.DECLINED, Outcome.FAILED])
def test_cancel_resolved_payment_is_refused(outcome: Outcome) -> None:
    sale = given_sale(MUG, TEA)
    payment_id = given_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id, outcome))
    sale.collect_events()
    with pytest.raises(DomainError) as error:
        sale.cancel_payment(payment_id, "")
    refused(error, RuleViolated, "PAYMENT_NOT_PENDING")


def test_cancel_unknown_payment_is_not_found() -> None:
    sale = given_sale(MUG)
    with pytest.raises(DomainError) as error:
        sale.cancel_payment(UNKNOWN_PAYMENT, "")
    refused(error, NotFound, "PAYMENT_NOT_FOUND")


def test_app_agreeing_that_a_merchant_canceled_payment_was_canceled_records_nothing() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.cancel_payment(payment_id, "gave up")
    sale.collect_events()
    sale.record_payment_result(result(sale, payment_id, Outcome.CANCELED, error_code="X"))
    assert recorded(sale) == []


def given_canceled_payment(sale: Sale, amount: int, by_app: bool = False) -> str:
    payment_id = given_payment(sale, amount)
    if by_app:
        sale.record_payment_result(result(sale, payment_id, Outcome.CANCELED, tender=None))
    else:
        sale.cancel_payment(payment_id, "gave up")
    sale.collect_events()
    return payment_id


@pytest.mark.parametrize("by_app", [False, True], ids=["merchant", "app"])
def test_an_approval_after_a_cancel_is_recorded_and_owed_back(by_app: bool) -> None:
    sale = given_sale(MUG)
    payment_id = given_canceled_payment(sale, 980, by_app)

    sale.record_payment_result(result(sale, payment_id, tip_amount=20))

    assert recorded(sale) == ["PaymentApprovedAfterCancel"]
    payment = sale.payment(payment_id)
    assert payment.status is PaymentStatus.APPROVED_AFTER_CANCEL
    assert (payment.approved_amount, payment.tip_amount, payment.owed_amount) == (980, 20, 1000)
    # It does not pay the sale: the sale is still due in full, and owes the money back.
    assert (sale.paid_total, sale.tip_total, sale.amount_due, sale.owed_total) == (0, 0, 980, 1000)
    assert status(sale) is SaleStatus.OPEN


def test_a_late_approval_reported_again_records_nothing_and_another_is_refused() -> None:
    sale = given_sale(MUG)
    payment_id = given_canceled_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id))
    sale.collect_events()

    sale.record_payment_result(result(sale, payment_id))
    assert recorded(sale) == []
    with pytest.raises(DomainError) as error:
        sale.record_payment_result(result(sale, payment_id, auth_code="OTHER"))
    refused(error, RuleViolated, "PAYMENT_ALREADY_RESOLVED")
    with pytest.raises(DomainError) as declined:
        sale.record_payment_result(result(sale, payment_id, Outcome.DECLINED))
    refused(declined, RuleViolated, "PAYMENT_ALREADY_RESOLVED")


def test_a_late_approval_is_checked_like_any_approval() -> None:
    sale = given_sale(MUG)
    payment_id = given_canceled_payment(sale, 980)
    with pytest.raises(DomainError) as error:
        sale.record_payment_result(result(sale, payment_id, approved_amount=981))
    refused(error, RuleViolated, "APPROVED_AMOUNT_EXCEEDS_REQUESTED")


def test_a_refund_closes_what_a_late_approval_owes() -> None:
    sale = given_sale(MUG)
    payment_id = given_canceled_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id, tip_amount=20))
    given_approved(sale, 980)  # the customer paid again, and the sale completed
    assert status(sale) is SaleStatus.COMPLETED

    with pytest.raises(DomainError) as too_much:
        sale.refund_payment(payment_id, 1001, "double charge", "rf-1")
    refused(too_much, RuleViolated, "REFUND_EXCEEDS_REFUNDABLE")
    sale.refund_payment(payment_id, 600, "double charge", "rf-1")
    assert sale.owed_total == 400
    sale.refund_payment(payment_id, 400, "double charge", "rf-2")

    assert sale.owed_total == 0
    # Giving back a late approval is no refund of the sale: it stays completed, fully paid.
    assert (status(sale), sale.paid_total, sale.refunded_total) == (SaleStatus.COMPLETED, 980, 0)


def test_a_late_approval_returns_nothing_to_stock() -> None:
    sale = given_sale(MUG)
    payment_id = given_canceled_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id))
    with pytest.raises(DomainError) as error:
        sale.refund_payment(payment_id, 980, "", "", (RestockItem(sale.line_items[0].line_id, 1),))
    refused(error, RuleViolated, "LINE_NOT_SOLD")


def test_a_late_approval_on_a_canceled_sale_is_recorded() -> None:
    sale = given_sale(MUG)
    payment_id = given_canceled_payment(sale, 980)
    sale.cancel("customer left")
    sale.record_payment_result(result(sale, payment_id))
    assert (status(sale), sale.owed_total) == (SaleStatus.CANCELED, 980)


# ---- refunds ---------------------------------------------------------------------------------


def test_partial_refund() -> None:
    sale, payment_id = given_completed_sale()
    refund_id = sale.refund_payment(payment_id, 300, "chipped", "rf-1")
    assert recorded(sale) == ["PaymentRefunded"]
    assert sale.payment(payment_id).refunded_amount == 300
    assert sale.payment(payment_id).refundable == 680
    (refund,) = sale.refunds
    assert (refund.id, refund.payment_id, refund.amount) == (refund_id, payment_id, 300)
    assert (refund.reason, refund.processor_reference) == ("chipped", "rf-1")
    assert (sale.refunded_total, sale.paid_total) == (300, 980)
    assert sale.status is SaleStatus.COMPLETED
    assert sale.amount_due == 0


def test_refunding_everything_on_a_completed_sale_makes_it_refunded() -> None:
    sale, payment_id = given_completed_sale()
    sale.refund_payment(payment_id, 300, "", "")
    sale.refund_payment(payment_id, 680, "", "")
    assert recorded(sale) == ["PaymentRefunded", "PaymentRefunded"]
    assert sale.status is SaleStatus.REFUNDED
    assert sale.refunded_total == sale.paid_total == 980
    assert sale.amount_due == 0


def test_full_refund_in_one_go() -> None:
    sale, payment_id = given_completed_sale()
    sale.refund_payment(payment_id, 980, "", "")
    assert recorded(sale) == ["PaymentRefunded"]
    assert sale.status is SaleStatus.REFUNDED


def test_refunding_one_of_two_payments_keeps_the_sale_completed() -> None:
    sale = given_sale(MUG)
    first = given_approved(sale, 500)
    second = given_approved(sale, 480)
    assert sale.status is SaleStatus.COMPLETED
    sale.refund_payment(first, 500, "", "")
    assert status(sale) is SaleStatus.COMPLETED
    sale.refund_payment(second, 480, "", "")
    assert status(sale) is SaleStatus.REFUNDED


def test_refund_above_what_is_refundable_is_refused() -> None:
    sale, payment_id = given_completed_sale()
    sale.refund_payment(payment_id, 900, "", "")
    sale.collect_events()
    with pytest.raises(DomainError) as error:
        sale.refund_payment(payment_id, 81, "", "")
    refused(error, RuleViolated, "REFUND_EXCEEDS_REFUNDABLE")
    assert recorded(sale) == []


def test_tips_are_not_refundable() -> None:
    sale = given_sale(MUG)
    payment_id = given_approved(sale, 980, tip_amount=100)
    with pytest.raises(DomainError) as error:
        sale.refund_payment(payment_id, 981, "", "")
    refused(error, RuleViolated, "REFUND_EXCEEDS_REFUNDABLE")


def test_refund_of_a_partially_approved_payment_is_limited_to_the_approved_amount() -> None:
    sale = given_sale(MUG)
    payment_id = given_approved(sale, 980, approved_amount=400)
    with pytest.raises(DomainError) as error:
        sale.refund_payment(payment_id, 401, "", "")
    refused(error, RuleViolated, "REFUND_EXCEEDS_REFUNDABLE")


@pytest.mark.parametrize("outcome", [None, Outcome.DECLINED, Outcome.FAILED, Outcome.CANCELED])
def test_refund_of_a_payment_not_approved_is_refused(outcome: Outcome | None) -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    if outcome is not None:
        sale.record_payment_result(result(sale, payment_id, outcome))
    with pytest.raises(DomainError) as error:
        sale.refund_payment(payment_id, 1, "", "")
    refused(error, RuleViolated, "PAYMENT_NOT_APPROVED")


def test_refund_of_an_unknown_payment_is_not_found() -> None:
    sale, _ = given_completed_sale()
    with pytest.raises(DomainError) as error:
        sale.refund_payment(UNKNOWN_PAYMENT, 1, "", "")
    refused(error, NotFound, "PAYMENT_NOT_FOUND")


def test_refund_on_an_open_sale_makes_the_amount_due_again() -> None:
    sale = given_sale(MUG)
    payment_id = given_approved(sale, 980, approved_amount=500)
    sale.refund_payment(payment_id, 200, "", "")
    assert recorded(sale) == ["PaymentRefunded"]
    assert (sale.status, sale.amount_due) == (SaleStatus.OPEN, 680)


def test_sale_completes_when_net_payments_reach_the_total_after_a_refund() -> None:
    sale = given_sale(MUG)
    payment_id = given_approved(sale, 980, approved_amount=500)
    sale.refund_payment(payment_id, 200, "", "")
    given_payment(sale, 680)
    sale.record_payment_result(result(sale, next(reversed(sale.payments))))
    assert recorded(sale) == ["PaymentApproved", "Completed"]
    assert sale.status is SaleStatus.COMPLETED


# ---- canceling the sale ----------------------------------------------------------------------


def test_cancel_sale() -> None:
    sale = given_sale(MUG)
    sale.cancel("customer changed their mind")
    assert recorded(sale) == ["Canceled"]
    assert sale.status is SaleStatus.CANCELED
    assert sale.cancel_reason == "customer changed their mind"
    assert sale.canceled_at is not None
    assert sale.amount_due == 0


def test_cancel_sale_after_declined_payments() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment(sale, 980)
    sale.record_payment_result(result(sale, payment_id, Outcome.DECLINED))
    sale.collect_events()
    sale.cancel("")
    assert recorded(sale) == ["Canceled"]


def test_cancel_sale_after_approved_money_was_refunded() -> None:
    sale = given_sale(MUG)
    payment_id = given_approved(sale, 980, approved_amount=500)
    sale.refund_payment(payment_id, 500, "", "")
    sale.collect_events()
    sale.cancel("")
    assert recorded(sale) == ["Canceled"]
    assert sale.status is SaleStatus.CANCELED


def test_cancel_sale_with_pending_payments_is_refused() -> None:
    sale = given_sale(MUG)
    given_payment(sale, 100)
    with pytest.raises(DomainError) as error:
        sale.cancel("")
    refused(error, RuleViolated, "PAYMENTS_PENDING")
    assert sale.status is SaleStatus.OPEN


def test_cancel_sale_with_approved_payments_is_refused() -> None:
    sale = given_sale(MUG)
    given_approved(sale, 100)
    with pytest.raises(DomainError) as error:
        sale.cancel("")
    refused(error, RuleViolated, "PAYMENTS_APPROVED")


def test_cancel_completed_sale_is_refused() -> None:
    sale, _ = given_completed_sale()
    with pytest.raises(DomainError) as error:
        sale.cancel("")
    refused(error, RuleViolated, "SALE_NOT_OPEN")


def test_canceled_sale_takes_no_more_commands() -> None:
    sale = given_sale(MUG)
    line_id = sale.line_items[0].line_id
    sale.cancel("")
    sale.collect_events()
    for command in (
        lambda: sale.cancel(""),
        lambda: sale.add_line_item(TEA),
        lambda: sale.remove_line_item(line_id),
        lambda: sale.attach_customer("customer-1"),
        lambda: given_payment(sale, 1),
    ):
        with pytest.raises(DomainError) as error:
            command()
        refused(error, RuleViolated, "SALE_NOT_OPEN")
    assert recorded(sale) == []
    assert sale.status is SaleStatus.CANCELED


def test_completed_sale_takes_no_more_line_changes() -> None:
    sale, _ = given_completed_sale()
    with pytest.raises(DomainError) as error:
        sale.add_line_item(TEA)
    refused(error, RuleViolated, "SALE_NOT_OPEN")
    with pytest.raises(DomainError) as error:
        sale.remove_line_item(sale.line_items[0].line_id)
    refused(error, RuleViolated, "SALE_NOT_OPEN")
