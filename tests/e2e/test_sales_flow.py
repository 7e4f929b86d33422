"""Sales end to end: what a point-of-sale client does, over a real channel."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ledger.v1 import sales_pb2 as pb
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api

# 2 x 10.00 less 1.00 discount, taxed at 8.875%: tax 168.625 rounds half up to 169.
TAXED_ITEM = api.line_item(
    sku="LATTE", name="Latte", quantity=2, unit_price=1000, discount=100, tax_rate_ppm=88750
)
PLAIN_ITEM = api.line_item(sku="COOKIE", name="Cookie", quantity=3, unit_price=250)
TOTAL = 2069 + 750


def _basket(stub: SalesServiceStub) -> pb.Sale:
    return api.create_sale(stub, line_items=[TAXED_ITEM, PLAIN_ITEM], note="table 4")


def test_create_sale_computes_line_amounts_and_totals(stub: SalesServiceStub) -> None:
    sale = _basket(stub)

    assert sale.status == pb.SALE_STATUS_OPEN
    assert sale.version == 1
    assert sale.channel == pb.SALES_CHANNEL_IN_STORE
    assert (sale.location_id, sale.currency_code, sale.note) == ("store-1", "USD", "table 4")
    latte, cookie = sale.line_items
    assert (latte.gross_amount, latte.tax_amount, latte.total_amount) == (2000, 169, 2069)
    assert (cookie.gross_amount, cookie.tax_amount, cookie.total_amount) == (750, 0, 750)
    assert latte.line_id
    assert cookie.line_id != latte.line_id
    assert (sale.subtotal, sale.discount_total, sale.tax_total) == (2750, 100, 169)
    assert sale.total == TOTAL
    assert sale.amount_due == TOTAL
    assert sale.paid_total == sale.pending_total == sale.refunded_total == 0
    assert sale.HasField("created_at")
    assert not sale.HasField("completed_at")
    assert api.get_sale(stub, sale.id) == sale


def test_full_flow_create_request_approve_completes_the_sale(stub: SalesServiceStub) -> None:
    sale = _basket(stub)

    requested = api.request_payment(
        stub, sale.id, TOTAL, tender_types=[pb.TENDER_TYPE_CARD], state="opaque-42", note="tap"
    )
    payment = requested.payment
    assert payment.status == pb.PAYMENT_STATUS_PENDING
    assert (payment.amount, payment.currency_code, payment.state) == (TOTAL, "USD", "opaque-42")
    assert list(payment.tender_types) == [pb.TENDER_TYPE_CARD]
    assert payment.HasField("requested_at")
    assert requested.sale.pending_total == TOTAL
    assert requested.sale.amount_due == 0
    assert requested.sale.status == pb.SALE_STATUS_OPEN

    occurred_at = Timestamp(seconds=1_790_000_000, nanos=123_456_000)
    recorded = api.record_result(
        stub,
        sale.id,
        payment.id,
        tip_amount=300,
        card=api.card(
            brand="mastercard", last4="0005", entry_method=pb.CARD_ENTRY_METHOD_CONTACTLESS
        ),
        occurred_at=occurred_at,
    )
    assert recorded.payment.status == pb.PAYMENT_STATUS_APPROVED

    final = api.get_sale(stub, sale.id)
    assert final == recorded.sale
    assert final.status == pb.SALE_STATUS_COMPLETED
    assert final.HasField("completed_at")
    assert (final.total, final.paid_total, final.tip_total) == (TOTAL, TOTAL, 300)
    assert final.amount_due == final.pending_total == 0
    (paid,) = final.payments
    assert paid.id == payment.id
    assert paid.status == pb.PAYMENT_STATUS_APPROVED
    assert (paid.approved_amount, paid.tip_amount) == (TOTAL, 300)
    assert paid.tender == pb.TENDER_TYPE_CARD
    assert paid.card == pb.CardDetails(
        brand="mastercard", last4="0005", entry_method=pb.CARD_ENTRY_METHOD_CONTACTLESS
    )
    assert (paid.auth_code, paid.processor_reference) == ("A1B2C3", "proc-1")
    assert paid.occurred_at == occurred_at
    assert paid.HasField("resolved_at")
    assert paid.state == "opaque-42"
    # created, payment requested, payment approved, completed
    assert final.version == 4


def test_split_tender_cash_with_change_then_card(stub: SalesServiceStub) -> None:
    sale = _basket(stub)

    cash = api.request_payment(stub, sale.id, 1000, tender_types=[pb.TENDER_TYPE_CASH]).payment
    after_cash = api.record_result(
        stub,
        sale.id,
        cash.id,
        tender=pb.TENDER_TYPE_CASH,
        cash_tendered=2000,
        change_given=1000,
        card=None,
        auth_code="",
        processor_reference="",
    )
    assert after_cash.payment.status == pb.PAYMENT_STATUS_APPROVED
    assert (after_cash.payment.cash_tendered, after_cash.payment.change_given) == (2000, 1000)
    assert not after_cash.payment.HasField("card")
    assert after_cash.sale.status == pb.SALE_STATUS_OPEN
    assert after_cash.sale.paid_total == 1000
    assert after_cash.sale.amount_due == TOTAL - 1000

    card = api.request_payment(stub, sale.id, TOTAL - 1000).payment
    api.record_result(stub, sale.id, card.id)

    final = api.get_sale(stub, sale.id)
    assert final.status == pb.SALE_STATUS_COMPLETED
    assert final.paid_total == TOTAL
    assert final.amount_due == 0
    assert [p.id for p in final.payments] == [cash.id, card.id]
    assert [p.tender for p in final.payments] == [pb.TENDER_TYPE_CASH, pb.TENDER_TYPE_CARD]
    assert [p.approved_amount for p in final.payments] == [1000, TOTAL - 1000]


def test_declined_payment_frees_the_amount_for_a_new_request(stub: SalesServiceStub) -> None:
    sale = _basket(stub)
    first = api.request_payment(stub, sale.id, TOTAL).payment

    declined = api.record_result(
        stub,
        sale.id,
        first.id,
        outcome=pb.PAYMENT_OUTCOME_DECLINED,
        auth_code="",
        error_code="05",
    )
    assert declined.payment.status == pb.PAYMENT_STATUS_DECLINED
    assert declined.payment.error_code == "05"
    assert declined.sale.status == pb.SALE_STATUS_OPEN
    assert declined.sale.amount_due == TOTAL

    second = api.request_payment(stub, sale.id, TOTAL).payment
    api.record_result(stub, sale.id, second.id)
    assert api.get_sale(stub, sale.id).status == pb.SALE_STATUS_COMPLETED


def test_partial_approval_leaves_the_rest_due(stub: SalesServiceStub) -> None:
    sale = _basket(stub)
    payment = api.request_payment(stub, sale.id, TOTAL).payment

    result = api.record_result(stub, sale.id, payment.id, approved_amount=1500)

    assert result.payment.approved_amount == 1500
    assert result.sale.status == pb.SALE_STATUS_OPEN
    assert result.sale.paid_total == 1500
    assert result.sale.amount_due == TOTAL - 1500


def test_partial_then_full_refund_marks_the_sale_refunded(stub: SalesServiceStub) -> None:
    sale, payment = api.paid_sale(stub, line_items=[TAXED_ITEM, PLAIN_ITEM])

    partial = api.refund(stub, sale.id, payment.id, 500, processor_reference="rf-1")
    assert partial.refund.payment_id == payment.id
    assert (partial.refund.amount, partial.refund.reason) == (500, "returned")
    assert partial.refund.processor_reference == "rf-1"
    assert partial.refund.HasField("refunded_at")
    assert partial.sale.status == pb.SALE_STATUS_COMPLETED
    assert partial.sale.refunded_total == 500
    assert partial.sale.payments[0].refunded_amount == 500

    rest = api.refund(stub, sale.id, payment.id, TOTAL - 500)
    assert rest.refund.id != partial.refund.id

    final = api.get_sale(stub, sale.id)
    assert final == rest.sale
    assert final.status == pb.SALE_STATUS_REFUNDED
    assert (final.paid_total, final.refunded_total) == (TOTAL, TOTAL)
    assert final.payments[0].refunded_amount == TOTAL
    assert [r.amount for r in final.refunds] == [500, TOTAL - 500]
    assert final.amount_due == 0

    too_much = api.expect_failure(lambda: api.refund(stub, sale.id, payment.id, 1))
    assert too_much.code == grpc.StatusCode.FAILED_PRECONDITION
    assert too_much.reason == "REFUND_EXCEEDS_REFUNDABLE"


def test_cancel_payment_releases_the_pending_amount(stub: SalesServiceStub) -> None:
    sale = _basket(stub)
    payment = api.request_payment(stub, sale.id, 1200).payment

    canceled = api.cancel_payment(stub, sale.id, payment.id, reason="terminal offline")

    assert canceled.payment.status == pb.PAYMENT_STATUS_CANCELED
    assert canceled.payment.cancel_reason == "terminal offline"
    assert canceled.payment.HasField("resolved_at")
    assert canceled.sale.pending_total == 0
    assert canceled.sale.amount_due == TOTAL
    assert api.get_sale(stub, sale.id) == canceled.sale

    # The app may still report the payment as canceled.
    agrees = api.record_result(
        stub, sale.id, payment.id, outcome=pb.PAYMENT_OUTCOME_CANCELED, card=None, auth_code=""
    )
    assert agrees.payment.status == pb.PAYMENT_STATUS_CANCELED
    # An approval after that is recorded, not refused: the money is owed back.
    late = api.record_result(stub, sale.id, payment.id, tip_amount=100)
    assert late.payment.status == pb.PAYMENT_STATUS_APPROVED_AFTER_CANCEL
    assert (late.payment.approved_amount, late.payment.owed_amount) == (1200, 1300)
    assert (late.sale.paid_total, late.sale.amount_due, late.sale.owed_total) == (0, TOTAL, 1300)
    assert late.sale.status == pb.SALE_STATUS_OPEN
    # Reported again, it is the same result; a decline now is one result too many.
    again = api.record_result(stub, sale.id, payment.id, tip_amount=100)
    assert again.sale == late.sale
    other = api.expect_failure(
        lambda: api.record_result(
            stub, sale.id, payment.id, outcome=pb.PAYMENT_OUTCOME_DECLINED, auth_code=""
        )
    )
    assert (other.code, other.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_ALREADY_RESOLVED",
    )
    # A refund gives it back and closes it; the sale itself was never paid or refunded.
    returned = api.refund(stub, sale.id, payment.id, 1300)
    (refunded,) = [p for p in returned.sale.payments if p.id == payment.id]
    assert (refunded.owed_amount, refunded.refunded_amount) == (0, 1300)
    assert (returned.sale.owed_total, returned.sale.refunded_total) == (0, 0)


def test_cancel_sale_voids_it_and_closes_it(stub: SalesServiceStub) -> None:
    sale = _basket(stub)

    canceled = api.cancel_sale(stub, sale.id, reason="wrong order")

    assert canceled.status == pb.SALE_STATUS_CANCELED
    assert canceled.cancel_reason == "wrong order"
    assert canceled.HasField("canceled_at")
    assert canceled.amount_due == 0
    assert api.get_sale(stub, sale.id) == canceled

    closed = api.expect_failure(lambda: api.add_line_item(stub, sale.id))
    assert closed.code == grpc.StatusCode.FAILED_PRECONDITION
    assert closed.reason == "SALE_NOT_OPEN"
    no_payment = api.expect_failure(lambda: api.request_payment(stub, sale.id, 100))
    assert no_payment.reason == "SALE_NOT_OPEN"


def test_cancel_sale_with_a_pending_payment_is_refused(stub: SalesServiceStub) -> None:
    sale = _basket(stub)
    api.request_payment(stub, sale.id, 100)

    refused = api.expect_failure(lambda: api.cancel_sale(stub, sale.id))

    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.reason == "PAYMENTS_PENDING"
    assert api.get_sale(stub, sale.id).status == pb.SALE_STATUS_OPEN


def test_add_and_remove_line_items(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub, line_items=[])
    assert sale.total == 0
    assert list(sale.line_items) == []

    added = api.add_line_item(stub, sale.id, line_item=TAXED_ITEM)
    assert [item.line_id for item in added.sale.line_items] == [added.line_id]
    assert added.sale.total == 2069
    second = api.add_line_item(stub, sale.id, line_item=PLAIN_ITEM)
    assert second.sale.total == TOTAL
    assert second.sale.amount_due == TOTAL

    removed = api.remove_line_item(stub, sale.id, added.line_id)
    assert [item.line_id for item in removed.line_items] == [second.line_id]
    assert (removed.total, removed.tax_total, removed.discount_total) == (750, 0, 0)
    assert removed.version == 4
    assert api.get_sale(stub, sale.id) == removed

    missing = api.expect_failure(lambda: api.remove_line_item(stub, sale.id, added.line_id))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert missing.reason == "LINE_ITEM_NOT_FOUND"


def test_removing_a_line_below_what_is_paid_is_refused(stub: SalesServiceStub) -> None:
    sale = _basket(stub)
    api.request_payment(stub, sale.id, 1000)

    refused = api.expect_failure(
        lambda: api.remove_line_item(stub, sale.id, sale.line_items[0].line_id)
    )

    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.reason == "TOTAL_BELOW_PAID"


def test_attach_and_replace_customer(
    stub: SalesServiceStub, customer_id: str, other_customer_id: str
) -> None:
    sale = _basket(stub)
    assert sale.customer_id == ""

    attached = api.attach_customer(stub, sale.id, customer_id)
    assert attached.customer_id == customer_id
    assert attached.version == 2
    replaced = api.attach_customer(stub, sale.id, other_customer_id)
    assert replaced.customer_id == other_customer_id
    assert replaced.version == 3
    same = api.attach_customer(stub, sale.id, other_customer_id)
    assert same.version == 3, "attaching the same customer again records nothing"
    assert api.get_sale(stub, sale.id).customer_id == other_customer_id


def test_a_customer_that_does_not_exist_cannot_be_attached(stub: SalesServiceStub) -> None:
    sale = _basket(stub)

    for call in [
        lambda: api.attach_customer(stub, sale.id, "cust-1"),
        lambda: api.create_sale(stub, customer_id="00000000-0000-4000-8000-000000000000"),
    ]:
        failure = api.expect_failure(call)
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    assert api.get_sale(stub, sale.id).version == 1


def test_expected_version_guards_every_command(stub: SalesServiceStub, customer_id: str) -> None:
    sale = _basket(stub)

    stale = api.expect_failure(
        lambda: api.attach_customer(stub, sale.id, customer_id, expected_version=7)
    )
    assert stale.code == grpc.StatusCode.ABORTED
    assert stale.reason == "VERSION_CONFLICT"
    assert stale.domain == "posledger"
    assert api.get_sale(stub, sale.id).version == 1

    current = api.attach_customer(stub, sale.id, customer_id, expected_version=1)
    assert current.version == 2
    again = api.expect_failure(lambda: api.add_line_item(stub, sale.id, expected_version=1))
    assert again.code == grpc.StatusCode.ABORTED
    assert again.reason == "VERSION_CONFLICT"
    payment = api.request_payment(stub, sale.id, 100, expected_version=2).payment
    assert api.get_sale(stub, sale.id).payments[0].id == payment.id


def test_removing_a_line_that_leaves_the_sale_paid_completes_it(stub: SalesServiceStub) -> None:
    sale = _basket(stub)
    cookie = sale.line_items[1]
    payment = api.request_payment(stub, sale.id, TOTAL - cookie.total_amount).payment
    api.record_result(stub, sale.id, payment.id)

    removed = api.remove_line_item(stub, sale.id, cookie.line_id)

    assert removed.total == removed.paid_total == TOTAL - cookie.total_amount
    assert removed.status == pb.SALE_STATUS_COMPLETED, "a fully paid sale must not stay open"
    assert removed.HasField("completed_at")
    assert removed.amount_due == 0
    refunded = api.refund(stub, sale.id, payment.id, removed.total).sale
    assert refunded.status == pb.SALE_STATUS_REFUNDED
