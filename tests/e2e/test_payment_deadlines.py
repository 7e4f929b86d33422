"""Payment deadlines over the wire: RequestPayment.expires_after, Payment.expires_at, and
a payment the ledger expires while the server runs its views and its expiry worker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from ledger.application import Ledger
from ledger.bootstrap import build_expiry, build_views
from ledger.v1 import sales_pb2 as pb
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api


@pytest.fixture
def expiring(ledger: Ledger) -> Iterator[None]:
    """The views and the expiry worker, as `posledger serve` runs them."""
    with build_views(ledger).running(), build_expiry(ledger).running(interval=0.1):
        yield


def deadline_seconds(payment: pb.Payment) -> float:
    return (
        payment.expires_at.ToDatetime().timestamp() - payment.requested_at.ToDatetime().timestamp()
    )


def test_a_payment_answers_its_deadline(stub: SalesServiceStub, ledger: Ledger) -> None:
    sale = api.create_sale(stub)
    given = api.request_payment(stub, sale.id, 100, expires_after=Duration(seconds=120)).payment
    default = api.request_payment(stub, sale.id, 100).payment

    assert given.HasField("expires_at")
    assert deadline_seconds(given) == pytest.approx(120, abs=1)
    assert deadline_seconds(default) == pytest.approx(
        ledger.settings.payment_expires_after_seconds, abs=1
    )


@pytest.mark.parametrize(
    "expires_after",
    [
        Duration(seconds=0),
        Duration(seconds=-60),
        Duration(nanos=500_000_000),
        Duration(seconds=86401),
    ],
    ids=["zero", "negative", "below-a-second", "above-the-maximum"],
)
def test_a_bad_expires_after_is_a_field_violation(
    stub: SalesServiceStub, expires_after: Duration
) -> None:
    sale = api.create_sale(stub)
    failure = api.expect_failure(
        lambda: api.request_payment(stub, sale.id, 100, expires_after=expires_after)
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.domain == "posledger"
    assert failure.fields == {"expires_after"}
    assert api.get_sale(stub, sale.id).payments == []


def test_a_retry_with_another_deadline_is_a_reuse_of_the_request_id(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)
    request_id = api.new_request_id()
    first = api.request_payment(
        stub, sale.id, 100, request_id=request_id, expires_after=Duration(seconds=60)
    )
    again = api.request_payment(
        stub, sale.id, 100, request_id=request_id, expires_after=Duration(seconds=60)
    )
    assert again.payment == first.payment

    failure = api.expect_failure(
        lambda: api.request_payment(
            stub, sale.id, 100, request_id=request_id, expires_after=Duration(seconds=61)
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


def wait_for_status(
    stub: SalesServiceStub, sale_id: str, payment_id: str, status: int
) -> pb.Payment:
    for _ in range(100):
        payment = next(p for p in api.get_sale(stub, sale_id).payments if p.id == payment_id)
        if payment.status == status:
            return payment
        time.sleep(0.1)
    raise AssertionError(f"payment {payment_id} did not reach status {status}")


def test_the_ledger_expires_a_pending_payment_and_records_an_approval_after_it(
    expiring: None, stub: SalesServiceStub
) -> None:
    sale = api.create_sale(stub)
    pending = api.request_payment(
        stub, sale.id, sale.amount_due, expires_after=Duration(seconds=1)
    ).payment

    expired = wait_for_status(stub, sale.id, pending.id, pb.PAYMENT_STATUS_EXPIRED)
    assert expired.HasField("resolved_at")
    assert api.get_sale(stub, sale.id).amount_due == sale.amount_due

    late = api.record_result(stub, sale.id, pending.id).payment  # the terminal took it anyway
    assert late.status == pb.PAYMENT_STATUS_APPROVED_AFTER_CANCEL
    assert late.owed_amount == pending.amount
    after = api.get_sale(stub, sale.id)
    assert (after.status, after.paid_total) == (pb.SALE_STATUS_OPEN, 0)


def test_request_ids_of_the_ledgers_own_expiries_are_not_for_clients(
    stub: SalesServiceStub,
) -> None:
    sale = api.create_sale(stub)
    failure = api.expect_failure(
        lambda: api.request_payment(stub, sale.id, 100, request_id="expire:anything")
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == {"request_id"}
