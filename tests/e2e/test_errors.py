"""Every error a client can meet, as the client sees it: status code, ErrorInfo reason and,
for bad input, one BadRequest field violation per bad field."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.v1 import sales_pb2 as pb
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
UINT32 = st.integers(min_value=0, max_value=2**32 - 1)


def _invalid(call: Callable[[], object]) -> api.RpcFailure:
    failure = api.expect_failure(call)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.domain == "posledger"
    assert failure.violations, "INVALID_ARGUMENT must name the bad fields"
    return failure


# ---- INVALID_ARGUMENT --------------------------------------------------------------------


def test_negative_quantity_names_the_line_field(stub: SalesServiceStub) -> None:
    failure = _invalid(
        lambda: api.create_sale(stub, line_items=[api.line_item(), api.line_item(quantity=-2)])
    )

    assert failure.fields == {"line_items[1].quantity"}
    assert failure.reason == "INVALID_ARGUMENT"
    assert "line_items[1].quantity" in failure.message


def test_each_bad_field_gets_its_own_violation(stub: SalesServiceStub) -> None:
    failure = _invalid(
        lambda: api.create_sale(
            stub,
            location_id="",
            channel=99,
            currency_code="XXQ",
            line_items=[api.line_item(sku="", unit_price=-1, tax_rate_ppm=2_000_000)],
            note="n" * 1001,
        )
    )

    assert failure.fields == {
        "location_id",
        "channel",
        "currency_code",
        "line_items[0].sku",
        "line_items[0].unit_price",
        "line_items[0].tax_rate_ppm",
        "note",
    }
    assert failure.violation("currency_code").reason == "UNKNOWN_CURRENCY"
    assert failure.violation("location_id").description == "is required"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"channel": 99}, "channel"),
        ({"channel": pb.SALES_CHANNEL_UNSPECIFIED}, "channel"),
        ({"location_id": ""}, "location_id"),
        ({"location_id": "   "}, "location_id"),
        ({"location_id": "x" * 65}, "location_id"),
        ({"currency_code": ""}, "currency_code"),
        ({"customer_id": "c" * 65}, "customer_id"),
        ({"external_order_id": "e" * 129}, "external_order_id"),
        ({"note": "bell\x07"}, "note"),
        ({"line_items": [api.line_item(name="   ")]}, "line_items[0].name"),
        ({"line_items": [api.line_item(quantity=0)]}, "line_items[0].quantity"),
        ({"line_items": [api.line_item(discount=1001)]}, "line_items[0].discount"),
        ({"line_items": [api.line_item(discount=-1)]}, "line_items[0].discount"),
    ],
)
def test_create_sale_field_violations(
    stub: SalesServiceStub, overrides: dict[str, Any], field: str
) -> None:
    failure = _invalid(lambda: api.create_sale(stub, **overrides))

    assert failure.fields == {field}


def test_missing_request_id_is_invalid(stub: SalesServiceStub) -> None:
    failure = _invalid(lambda: api.create_sale(stub, request_id=""))

    assert failure.fields == {"request_id"}
    overlong = _invalid(lambda: api.create_sale(stub, request_id="r" * 129))
    assert overlong.fields == {"request_id"}


def test_card_number_in_free_text_is_rejected(stub: SalesServiceStub) -> None:
    failure = _invalid(lambda: api.create_sale(stub, note="card 4111 1111 1111 1111 thanks"))

    assert failure.fields == {"note"}
    assert failure.reason == "CARD_NUMBER_REJECTED"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"currency_code": "usd"}, "currency_code"),
        ({"tender_types": []}, "tender_types"),
        ({"tender_types": [99]}, "tender_types[0]"),
        ({"tender_types": [pb.TENDER_TYPE_CASH, pb.TENDER_TYPE_CASH]}, "tender_types"),
        ({"callback_url": ""}, "callback_url"),
        ({"callback_url": "http://pos.example.com/cb"}, "callback_url"),
        ({"callback_url": "ftp://pos.example.com/cb"}, "callback_url"),
        ({"callback_url": "/relative/path"}, "callback_url"),
        ({"callback_url": "https://user:pw@pos.example.com/cb"}, "callback_url"),
        ({"callback_url": "https://[::1/cb"}, "callback_url"),
        ({"app_id": "a" * 129}, "app_id"),  # empty is the key's app
        ({"state": "s" * 4097}, "state"),
    ],
)
def test_request_payment_field_violations(
    stub: SalesServiceStub, overrides: dict[str, Any], field: str
) -> None:
    sale = api.create_sale(stub)

    fields = dict(overrides)
    amount = fields.pop("amount", 100)
    failure = _invalid(lambda: api.request_payment(stub, sale.id, amount, **fields))

    assert failure.fields == {field}


def test_http_callback_is_fine_for_localhost(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)

    for url in ["http://localhost:8080/cb", "http://127.0.0.1/cb", "http://[::1]:9/cb"]:
        payment = api.request_payment(stub, sale.id, 1, callback_url=url).payment
        assert payment.callback_url == url


def test_unsupported_api_version_has_its_own_reason(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)

    failure = _invalid(lambda: api.request_payment(stub, sale.id, 100, api_version="9.9"))

    assert failure.reason == "UNSUPPORTED_API_VERSION"
    assert failure.fields == {"api_version"}
    assert failure.violation("api_version").reason == "UNSUPPORTED_API_VERSION"
    assert "1.0" in failure.violation("api_version").description


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"card": api.card(last4="12345")}, {"card.last4"}),
        ({"card": api.card(last4="42a2")}, {"card.last4"}),
        ({"card": api.card(brand="")}, {"card.brand"}),
        ({"card": api.card(entry_method=99)}, {"card.entry_method"}),
        ({"outcome": 99}, {"outcome"}),
        ({"outcome": pb.PAYMENT_OUTCOME_UNSPECIFIED}, {"outcome"}),
        ({"tender": 99}, {"tender"}),
        ({"card": None}, {"card"}),
        ({"tip_amount": -1}, {"tip_amount"}),
        ({"approved_amount": 0}, {"approved_amount"}),
        ({"cash_tendered": 500}, {"cash_tendered"}),
        ({"occurred_at": Timestamp(seconds=2**62)}, {"occurred_at"}),
        ({"auth_code": "a" * 65}, {"auth_code"}),
        (
            {"outcome": pb.PAYMENT_OUTCOME_DECLINED, "approved_amount": 10, "tip_amount": 5},
            {"approved_amount", "tip_amount"},
        ),
    ],
)
def test_record_result_field_violations(
    stub: SalesServiceStub, overrides: dict[str, Any], fields: set[str]
) -> None:
    sale = api.create_sale(stub)
    payment = api.request_payment(stub, sale.id, sale.total).payment

    failure = _invalid(lambda: api.record_result(stub, sale.id, payment.id, **overrides))

    assert failure.fields == fields
    assert api.get_sale(stub, sale.id).payments[0].status == pb.PAYMENT_STATUS_PENDING


@pytest.mark.parametrize("sale_id", ["", "not-a-uuid", "1234"])
def test_bad_sale_ids_are_invalid_not_missing(stub: SalesServiceStub, sale_id: str) -> None:
    for call in [
        lambda: api.get_sale(stub, sale_id),
        lambda: api.add_line_item(stub, sale_id),
        lambda: api.cancel_sale(stub, sale_id),
    ]:
        assert _invalid(call).fields == {"sale_id"}


def test_bad_ids_and_versions_of_commands(stub: SalesServiceStub, customer_id: str) -> None:
    sale = api.create_sale(stub)

    assert _invalid(lambda: api.remove_line_item(stub, sale.id, "line-1")).fields == {"line_id"}
    assert _invalid(lambda: api.cancel_payment(stub, sale.id, "")).fields == {"payment_id"}
    assert _invalid(lambda: api.refund(stub, sale.id, "p", 0)).fields == {"payment_id", "amount"}
    assert _invalid(lambda: api.attach_customer(stub, sale.id, "")).fields == {"customer_id"}
    assert _invalid(
        lambda: stub.AddLineItem(
            pb.AddLineItemRequest(request_id=api.new_request_id(), sale_id=sale.id),
            timeout=api.TIMEOUT,
        )
    ).fields == {"line_item"}
    for version in (0, -3):
        failure = _invalid(
            functools.partial(
                api.attach_customer, stub, sale.id, customer_id, expected_version=version
            )
        )
        assert failure.fields == {"expected_version"}


# ---- NOT_FOUND ---------------------------------------------------------------------------


def test_unknown_sale_is_not_found(stub: SalesServiceStub) -> None:
    missing = str(uuid.uuid4())

    for call in [
        lambda: api.get_sale(stub, missing),
        lambda: api.add_line_item(stub, missing),
        lambda: api.request_payment(stub, missing, 100),
        lambda: api.cancel_sale(stub, missing),
    ]:
        failure = api.expect_failure(call)
        assert failure.code == grpc.StatusCode.NOT_FOUND
        assert failure.reason == "SALE_NOT_FOUND"
        assert failure.violations == []


def test_unknown_payment_is_not_found(stub: SalesServiceStub) -> None:
    sale, _ = api.paid_sale(stub)
    missing = str(uuid.uuid4())

    for call in [
        lambda: api.record_result(stub, sale.id, missing),
        lambda: api.cancel_payment(stub, sale.id, missing),
        lambda: api.refund(stub, sale.id, missing, 1),
    ]:
        failure = api.expect_failure(call)
        assert failure.code == grpc.StatusCode.NOT_FOUND
        assert failure.reason == "PAYMENT_NOT_FOUND"


# ---- FAILED_PRECONDITION -----------------------------------------------------------------


def _precondition(call: Callable[[], object], reason: str) -> None:
    failure = api.expect_failure(call)
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, failure
    assert failure.reason == reason
    assert failure.violations == []


def test_amount_exceeding_due_is_refused(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)  # total 1000
    api.request_payment(stub, sale.id, 600)

    _precondition(lambda: api.request_payment(stub, sale.id, 401), "AMOUNT_EXCEEDS_DUE")
    assert api.get_sale(stub, sale.id).pending_total == 600


def test_currency_mismatch_is_refused(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)

    _precondition(
        lambda: api.request_payment(stub, sale.id, 100, currency_code="EUR"), "CURRENCY_MISMATCH"
    )


def test_second_different_result_is_refused(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)
    payment = api.request_payment(stub, sale.id, sale.total).payment
    approved = api.record_result(stub, sale.id, payment.id)

    # The same result again under a new request id is accepted and changes nothing.
    same = api.record_result(stub, sale.id, payment.id)
    assert same.sale.version == approved.sale.version
    _precondition(
        lambda: api.record_result(
            stub, sale.id, payment.id, outcome=pb.PAYMENT_OUTCOME_DECLINED, auth_code=""
        ),
        "PAYMENT_ALREADY_RESOLVED",
    )
    _precondition(
        lambda: api.record_result(stub, sale.id, payment.id, auth_code="OTHER"),
        "PAYMENT_ALREADY_RESOLVED",
    )


def test_other_state_rules(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub)
    payment = api.request_payment(stub, sale.id, 500, tender_types=[pb.TENDER_TYPE_CASH]).payment

    _precondition(lambda: api.record_result(stub, sale.id, payment.id), "TENDER_NOT_ALLOWED")
    _precondition(
        lambda: api.record_result(
            stub, sale.id, payment.id, tender=pb.TENDER_TYPE_CASH, card=None, approved_amount=501
        ),
        "APPROVED_AMOUNT_EXCEEDS_REQUESTED",
    )
    _precondition(
        lambda: api.record_result(
            stub,
            sale.id,
            payment.id,
            tender=pb.TENDER_TYPE_CASH,
            card=None,
            cash_tendered=1000,
            change_given=1,
        ),
        "CHANGE_MISMATCH",
    )
    _precondition(lambda: api.refund(stub, sale.id, payment.id, 1), "PAYMENT_NOT_APPROVED")
    api.record_result(stub, sale.id, payment.id, tender=pb.TENDER_TYPE_CASH, card=None)
    _precondition(lambda: api.cancel_payment(stub, sale.id, payment.id), "PAYMENT_NOT_PENDING")
    _precondition(lambda: api.cancel_sale(stub, sale.id), "PAYMENTS_APPROVED")


# ---- ALREADY_EXISTS and ABORTED ----------------------------------------------------------


def test_request_id_reused_for_a_different_request(stub: SalesServiceStub) -> None:
    request_id = api.new_request_id()
    sale = api.create_sale(stub, request_id=request_id)

    for call in [
        lambda: api.create_sale(stub, request_id=request_id, note="different"),
        lambda: api.add_line_item(stub, sale.id, request_id=request_id),
    ]:
        failure = api.expect_failure(call)
        assert failure.code == grpc.StatusCode.ALREADY_EXISTS
        assert failure.reason == "REQUEST_ID_REUSED"
    assert api.get_sale(stub, sale.id).version == 1


def test_version_conflict_is_aborted(stub: SalesServiceStub, customer_id: str) -> None:
    sale = api.create_sale(stub)
    api.attach_customer(stub, sale.id, customer_id)

    failure = api.expect_failure(lambda: api.cancel_sale(stub, sale.id, expected_version=1))

    assert failure.code == grpc.StatusCode.ABORTED
    assert failure.reason == "VERSION_CONFLICT"
    assert "version" in failure.message
    assert api.get_sale(stub, sale.id).status == pb.SALE_STATUS_OPEN


# ---- malformed input never breaks the server ---------------------------------------------

TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=10),
    st.sampled_from(["", " ", "\x00", "x" * 5000, "4111111111111111", "USD", "1.0"]),
)
UUIDISH = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper()), st.just(""), TEXT)
URL = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "https://[::1",
            "https://:0",
            "http://localhost:99999/x",
            "https://exa mple.com/\x00",
            "javascript:alert(1)",
            "https://" + "a" * 3000,
            "https://user@example.com",
        ]
    ),
)


@st.composite
def line_items(draw: st.DrawFn) -> pb.LineItemInput:
    return pb.LineItemInput(
        sku=draw(TEXT),
        name=draw(TEXT),
        quantity=draw(INT32),
        unit_price=draw(INT64),
        discount=draw(INT64),
        tax_rate_ppm=draw(UINT32),
    )


CHANNEL = INT32.map(pb.SalesChannel.ValueType)
TENDER = INT32.map(pb.TenderType.ValueType)
OUTCOME = INT32.map(pb.PaymentOutcome.ValueType)
ENTRY_METHOD = INT32.map(pb.CardEntryMethod.ValueType)


def _maybe_expected_version(draw: st.DrawFn, request: Any) -> None:
    version = draw(st.none() | INT64)
    if version is not None:
        request.expected_version = version


@st.composite
def malformed_calls(
    draw: st.DrawFn, sale_id: str, payment_id: str
) -> Callable[[SalesServiceStub], object]:
    """One call with random field values, some aimed at a real sale and payment."""
    target = draw(st.sampled_from([sale_id, sale_id.upper()]) | UUIDISH)
    pay = draw(st.sampled_from([payment_id]) | UUIDISH)
    rid = draw(st.one_of(st.uuids().map(str), TEXT))
    kind = draw(st.sampled_from(["create", "add", "pay", "result", "refund", "misc"]))
    if kind == "create":
        request = pb.CreateSaleRequest(
            request_id=rid,
            location_id=draw(TEXT),
            channel=draw(CHANNEL),
            currency_code=draw(st.sampled_from(["USD", "JPY", "BHD"]) | TEXT),
            line_items=draw(st.lists(line_items(), max_size=3)),
            customer_id=draw(TEXT),
            external_order_id=draw(TEXT),
            note=draw(TEXT),
        )
        return lambda stub: stub.CreateSale(request, timeout=api.TIMEOUT)
    if kind == "add":
        add = pb.AddLineItemRequest(request_id=rid, sale_id=target, line_item=draw(line_items()))
        _maybe_expected_version(draw, add)
        return lambda stub: stub.AddLineItem(add, timeout=api.TIMEOUT)
    if kind == "pay":
        pay_request = pb.RequestPaymentRequest(
            request_id=rid,
            sale_id=target,
            amount=draw(INT64),
            currency_code=draw(st.sampled_from(["USD", "EUR"]) | TEXT),
            tender_types=draw(st.lists(TENDER, max_size=4)),
            callback_url=draw(URL),
            app_id=draw(TEXT),
            api_version=draw(st.sampled_from(["1.0"]) | TEXT),
            note=draw(TEXT),
            state=draw(TEXT),
        )
        _maybe_expected_version(draw, pay_request)
        return lambda stub: stub.RequestPayment(pay_request, timeout=api.TIMEOUT)
    if kind == "result":
        card = draw(
            st.none() | st.builds(pb.CardDetails, brand=TEXT, last4=TEXT, entry_method=ENTRY_METHOD)
        )
        result = pb.RecordPaymentResultRequest(
            request_id=rid,
            sale_id=target,
            payment_id=pay,
            outcome=draw(OUTCOME),
            tender=draw(TENDER),
            card=card,
            auth_code=draw(TEXT),
            processor_reference=draw(TEXT),
            tip_amount=draw(INT64),
            cash_tendered=draw(INT64),
            change_given=draw(INT64),
            error_code=draw(TEXT),
        )
        _maybe_expected_version(draw, result)
        if draw(st.booleans()):
            result.approved_amount = draw(INT64)
        if draw(st.booleans()):
            result.occurred_at.seconds = draw(st.integers(-(2**40), 2**40))
            result.occurred_at.nanos = draw(st.integers(0, 999_999_999))
        return lambda stub: stub.RecordPaymentResult(result, timeout=api.TIMEOUT)
    if kind == "refund":
        refund = pb.RefundPaymentRequest(
            request_id=rid,
            sale_id=target,
            payment_id=pay,
            amount=draw(INT64),
            reason=draw(TEXT),
            processor_reference=draw(TEXT),
        )
        _maybe_expected_version(draw, refund)
        return lambda stub: stub.RefundPayment(refund, timeout=api.TIMEOUT)
    line_id, customer_id, reason = draw(UUIDISH), draw(TEXT), draw(TEXT)
    misc: list[Callable[[SalesServiceStub], object]] = [
        lambda stub: stub.GetSale(pb.GetSaleRequest(sale_id=target), timeout=api.TIMEOUT),
        lambda stub: stub.RemoveLineItem(
            pb.RemoveLineItemRequest(request_id=rid, sale_id=target, line_id=line_id),
            timeout=api.TIMEOUT,
        ),
        lambda stub: stub.AttachCustomer(
            pb.AttachCustomerRequest(request_id=rid, sale_id=target, customer_id=customer_id),
            timeout=api.TIMEOUT,
        ),
        lambda stub: stub.CancelPayment(
            pb.CancelPaymentRequest(request_id=rid, sale_id=target, payment_id=pay, reason=reason),
            timeout=api.TIMEOUT,
        ),
        lambda stub: stub.CancelSale(
            pb.CancelSaleRequest(request_id=rid, sale_id=target, reason=reason),
            timeout=api.TIMEOUT,
        ),
    ]
    return draw(st.sampled_from(misc))


def test_malformed_requests_never_answer_internal_or_unknown(stub: SalesServiceStub) -> None:
    sale = api.create_sale(stub, line_items=[api.line_item(quantity=5)])
    payment = api.request_payment(stub, sale.id, 1000).payment
    expected_codes = {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
    }

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(call=malformed_calls(sale.id, payment.id))
    def run(call: Callable[[SalesServiceStub], object]) -> None:
        try:
            call(stub)
        except grpc.RpcError as error:
            failure = api.failure(error)
            assert failure.code in expected_codes, failure
            assert failure.reason, f"{failure.code} without an ErrorInfo reason"
            if failure.code == grpc.StatusCode.INVALID_ARGUMENT:
                assert failure.violations, failure

    run()


# ---- bytes that are not a request message ------------------------------------------------

TRUNCATED = b"\x0a\x05ab"  # field 1 says 5 bytes follow; 2 do
BAD_UTF8 = b"\x0a\x02\xff\xfe"  # field 1 (a string) is not UTF-8


@pytest.mark.parametrize("data", [TRUNCATED, BAD_UTF8], ids=["truncated", "bad-utf8"])
def test_bytes_that_do_not_parse_are_invalid_not_internal(
    channel: grpc.Channel, data: bytes
) -> None:
    create_sale = channel.unary_unary(
        "/ledger.v1.SalesService/CreateSale",
        request_serializer=None,
        response_deserializer=pb.CreateSaleResponse.FromString,
    )
    failure = _invalid(lambda: create_sale(data, timeout=api.TIMEOUT))
    assert failure.reason == "MALFORMED_REQUEST"
    assert failure.violation("").reason == "MALFORMED_REQUEST"


def test_a_stream_message_that_does_not_parse_is_named(channel: grpc.Channel) -> None:
    import_sales = channel.stream_unary(
        "/ledger.v1.SalesService/ImportSales",
        request_serializer=None,
        response_deserializer=pb.ImportSalesResponse.FromString,
    )
    good = pb.ImportSalesRequest().SerializeToString()
    failure = _invalid(lambda: import_sales(iter([good, TRUNCATED]), timeout=api.TIMEOUT))
    assert failure.violation("messages[1]").reason == "MALFORMED_REQUEST"
