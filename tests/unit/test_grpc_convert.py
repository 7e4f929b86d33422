"""The gRPC edge without a server: wire messages to commands, sales to messages, and domain
errors to google.rpc statuses."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.persistence import InterfaceError, OperationalError
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ledger.domain import commands as c
from ledger.domain.errors import (
    DomainError,
    FieldViolation,
    InvalidRequest,
    NotFound,
    RequestIdReused,
    RuleViolated,
    VersionConflict,
)
from ledger.domain.sale import PaymentStatus, Sale
from ledger.grpc.convert import sales as convert
from ledger.grpc.errors import ERROR_DOMAIN, domain_status, status_for
from ledger.keys import Unauthenticated
from ledger.v1 import sales_pb2 as pb

SALE_ID = "0b6f6c8e-4a47-4c55-9a4e-6c1e3f1f2a10"
PAYMENT_ID = "c3b1d8a4-9e8e-4b0c-8f0a-2d9f6a1e7b33"
FUTURE_TENDER = pb.TenderType.ValueType(42)  # a number only a newer client knows


# ---- requests -> commands: unknown enum numbers become None ----------------------------------


@pytest.mark.parametrize(
    ("wire", "domain"),
    [
        (pb.SALES_CHANNEL_UNSPECIFIED, None),
        (pb.SalesChannel.ValueType(99), None),
        (pb.SALES_CHANNEL_IN_STORE, c.Channel.IN_STORE),
        (pb.SALES_CHANNEL_ONLINE, c.Channel.ONLINE),
        (pb.SALES_CHANNEL_MARKETPLACE, c.Channel.MARKETPLACE),
        (pb.SALES_CHANNEL_PHONE, c.Channel.PHONE),
        (pb.SALES_CHANNEL_OTHER, c.Channel.OTHER),
    ],
)
def test_create_sale_channel(wire: pb.SalesChannel.ValueType, domain: c.Channel | None) -> None:
    assert convert.create_sale(pb.CreateSaleRequest(channel=wire)).channel == domain


def test_create_sale_carries_every_field() -> None:
    request = pb.CreateSaleRequest(
        request_id="r-1",
        location_id="store-1",
        channel=pb.SALES_CHANNEL_PHONE,
        currency_code="JPY",
        line_items=[
            pb.LineItemInput(
                sku="A", name="Apple", quantity=3, unit_price=120, discount=10, tax_rate_ppm=80_000
            ),
            pb.LineItemInput(sku="B", name="Bag", quantity=1, unit_price=0),
        ],
        customer_id="customer-1",
        external_order_id="order-1",
        note="note",
    )
    command = convert.create_sale(request)
    assert command == c.CreateSale(
        location_id="store-1",
        channel=c.Channel.PHONE,
        currency_code="JPY",
        line_items=(
            c.LineItemInput(
                sku="A", name="Apple", quantity=3, unit_price=120, discount=10, tax_rate_ppm=80_000
            ),
            c.LineItemInput(sku="B", name="Bag", quantity=1, unit_price=0, tax_rate_ppm=None),
        ),
        customer_id="customer-1",
        external_order_id="order-1",
        note="note",
    )


def test_request_payment_tender_types_keep_their_positions() -> None:
    request = pb.RequestPaymentRequest(
        tender_types=[pb.TENDER_TYPE_CARD, pb.TENDER_TYPE_UNSPECIFIED, FUTURE_TENDER]
    )
    command = convert.request_payment(request)
    assert command.tender_types == (c.Tender.CARD, None, None)


def test_request_payment_expires_after_is_optional() -> None:
    assert convert.request_payment(pb.RequestPaymentRequest()).expires_after is None
    request = pb.RequestPaymentRequest(expires_after=Duration(seconds=90, nanos=500_000_000))
    assert convert.request_payment(request).expires_after == timedelta(seconds=90.5)


def test_every_payment_status_has_a_wire_value() -> None:
    wire = {v for v in pb.PaymentStatus.values() if v != pb.PAYMENT_STATUS_UNSPECIFIED}
    assert set(convert.PAYMENT_STATUSES) == set(PaymentStatus)
    assert set(convert.PAYMENT_STATUSES.values()) == wire


def test_every_wire_tender_maps_to_a_domain_tender_and_back() -> None:
    wire = [v for v in pb.TenderType.values() if v != pb.TENDER_TYPE_UNSPECIFIED]
    command = convert.request_payment(pb.RequestPaymentRequest(tender_types=wire))
    assert None not in command.tender_types
    assert set(command.tender_types) == set(c.Tender)
    assert [convert.TENDERS_TO_WIRE[t.value] for t in command.tender_types if t] == wire


def test_unknown_tender_is_named_by_validation() -> None:
    request = pb.RequestPaymentRequest(
        sale_id=SALE_ID,
        amount=100,
        currency_code="USD",
        tender_types=[pb.TENDER_TYPE_CASH, FUTURE_TENDER],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
    )
    with pytest.raises(InvalidRequest) as info:
        c.validate(convert.request_payment(request))
    assert [(v.field, v.reason) for v in info.value.violations] == [
        ("tender_types[1]", "INVALID_FIELD")
    ]


@pytest.mark.parametrize("outcome", [pb.PAYMENT_OUTCOME_UNSPECIFIED, 77])
def test_record_result_unknown_outcome_is_none(outcome: int) -> None:
    request = pb.RecordPaymentResultRequest(outcome=pb.PaymentOutcome.ValueType(outcome))
    assert convert.record_payment_result(request).outcome is None


@pytest.mark.parametrize(
    ("wire", "domain"),
    [
        (pb.PAYMENT_OUTCOME_APPROVED, c.Outcome.APPROVED),
        (pb.PAYMENT_OUTCOME_DECLINED, c.Outcome.DECLINED),
        (pb.PAYMENT_OUTCOME_CANCELED, c.Outcome.CANCELED),
        (pb.PAYMENT_OUTCOME_FAILED, c.Outcome.FAILED),
    ],
)
def test_record_result_known_outcomes(wire: pb.PaymentOutcome.ValueType, domain: c.Outcome) -> None:
    assert convert.record_payment_result(pb.RecordPaymentResultRequest(outcome=wire)).outcome is (
        domain
    )


@pytest.mark.parametrize(
    ("wire", "domain"),
    [
        (pb.CARD_ENTRY_METHOD_UNSPECIFIED, None),
        (12, None),
        (pb.CARD_ENTRY_METHOD_SWIPED, c.EntryMethod.SWIPED),
        (pb.CARD_ENTRY_METHOD_DIPPED, c.EntryMethod.DIPPED),
        (pb.CARD_ENTRY_METHOD_CONTACTLESS, c.EntryMethod.CONTACTLESS),
        (pb.CARD_ENTRY_METHOD_KEYED, c.EntryMethod.KEYED),
        (pb.CARD_ENTRY_METHOD_ON_FILE, c.EntryMethod.ON_FILE),
    ],
)
def test_record_result_card_entry_method(wire: int, domain: c.EntryMethod | None) -> None:
    card = pb.CardDetails(
        brand="visa", last4="4242", entry_method=pb.CardEntryMethod.ValueType(wire)
    )
    command = convert.record_payment_result(pb.RecordPaymentResultRequest(card=card))
    assert command.card == c.CardInput(brand="visa", last4="4242", entry_method=domain)


def test_record_result_with_unknown_enums_fails_validation_on_each() -> None:
    request = pb.RecordPaymentResultRequest(
        sale_id=SALE_ID,
        payment_id=PAYMENT_ID,
        outcome=pb.PAYMENT_OUTCOME_APPROVED,
        tender=FUTURE_TENDER,
        card=pb.CardDetails(brand="visa", last4="4242"),
    )
    command = convert.record_payment_result(request)
    assert (command.tender, command.card) == (
        None,
        c.CardInput(brand="visa", last4="4242", entry_method=None),
    )
    with pytest.raises(InvalidRequest) as info:
        c.validate(command)
    assert sorted(v.field for v in info.value.violations) == ["card.entry_method", "tender"]


def test_record_result_optional_fields() -> None:
    bare = convert.record_payment_result(pb.RecordPaymentResultRequest())
    assert (bare.card, bare.approved_amount, bare.occurred_at, bare.tender) == (
        None,
        None,
        None,
        None,
    )

    occurred = datetime(2025, 5, 17, 9, 30, 15, 250_000, tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(occurred)
    full = convert.record_payment_result(
        pb.RecordPaymentResultRequest(
            sale_id=SALE_ID,
            payment_id=PAYMENT_ID,
            outcome=pb.PAYMENT_OUTCOME_APPROVED,
            tender=pb.TENDER_TYPE_CASH,
            approved_amount=0,  # explicitly set: kept, so validation can refuse it
            tip_amount=5,
            cash_tendered=100,
            change_given=15,
            auth_code="A",
            processor_reference="P",
            error_code="E",
            occurred_at=ts,
        )
    )
    assert full == c.RecordPaymentResult(
        sale_id=SALE_ID,
        payment_id=PAYMENT_ID,
        outcome=c.Outcome.APPROVED,
        tender=c.Tender.CASH,
        card=None,
        auth_code="A",
        processor_reference="P",
        approved_amount=0,
        tip_amount=5,
        cash_tendered=100,
        change_given=15,
        error_code="E",
        occurred_at=occurred,
    )
    assert full.occurred_at is not None
    assert full.occurred_at.tzinfo is not None


def test_record_result_out_of_range_timestamp_is_an_invalid_field() -> None:
    request = pb.RecordPaymentResultRequest(occurred_at=Timestamp(seconds=10**12))
    with pytest.raises(InvalidRequest) as info:
        convert.record_payment_result(request)
    assert [v.field for v in info.value.violations] == ["occurred_at"]


def test_add_line_item_without_item_is_none() -> None:
    assert convert.add_line_item(pb.AddLineItemRequest(sale_id=SALE_ID)).line_item is None


def test_simple_requests_carry_their_fields() -> None:
    assert convert.remove_line_item(
        pb.RemoveLineItemRequest(sale_id=SALE_ID, line_id="l")
    ) == c.RemoveLineItem(sale_id=SALE_ID, line_id="l")
    assert convert.attach_customer(
        pb.AttachCustomerRequest(sale_id=SALE_ID, customer_id="cu")
    ) == c.AttachCustomer(sale_id=SALE_ID, customer_id="cu")
    assert convert.cancel_payment(
        pb.CancelPaymentRequest(sale_id=SALE_ID, payment_id=PAYMENT_ID, reason="r")
    ) == c.CancelPayment(sale_id=SALE_ID, payment_id=PAYMENT_ID, reason="r")
    refund = convert.refund_payment(
        pb.RefundPaymentRequest(
            sale_id=SALE_ID, payment_id=PAYMENT_ID, amount=7, reason="r", processor_reference="p"
        )
    )
    assert (refund.sale_id, refund.payment_id, refund.amount, refund.reason) == (
        SALE_ID,
        PAYMENT_ID,
        7,
        "r",
    )
    assert refund.processor_reference == "p"
    assert convert.cancel_sale(pb.CancelSaleRequest(sale_id=SALE_ID, reason="r")) == c.CancelSale(
        sale_id=SALE_ID, reason="r"
    )


# ---- sale -> message -------------------------------------------------------------------------

MUG = c.LineItemInput(
    sku="MUG", name="Mug", quantity=2, unit_price=500, discount=100, tax_rate_ppm=88_750
)
TEA = c.LineItemInput(sku="TEA", name="Tea", quantity=1, unit_price=1999, tax_rate_ppm=0)


def _sale_with_payments() -> tuple[Sale, dict[str, str]]:
    """An open sale (total 2979) with a card approval, a cash approval, a decline and a
    pending request."""
    sale = Sale.create(
        merchant_id="merchant-1",
        location_id="store-1",
        channel=c.Channel.IN_STORE,
        currency_code="USD",
        line_items=(MUG, TEA),
        customer_id="customer-1",
        external_order_id="order-1",
        note="note",
    )

    def request(amount: int, *tenders: c.Tender) -> str:
        return sale.request_payment(
            amount=amount,
            currency_code="USD",
            tender_types=list(tenders),
            callback_url="https://pos.example.com/cb",
            app_id="pos-app",
            api_version="1.0",
            note="n",
            state="st",
        )

    def record(payment_id: str, **fields: object) -> None:
        sale.record_payment_result(
            c.RecordPaymentResult(sale_id=str(sale.id), payment_id=payment_id, **fields)  # type: ignore[arg-type]
        )

    ids = {
        "card": request(1000, c.Tender.CARD, c.Tender.CARD_ON_FILE),
        "cash": request(500, c.Tender.CASH),
        "declined": request(400, c.Tender.GIFT_CARD, c.Tender.CARD),
    }
    record(
        ids["card"],
        outcome=c.Outcome.APPROVED,
        tender=c.Tender.CARD,
        card=c.CardInput(brand="visa", last4="4242", entry_method=c.EntryMethod.CONTACTLESS),
        auth_code="AUTH",
        processor_reference="proc-1",
        tip_amount=150,
        occurred_at=datetime(2025, 5, 17, 9, 30, tzinfo=UTC),
    )
    record(
        ids["cash"],
        outcome=c.Outcome.APPROVED,
        tender=c.Tender.CASH,
        cash_tendered=1000,
        change_given=500,
    )
    record(
        ids["declined"],
        outcome=c.Outcome.DECLINED,
        tender=c.Tender.CARD,
        card=c.CardInput(brand="mastercard", last4="0005", entry_method=c.EntryMethod.DIPPED),
        error_code="51",
    )
    ids["pending"] = request(300, c.Tender.OTHER)
    sale.refund_payment(ids["cash"], 200, "returned", "rf-1")
    return sale, ids


def test_sale_message_reflects_the_sale() -> None:
    sale, ids = _sale_with_payments()
    message = convert.sale_message(sale)

    assert message.id == str(sale.id)
    assert message.version == sale.version == 9
    assert message.status == pb.SALE_STATUS_OPEN
    assert message.channel == pb.SALES_CHANNEL_IN_STORE
    assert (message.location_id, message.currency_code, message.customer_id) == (
        "store-1",
        "USD",
        "customer-1",
    )
    assert (message.subtotal, message.discount_total, message.tax_total, message.total) == (
        2999,
        100,
        80,
        2979,
    )
    assert (message.paid_total, message.refunded_total, message.pending_total) == (1500, 200, 300)
    assert message.amount_due == 2979 - 1300 - 300
    assert message.tip_total == 150
    assert [line.sku for line in message.line_items] == ["MUG", "TEA"]
    mug = message.line_items[0]
    assert (mug.gross_amount, mug.tax_amount, mug.total_amount) == (1000, 80, 980)
    assert mug.line_id == sale.line_items[0].line_id

    payments = {p.id: p for p in message.payments}
    assert [p.id for p in message.payments] == list(sale.payments)

    card = payments[ids["card"]]
    assert card.status == pb.PAYMENT_STATUS_APPROVED
    assert card.tender == pb.TENDER_TYPE_CARD
    assert list(card.tender_types) == [pb.TENDER_TYPE_CARD, pb.TENDER_TYPE_CARD_ON_FILE]
    assert card.HasField("card")
    assert (card.card.brand, card.card.last4) == ("visa", "4242")
    assert card.card.entry_method == pb.CARD_ENTRY_METHOD_CONTACTLESS
    assert (card.amount, card.approved_amount, card.tip_amount) == (1000, 1000, 150)
    assert (card.auth_code, card.processor_reference) == ("AUTH", "proc-1")
    assert card.occurred_at.ToDatetime(tzinfo=UTC) == datetime(2025, 5, 17, 9, 30, tzinfo=UTC)
    assert card.HasField("requested_at")
    assert card.HasField("resolved_at")
    assert (card.callback_url, card.app_id, card.api_version, card.state) == (
        "https://pos.example.com/cb",
        "pos-app",
        "1.0",
        "st",
    )

    cash = payments[ids["cash"]]
    assert cash.status == pb.PAYMENT_STATUS_APPROVED
    assert cash.tender == pb.TENDER_TYPE_CASH
    assert not cash.HasField("card")
    assert (cash.cash_tendered, cash.change_given, cash.refunded_amount) == (1000, 500, 200)

    declined = payments[ids["declined"]]
    assert declined.status == pb.PAYMENT_STATUS_DECLINED
    assert (declined.approved_amount, declined.error_code) == (0, "51")
    assert declined.card.last4 == "0005"
    assert declined.card.entry_method == pb.CARD_ENTRY_METHOD_DIPPED

    pending = payments[ids["pending"]]
    assert pending.status == pb.PAYMENT_STATUS_PENDING
    assert pending.tender == pb.TENDER_TYPE_UNSPECIFIED
    assert not pending.HasField("resolved_at")
    assert not pending.HasField("occurred_at")

    (refund,) = message.refunds
    assert (refund.payment_id, refund.amount, refund.reason, refund.processor_reference) == (
        ids["cash"],
        200,
        "returned",
        "rf-1",
    )
    assert refund.id == sale.refunds[0].id
    assert refund.HasField("refunded_at")

    assert message.HasField("created_at")
    assert message.HasField("updated_at")
    assert not message.HasField("completed_at")
    assert not message.HasField("canceled_at")


def test_sale_message_survives_the_wire() -> None:
    sale, _ = _sale_with_payments()
    message = convert.sale_message(sale)
    again = pb.Sale.FromString(message.SerializeToString())
    assert again == message
    assert again.updated_at.ToDatetime(tzinfo=UTC) == sale.modified_on
    assert again.created_at.ToDatetime(tzinfo=UTC) == sale.created_on


def test_sale_message_statuses() -> None:
    sale, ids = _sale_with_payments()
    sale.cancel_payment(ids["pending"], "gave up")
    assert convert.sale_message(sale).status == pb.SALE_STATUS_OPEN
    canceled = next(p for p in convert.sale_message(sale).payments if p.id == ids["pending"])
    assert canceled.status == pb.PAYMENT_STATUS_CANCELED
    assert canceled.cancel_reason == "gave up"

    last = sale.request_payment(
        amount=sale.amount_due,
        currency_code="USD",
        tender_types=[c.Tender.GIFT_CARD],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
    )
    sale.record_payment_result(
        c.RecordPaymentResult(
            sale_id=str(sale.id),
            payment_id=last,
            outcome=c.Outcome.APPROVED,
            tender=c.Tender.GIFT_CARD,
        )
    )
    message = convert.sale_message(sale)
    assert message.status == pb.SALE_STATUS_COMPLETED
    assert message.HasField("completed_at")
    assert message.amount_due == 0

    for payment in list(sale.payments.values()):
        if payment.refundable:
            sale.refund_payment(payment.id, payment.refundable, "", "")
    assert convert.sale_message(sale).status == pb.SALE_STATUS_REFUNDED


def test_sale_message_of_a_canceled_sale() -> None:
    sale = Sale.create(
        merchant_id="m",
        location_id="l",
        channel=c.Channel.ONLINE,
        currency_code="KWD",
        line_items=(),
    )
    sale.cancel("test")
    message = convert.sale_message(sale)
    assert message.status == pb.SALE_STATUS_CANCELED
    assert message.channel == pb.SALES_CHANNEL_ONLINE
    assert message.cancel_reason == "test"
    assert message.HasField("canceled_at")
    assert list(message.payments) == []


# ---- domain errors -> google.rpc.Status ------------------------------------------------------


def _details(status: status_pb2.Status) -> tuple[error_details_pb2.ErrorInfo, list[object]]:
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    rest: list[object] = []
    for detail in status.details[1:]:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            assert detail.Unpack(retry)
            rest.append(retry)
            continue
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        rest.append(bad_request)
    return info, rest


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (NotFound("no such sale"), code_pb2.NOT_FOUND, "NOT_FOUND"),
        (
            NotFound("no payment", reason="PAYMENT_NOT_FOUND"),
            code_pb2.NOT_FOUND,
            "PAYMENT_NOT_FOUND",
        ),
        (
            RuleViolated("too much", reason="AMOUNT_EXCEEDS_DUE"),
            code_pb2.FAILED_PRECONDITION,
            "AMOUNT_EXCEEDS_DUE",
        ),
        (VersionConflict("changed"), code_pb2.ABORTED, "VERSION_CONFLICT"),
        (RequestIdReused("reused"), code_pb2.ALREADY_EXISTS, "REQUEST_ID_REUSED"),
        (Unauthenticated("bad key"), code_pb2.UNAUTHENTICATED, "API_KEY_INVALID"),
        (DomainError("odd"), code_pb2.UNKNOWN, "DOMAIN_ERROR"),
    ],
)
def test_domain_status_code_and_reason(error: DomainError, code: int, reason: str) -> None:
    status = domain_status(error)
    assert status.code == code
    assert status.message == error.message
    info, rest = _details(status)
    assert (info.reason, info.domain) == (reason, ERROR_DOMAIN)
    assert rest == []


def test_invalid_request_status_names_every_field() -> None:
    error = InvalidRequest(
        [
            FieldViolation("line_items[0].quantity", "must be between 1 and 1000000"),
            FieldViolation("api_version", "'2.0' is not supported", "UNSUPPORTED_API_VERSION"),
        ]
    )
    status = domain_status(error)
    assert status.code == code_pb2.INVALID_ARGUMENT
    info, rest = _details(status)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", ERROR_DOMAIN)
    (bad_request,) = rest
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [(v.field, v.description, v.reason) for v in bad_request.field_violations] == [
        ("line_items[0].quantity", "must be between 1 and 1000000", "INVALID_FIELD"),
        ("api_version", "'2.0' is not supported", "UNSUPPORTED_API_VERSION"),
    ]


def _trailer_bytes(status: status_pb2.Status) -> int:
    """grpc-message plus grpc-status-details-bin (base64 on the wire)."""
    return len(status.message.encode()) + len(base64.b64encode(status.SerializeToString()))


def test_a_status_quoting_a_huge_input_stays_small_enough_to_send() -> None:
    # gRPC refuses trailers over 16 KiB; found by the fuzz with a 20,000-character id.
    huge = "x" * 20_000
    error = InvalidRequest([FieldViolation(f"ids[{i}]", f"{huge} is not an id") for i in range(50)])
    status = domain_status(error)
    assert _trailer_bytes(status) < 15_000
    _, (bad_request,) = _details(status)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert len(bad_request.field_violations) == 20
    assert bad_request.field_violations[0].description.endswith("…")
    missing = domain_status(NotFound(f"webhook {huge} not found", metadata={"id": huge}))
    assert _trailer_bytes(missing) < 2_000
    assert missing.message.startswith("webhook xxx")


def test_a_refusal_naming_lines_is_failed_precondition_with_field_violations() -> None:
    error = RuleViolated(
        "not enough stock",
        reason="INSUFFICIENT_STOCK",
        violations=[FieldViolation("line_items[1]", "2 available", "INSUFFICIENT_STOCK")],
    )
    status = domain_status(error)
    assert status.code == code_pb2.FAILED_PRECONDITION
    info, rest = _details(status)
    assert info.reason == "INSUFFICIENT_STOCK"
    (bad_request,) = rest
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("line_items[1]", "INSUFFICIENT_STOCK")
    ]


def test_validation_error_status_end_to_end() -> None:
    request = pb.RequestPaymentRequest(
        sale_id=SALE_ID,
        amount=100,
        currency_code="USD",
        tender_types=[pb.TENDER_TYPE_CARD],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="9.9",
    )
    with pytest.raises(InvalidRequest) as exc:
        c.validate(convert.request_payment(request))
    status = domain_status(exc.value)
    info, rest = _details(status)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert info.reason == "UNSUPPORTED_API_VERSION"
    (bad_request,) = rest
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["api_version"]


def test_status_converts_to_grpc_trailers() -> None:
    status = domain_status(RuleViolated("closed", reason="SALE_NOT_OPEN"))
    grpc_status = rpc_status.to_status(status)
    assert grpc_status.code.value[0] == code_pb2.FAILED_PRECONDITION
    assert grpc_status.details == "closed"
    trailers = dict(grpc_status.trailing_metadata)
    assert status_pb2.Status.FromString(trailers["grpc-status-details-bin"]) == status


@pytest.mark.parametrize("error", [OperationalError("down"), InterfaceError("closed")])
def test_store_errors_answer_unavailable(error: Exception) -> None:
    status = status_for(error)
    assert status is not None
    assert status.code == code_pb2.UNAVAILABLE
    info, _ = _details(status)
    assert info.reason == "STORE_UNAVAILABLE"
    assert "down" not in status.message


def test_unexpected_errors_have_no_status() -> None:
    assert status_for(ValueError("bug")) is None
    assert status_for(KeyError("bug")) is None


def test_status_for_domain_errors_is_domain_status() -> None:
    error = NotFound("gone", reason="PAYMENT_NOT_FOUND")
    assert status_for(error) == domain_status(error)
