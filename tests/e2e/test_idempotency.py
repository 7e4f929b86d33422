"""Retries: the same request_id and the same request get the original response, byte for
byte, and record nothing new."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from ledger.v1 import sales_pb2 as pb
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api

M = TypeVar("M", bound=Message)


def _assert_retry_is_identical(stub: SalesServiceStub, call: Callable[[], M]) -> M:
    """Calls twice more after the first call; every answer is the same bytes and the sale's
    version stays where the first call left it."""
    first = call()
    sale_id: str = getattr(first, "sale").id  # noqa: B009  (every mutating response has one)
    version = api.get_sale(stub, sale_id).version
    for _ in range(2):
        again = call()
        assert again.SerializeToString(deterministic=True) == first.SerializeToString(
            deterministic=True
        )
        assert again == first
    assert api.get_sale(stub, sale_id).version == version
    return first


def test_create_sale_retry(stub: SalesServiceStub) -> None:
    request = api.create_sale_request(line_items=[api.line_item(), api.line_item(sku="B")])

    response = _assert_retry_is_identical(
        stub, lambda: stub.CreateSale(request, timeout=api.TIMEOUT)
    )

    assert response.sale.version == 1


def test_add_and_remove_line_item_retries(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)
    add = api.add_line_item_request(sale.id)

    added = _assert_retry_is_identical(stub, lambda: stub.AddLineItem(add, timeout=api.TIMEOUT))
    assert len(added.sale.line_items) == 2, "the retried add did not add a second copy"

    remove = api.remove_line_item_request(sale.id, added.line_id)
    removed = _assert_retry_is_identical(
        stub, lambda: stub.RemoveLineItem(remove, timeout=api.TIMEOUT)
    )
    # A retry after the line is gone answers as the first call did, not LINE_ITEM_NOT_FOUND.
    assert [item.line_id for item in removed.sale.line_items] == [sale.line_items[0].line_id]


def test_attach_customer_retry(stub: SalesServiceStub, customer_id: str) -> None:
    sale = api.create_sale(stub)
    request = api.attach_customer_request(sale.id, customer_id, expected_version=1)

    # With expected_version set, only the replay can succeed a second time.
    _assert_retry_is_identical(stub, lambda: stub.AttachCustomer(request, timeout=api.TIMEOUT))


def test_payment_lifecycle_retries(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)
    ask = api.request_payment_request(sale.id, sale.total, tender_types=[pb.TENDER_TYPE_CARD])

    requested = _assert_retry_is_identical(
        stub, lambda: stub.RequestPayment(ask, timeout=api.TIMEOUT)
    )
    assert len(api.get_sale(stub, sale.id).payments) == 1, "one payment, however many retries"

    result = api.record_result_request(sale.id, requested.payment.id, tip_amount=100)
    recorded = _assert_retry_is_identical(
        stub, lambda: stub.RecordPaymentResult(result, timeout=api.TIMEOUT)
    )
    assert recorded.sale.status == pb.SALE_STATUS_COMPLETED

    refund = api.refund_request(sale.id, requested.payment.id, 400)
    refunded = _assert_retry_is_identical(
        stub, lambda: stub.RefundPayment(refund, timeout=api.TIMEOUT)
    )
    final = api.get_sale(stub, sale.id)
    assert final.refunded_total == 400, "a retried refund must not refund twice"
    assert [r.id for r in final.refunds] == [refunded.refund.id]


def test_cancel_payment_and_cancel_sale_retries(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)
    payment = api.request_payment(stub, sale.id, 300).payment

    cancel_payment = api.cancel_payment_request(sale.id, payment.id)
    _assert_retry_is_identical(
        stub, lambda: stub.CancelPayment(cancel_payment, timeout=api.TIMEOUT)
    )
    cancel_sale = api.cancel_sale_request(sale.id)
    canceled = _assert_retry_is_identical(
        stub, lambda: stub.CancelSale(cancel_sale, timeout=api.TIMEOUT)
    )
    assert canceled.sale.status == pb.SALE_STATUS_CANCELED


def test_retry_answers_with_the_sale_as_it_was_then(
    stub: SalesServiceStub, customer_id: str
) -> None:
    request = api.create_sale_request()
    created = stub.CreateSale(request, timeout=api.TIMEOUT)
    api.attach_customer(stub, created.sale.id, customer_id)
    api.add_line_item(stub, created.sale.id)

    replayed = stub.CreateSale(request, timeout=api.TIMEOUT)

    assert replayed.SerializeToString() == created.SerializeToString()
    assert replayed.sale.version == 1
    assert api.get_sale(stub, created.sale.id).version == 3


def test_request_ids_are_per_merchant_not_per_sale(
    stub: SalesServiceStub, customer_id: str
) -> None:
    """One id for two different sales' commands is a reuse, even on another sale."""
    first = api.create_sale(stub)
    second = api.create_sale(stub)
    request_id = api.new_request_id()
    api.attach_customer(stub, first.id, customer_id, request_id=request_id)

    failure = api.expect_failure(
        lambda: api.attach_customer(stub, second.id, customer_id, request_id=request_id)
    )

    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    assert failure.reason == "REQUEST_ID_REUSED"
    assert api.get_sale(stub, second.id).customer_id == ""


def test_failed_command_is_not_recorded_and_may_be_retried(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)  # total 1000
    api.request_payment(stub, sale.id, 1000)
    too_much = api.request_payment_request(sale.id, 1000)

    first = api.expect_failure(lambda: stub.RequestPayment(too_much, timeout=api.TIMEOUT))
    assert first.reason == "AMOUNT_EXCEEDS_DUE"
    second = api.expect_failure(lambda: stub.RequestPayment(too_much, timeout=api.TIMEOUT))
    assert second.reason == "AMOUNT_EXCEEDS_DUE"


def test_concurrent_twins_record_one_payment(stub: SalesServiceStub) -> None:
    """Eight copies of one request in flight at once: one payment, eight identical answers."""
    sale = api.create_sale(stub)
    request = api.request_payment_request(sale.id, 700)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda _: stub.RequestPayment(request, timeout=api.TIMEOUT), range(8))
        )

    assert len({a.SerializeToString() for a in answers}) == 1
    final = api.get_sale(stub, sale.id)
    assert len(final.payments) == 1
    assert final.pending_total == 700
    assert final.version == 2
