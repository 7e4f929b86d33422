"""Finding payments: by id, by processor reference, by the request's state, and those that
owe money back after a late approval; always within the caller's merchant."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from ledger.application import Ledger
from ledger.bootstrap import build_views
from ledger.v1 import sales_pb2 as pb
from tests.e2e import api_client as api
from tests.e2e.api_client import Metadata, Stubs

T = api.TIMEOUT


@pytest.fixture
def live(ledger: Ledger) -> Iterator[None]:
    with build_views(ledger).running():
        yield


def find(stubs: Stubs, md: Metadata | None = None, **f: object) -> pb.FindPaymentsResponse:
    return stubs.sales.FindPayments(pb.FindPaymentsRequest(**f), timeout=T, metadata=md)  # type: ignore[arg-type]


def test_payments_are_found_by_id_reference_state_and_owed(
    live: None, stubs: Stubs, two_merchants: tuple[Metadata, Metadata]
) -> None:
    a, b = two_merchants
    state = f"cart-{uuid.uuid4()}"
    sale = api.create_sale(stubs.sales, metadata=a)
    paid = api.request_payment(stubs.sales, sale.id, sale.amount_due, state=state, metadata=a)
    reference = f"ch_{uuid.uuid4().hex}"
    done = api.record_result(
        stubs.sales, sale.id, paid.payment.id, processor_reference=reference, metadata=a
    )
    # Another sale's payment is canceled, then approved after all: it owes money back.
    other = api.create_sale(stubs.sales, metadata=a)
    late = api.request_payment(stubs.sales, other.id, other.amount_due, metadata=a).payment
    api.cancel_payment(stubs.sales, other.id, late.id, metadata=a)
    owed = api.record_result(stubs.sales, other.id, late.id, metadata=a)
    at = owed.position

    got = stubs.sales.GetPayment(
        pb.GetPaymentRequest(payment_id=paid.payment.id, min_position=at), timeout=T, metadata=a
    )
    assert got.sale_id == sale.id
    assert got.payment.status == pb.PAYMENT_STATUS_APPROVED
    assert got.payment == next(p for p in done.sale.payments if p.id == paid.payment.id)

    by_reference = find(stubs, a, processor_reference=reference, min_position=at).payments
    assert [(f.sale_id, f.payment.id) for f in by_reference] == [(sale.id, paid.payment.id)]
    by_state = find(stubs, a, state=state, min_position=at).payments
    assert [f.payment.id for f in by_state] == [paid.payment.id]
    assert (
        find(stubs, a, state=state, processor_reference="ch_other", min_position=at).payments == []
    )
    follow_up = find(stubs, a, owed_only=True, min_position=at).payments
    assert [(f.sale_id, f.payment.id) for f in follow_up] == [(other.id, late.id)]
    assert follow_up[0].payment.owed_amount == other.amount_due

    # A refund closes it: nothing is left to follow up.
    closed = api.refund(stubs.sales, other.id, late.id, other.amount_due, metadata=a)
    assert find(stubs, a, owed_only=True, min_position=closed.position).payments == []

    # Another merchant finds nothing, and its GetPayment answers as for a missing id.
    assert find(stubs, b, processor_reference=reference, min_position=at).payments == []
    foreign = api.expect_failure(
        lambda: stubs.sales.GetPayment(
            pb.GetPaymentRequest(payment_id=paid.payment.id), timeout=T, metadata=b
        )
    )
    missing = api.expect_failure(
        lambda: stubs.sales.GetPayment(
            pb.GetPaymentRequest(payment_id=str(uuid.uuid4())), timeout=T, metadata=a
        )
    )
    assert foreign.code == missing.code == grpc.StatusCode.NOT_FOUND
    assert foreign.reason == missing.reason == "PAYMENT_NOT_FOUND"


def test_a_search_needs_a_filter_and_valid_input(live: None, stubs: Stubs) -> None:
    nothing = api.expect_failure(lambda: find(stubs))
    assert nothing.code == grpc.StatusCode.INVALID_ARGUMENT
    assert nothing.fields == {"processor_reference"}
    long = api.expect_failure(lambda: find(stubs, processor_reference="x" * 129))
    assert long.fields == {"processor_reference"}
    bad_id = api.expect_failure(
        lambda: stubs.sales.GetPayment(pb.GetPaymentRequest(payment_id="nope"), timeout=T)
    )
    assert (bad_id.code, bad_id.fields) == (grpc.StatusCode.INVALID_ARGUMENT, {"payment_id"})
