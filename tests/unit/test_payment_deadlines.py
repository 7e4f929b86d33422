"""Payment deadlines: a pending payment past its deadline is expired, and what comes after.

Given / when / then on the Sale aggregate, plus the two things deadlines must not break:
stored request fingerprints, and replay of PaymentRequested events stored before them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from ledger.application.fingerprint import request_fingerprint
from ledger.application.sales import expire_request_id, release_reason
from ledger.domain import commands as c
from ledger.domain.errors import DomainError, InvalidRequest, RuleViolated
from ledger.domain.sale import PaymentStatus, Sale
from tests.unit.test_sale import MUG, given_sale, recorded, refused, result

SOON = timedelta(minutes=15)


def given_payment_with_deadline(sale: Sale, amount: int, expires_after: timedelta = SOON) -> str:
    payment_id = sale.request_payment(
        amount=amount,
        currency_code=sale.currency_code,
        tender_types=[c.Tender.CARD],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
        expires_after=expires_after,
    )
    sale.collect_events()
    return payment_id


def after_deadline(sale: Sale, payment_id: str) -> datetime:
    deadline = sale.payment(payment_id).expires_at
    assert deadline is not None
    return deadline + timedelta(seconds=1)


def given_expired_payment(sale: Sale, amount: int) -> str:
    payment_id = given_payment_with_deadline(sale, amount)
    sale.expire_payment(payment_id, after_deadline(sale, payment_id))
    sale.collect_events()
    return payment_id


# ---- the deadline ----------------------------------------------------------------------------


def test_a_payment_records_its_deadline() -> None:
    sale = given_sale(MUG)
    before = datetime.now(UTC)
    payment_id = given_payment_with_deadline(sale, 980, timedelta(seconds=90))
    deadline = sale.payment(payment_id).expires_at
    assert deadline is not None
    assert before + timedelta(seconds=90) <= deadline <= datetime.now(UTC) + timedelta(seconds=90)


def test_expiry_before_the_deadline_is_refused() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment_with_deadline(sale, 980)
    with pytest.raises(DomainError) as error:
        sale.expire_payment(payment_id, datetime.now(UTC))
    refused(error, RuleViolated, "PAYMENT_NOT_DUE")
    assert recorded(sale) == []


def test_a_payment_without_a_deadline_never_expires() -> None:
    sale = given_sale(MUG)
    payment_id = sale.request_payment(
        amount=980,
        currency_code="USD",
        tender_types=[c.Tender.CARD],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
    )
    sale.collect_events()
    with pytest.raises(DomainError) as error:
        sale.expire_payment(payment_id, datetime.now(UTC) + timedelta(days=365))
    refused(error, RuleViolated, "PAYMENT_NOT_DUE")


# ---- expiry ----------------------------------------------------------------------------------


def test_a_due_payment_expires_and_the_sale_is_due_again() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment_with_deadline(sale, 980)
    assert sale.holds_stock

    sale.expire_payment(payment_id, after_deadline(sale, payment_id))

    assert [type(e).__name__ for e in sale.pending_events] == ["PaymentExpired"]
    assert release_reason(sale) == "payment_expired"
    assert recorded(sale) == ["PaymentExpired"]
    payment = sale.payment(payment_id)
    assert payment.status is PaymentStatus.EXPIRED
    assert payment.resolved_at is not None
    assert (sale.pending_total, sale.amount_due, sale.owed_total) == (0, 980, 0)
    assert not sale.holds_stock  # its last pending payment ended: the reservation goes
    assert sale.reservation() == {}


def test_the_sale_keeps_holding_stock_while_another_payment_is_pending() -> None:
    sale = given_sale(MUG)
    first = given_payment_with_deadline(sale, 480)
    given_payment_with_deadline(sale, 500, timedelta(hours=1))

    sale.expire_payment(first, after_deadline(sale, first))

    assert sale.holds_stock
    assert sale.pending_total == 500


def test_expiring_an_expired_payment_records_nothing() -> None:
    sale = given_sale(MUG)
    payment_id = given_expired_payment(sale, 980)
    sale.expire_payment(payment_id, after_deadline(sale, payment_id))
    assert recorded(sale) == []


def test_a_payment_with_a_result_does_not_expire() -> None:
    sale = given_sale(MUG)
    payment_id = given_payment_with_deadline(sale, 500)
    sale.record_payment_result(result(sale, payment_id))
    sale.collect_events()
    with pytest.raises(DomainError) as error:
        sale.expire_payment(payment_id, after_deadline(sale, payment_id))
    refused(error, RuleViolated, "PAYMENT_NOT_PENDING")


def test_an_expired_payment_can_be_asked_for_again() -> None:
    sale = given_sale(MUG)
    given_expired_payment(sale, 980)
    again = given_payment_with_deadline(sale, 980)
    sale.record_payment_result(result(sale, again))
    assert recorded(sale) == ["PaymentApproved", "Completed"]


# ---- outcomes reported after the expiry ------------------------------------------------------


def test_an_approval_after_the_expiry_is_recorded_and_owed_back() -> None:
    sale = given_sale(MUG)
    payment_id = given_expired_payment(sale, 980)

    sale.record_payment_result(result(sale, payment_id, tip_amount=20))

    assert recorded(sale) == ["PaymentApprovedAfterCancel"]
    payment = sale.payment(payment_id)
    assert payment.status is PaymentStatus.APPROVED_AFTER_CANCEL
    assert payment.owed_amount == 1000
    assert (sale.paid_total, sale.amount_due, sale.owed_total) == (0, 980, 1000)
    assert not sale.holds_stock  # a late approval pays nothing: nothing is held for it

    sale.record_payment_result(result(sale, payment_id, tip_amount=20))  # the same, again
    assert recorded(sale) == []


@pytest.mark.parametrize("outcome", [c.Outcome.DECLINED, c.Outcome.CANCELED, c.Outcome.FAILED])
def test_a_decline_after_the_expiry_agrees_with_it_and_records_nothing(
    outcome: c.Outcome,
) -> None:
    sale = given_sale(MUG)
    payment_id = given_expired_payment(sale, 980)
    tender = None if outcome is c.Outcome.CANCELED else c.Tender.CARD
    sale.record_payment_result(result(sale, payment_id, outcome, tender=tender))
    assert recorded(sale) == []
    assert sale.payment(payment_id).status is PaymentStatus.EXPIRED


def test_an_expiry_has_one_request_id_per_payment() -> None:
    assert expire_request_id("p-1") == expire_request_id("p-1") == "expire:p-1"
    assert expire_request_id("p-1") != expire_request_id("p-2")


# ---- the request's expires_after -------------------------------------------------------------


@pytest.mark.parametrize(
    "expires_after", [timedelta(0), timedelta(seconds=-5), timedelta(milliseconds=999)]
)
def test_expires_after_below_one_second_is_invalid(expires_after: timedelta) -> None:
    with pytest.raises(InvalidRequest) as error:
        c.check_expires_after(expires_after, timedelta(hours=24))
    assert [v.field for v in error.value.violations] == ["expires_after"]


def test_expires_after_above_the_maximum_is_invalid() -> None:
    c.check_expires_after(timedelta(hours=24), timedelta(hours=24))
    c.check_expires_after(None, timedelta(hours=24))
    with pytest.raises(InvalidRequest) as error:
        c.check_expires_after(timedelta(hours=24, seconds=1), timedelta(hours=24))
    assert [v.field for v in error.value.violations] == ["expires_after"]


REQUEST = c.RequestPayment(
    sale_id="3f0e5a4e-7c1b-4a51-9a37-0f5f1c9b2d11",
    amount=980,
    currency_code="USD",
    tender_types=(c.Tender.CARD,),
    callback_url="https://pos.example.com/cb",
    app_id="pos-app",
    api_version="1.0",
    state="s-1",
)


def test_a_request_without_expires_after_keeps_the_fingerprint_it_had_before_deadlines() -> None:
    """Computed by the code before RequestPayment had `expires_after`: a retry sent across
    the upgrade must still match its stored record."""
    expected = "d2e40966f33f175ec4df6685ef4494962932947b38441f3ee9b02ae8a27d1dc3"
    assert request_fingerprint(REQUEST, None) == expected


def test_a_request_with_expires_after_has_another_fingerprint() -> None:
    with_deadline = c.RequestPayment(**{**vars(REQUEST), "expires_after": timedelta(minutes=5)})
    other_deadline = c.RequestPayment(**{**vars(REQUEST), "expires_after": timedelta(minutes=6)})
    fingerprints = {request_fingerprint(r, None) for r in (REQUEST, with_deadline, other_deadline)}
    assert len(fingerprints) == 3


# ---- replay of events stored before deadlines ------------------------------------------------


def mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder=transcoder)


def test_a_payment_request_stored_before_deadlines_replays_without_one() -> None:
    sale = Sale.create(
        merchant_id="merchant-1",
        location_id="store-1",
        channel=c.Channel.ONLINE,
        currency_code="USD",
        line_items=(MUG,),
    )
    payment_id = sale.request_payment(
        amount=980,
        currency_code="USD",
        tender_types=[c.Tender.CARD],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
        expires_after=SOON,
    )
    events = sale.collect_events()
    stored = [mapper().to_stored_event(e) for e in events]
    # The request as it was stored before payments had deadlines: version 1, no expires_at.
    state = json.loads(stored[1].state)
    assert state.pop("class_version") == 2
    del state["expires_at"]
    old = replace(stored[1], state=json.dumps(state).encode())

    replayed = [mapper().to_domain_event(s) for s in (stored[0], old)]
    again = None
    for event in replayed:
        again = event.mutate(again)  # type: ignore[attr-defined]
    assert isinstance(again, Sale)
    payment = again.payment(payment_id)
    assert payment.expires_at is None
    assert payment.status is PaymentStatus.PENDING
    with pytest.raises(DomainError) as error:
        again.expire_payment(payment_id, datetime.now(UTC) + timedelta(days=1))
    refused(error, RuleViolated, "PAYMENT_NOT_DUE")
