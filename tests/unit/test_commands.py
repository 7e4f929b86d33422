"""Command validation: every rule that holds whatever the ledger's state.

Each refusal is an InvalidRequest naming every bad field by its wire path, so the cases
below state the exact (field, reason) pairs a command must produce.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ledger.domain.commands import (
    MAX_LINE_ITEMS,
    MAX_QUANTITY,
    AddLineItem,
    AttachCustomer,
    CancelPayment,
    CancelSale,
    CardInput,
    Channel,
    CreateSale,
    EntryMethod,
    LineItemInput,
    Outcome,
    RecordPaymentResult,
    RefundPayment,
    RemoveLineItem,
    RequestPayment,
    SaleCommand,
    Tender,
    check_expected_version,
    check_request_id,
    check_sale_id,
    validate,
)
from ledger.domain.errors import InvalidRequest
from ledger.domain.money import MAX_AMOUNT, PPM

SALE_ID = "0b6f6c8e-4a47-4c55-9a4e-6c1e3f1f2a10"
LINE_ID = "5f0c2f58-3f0e-4f55-8f44-0a6a1b5b9e21"
PAYMENT_ID = "c3b1d8a4-9e8e-4b0c-8f0a-2d9f6a1e7b33"

INVALID = "INVALID_FIELD"
CURRENCY = "UNKNOWN_CURRENCY"
CARD_NUMBER = "CARD_NUMBER_REJECTED"
API_VERSION = "UNSUPPORTED_API_VERSION"

ITEM = LineItemInput(
    sku="SKU-1", name="Coffee mug", quantity=2, unit_price=500, discount=100, tax_rate_ppm=88_750
)
CARD = CardInput(brand="visa", last4="4242", entry_method=EntryMethod.CONTACTLESS)

CREATE = CreateSale(
    location_id="store-1",
    channel=Channel.IN_STORE,
    currency_code="USD",
    line_items=(ITEM,),
    customer_id="customer-1",
    external_order_id="order-1",
    note="gift wrap, please",
)
ADD = AddLineItem(sale_id=SALE_ID, line_item=ITEM)
REMOVE = RemoveLineItem(sale_id=SALE_ID, line_id=LINE_ID)
ATTACH = AttachCustomer(sale_id=SALE_ID, customer_id="customer-1")
REQUEST = RequestPayment(
    sale_id=SALE_ID,
    amount=980,
    currency_code="USD",
    tender_types=(Tender.CARD, Tender.CASH),
    callback_url="https://pos.example.com/payments/callback",
    app_id="pos-app",
    api_version="1.0",
    note="table 4",
    state="opaque-state",
)
APPROVED_CARD = RecordPaymentResult(
    sale_id=SALE_ID,
    payment_id=PAYMENT_ID,
    outcome=Outcome.APPROVED,
    tender=Tender.CARD,
    card=CARD,
    auth_code="A1B2C3",
    processor_reference="proc-1",
)
APPROVED_CASH = RecordPaymentResult(
    sale_id=SALE_ID,
    payment_id=PAYMENT_ID,
    outcome=Outcome.APPROVED,
    tender=Tender.CASH,
    cash_tendered=2000,
    change_given=1020,
)
DECLINED = RecordPaymentResult(
    sale_id=SALE_ID,
    payment_id=PAYMENT_ID,
    outcome=Outcome.DECLINED,
    tender=Tender.CARD,
    card=CARD,
    error_code="05",
)
CANCEL_PAYMENT = CancelPayment(sale_id=SALE_ID, payment_id=PAYMENT_ID, reason="customer left")
REFUND = RefundPayment(
    sale_id=SALE_ID,
    payment_id=PAYMENT_ID,
    amount=100,
    reason="damaged",
    processor_reference="ref-1",
)
CANCEL_SALE = CancelSale(sale_id=SALE_ID, reason="mistake")


def _luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it pass the Luhn check (written independently
    of the code under test)."""
    for check in "0123456789":
        candidate = body + check
        digits = [int(ch) for ch in reversed(candidate)]
        total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def _luhn_broken(body: str) -> str:
    """`body` plus a check digit that fails the Luhn check."""
    valid = _luhn_complete(body)
    return valid[:-1] + str((int(valid[-1]) + 1) % 10)


PAN_13 = _luhn_complete("422222222222")
PAN_16 = "4111111111111111"
PAN_19 = _luhn_complete("622222222222222222")


def violations(command: SaleCommand) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as info:
        validate(command)
    return sorted((v.field, v.reason) for v in info.value.violations)


# ---- valid commands pass ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        CREATE,
        replace(CREATE, line_items=(), customer_id="", external_order_id="", note=""),
        replace(CREATE, currency_code="JPY", channel=Channel.ONLINE),
        replace(CREATE, currency_code="KWD", channel=Channel.OTHER),
        replace(CREATE, line_items=(ITEM,) * MAX_LINE_ITEMS),
        replace(CREATE, note="line one\nline two\r\n\tindented"),  # tab, CR, LF are text
        replace(CREATE, note="x" * 1000),
        replace(CREATE, note="call 555-123-4567 or order 1234-5678"),
        replace(CREATE, line_items=(replace(ITEM, quantity=1, unit_price=0, discount=0),)),
        replace(CREATE, line_items=(replace(ITEM, quantity=MAX_QUANTITY, unit_price=1),)),
        replace(CREATE, line_items=(replace(ITEM, quantity=1, unit_price=MAX_AMOUNT),)),
        replace(CREATE, line_items=(replace(ITEM, discount=1000, tax_rate_ppm=PPM),)),
        replace(CREATE, line_items=(replace(ITEM, sku="s" * 64, name="n" * 200),)),
        ADD,
        REMOVE,
        ATTACH,
        REQUEST,
        replace(REQUEST, tender_types=tuple(Tender)),
        replace(REQUEST, amount=1),
        replace(REQUEST, amount=MAX_AMOUNT),
        replace(REQUEST, note="", state="s" * 4096),
        APPROVED_CARD,
        replace(APPROVED_CARD, tender=Tender.CARD_ON_FILE, approved_amount=1, tip_amount=100),
        replace(APPROVED_CARD, card=replace(CARD, entry_method=EntryMethod.KEYED, last4="0000")),
        APPROVED_CASH,
        replace(APPROVED_CASH, cash_tendered=0, change_given=0),
        replace(APPROVED_CARD, tender=Tender.GIFT_CARD, card=None),
        replace(APPROVED_CARD, tender=Tender.OTHER, card=None, auth_code=""),
        DECLINED,
        replace(DECLINED, outcome=Outcome.FAILED, tender=None, card=None, error_code="E42"),
        replace(DECLINED, outcome=Outcome.CANCELED, tender=None, card=None, error_code=""),
        CANCEL_PAYMENT,
        replace(CANCEL_PAYMENT, reason=""),
        REFUND,
        replace(REFUND, amount=MAX_AMOUNT, reason="", processor_reference=""),
        CANCEL_SALE,
        replace(CANCEL_SALE, reason=""),
    ],
)
def test_valid_commands_pass(command: SaleCommand) -> None:
    validate(command)


# ---- every bad field is named, by its wire path ----------------------------------------------

LONG_NOTE = "n" * 1001


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        # CreateSale: scalar fields
        (replace(CREATE, location_id=""), [("location_id", INVALID)]),
        (replace(CREATE, location_id="   "), [("location_id", INVALID)]),
        (replace(CREATE, location_id="l" * 65), [("location_id", INVALID)]),
        (replace(CREATE, location_id="store\x00"), [("location_id", INVALID)]),
        (replace(CREATE, channel=None), [("channel", INVALID)]),
        (replace(CREATE, currency_code=""), [("currency_code", INVALID)]),
        (replace(CREATE, currency_code="usd"), [("currency_code", CURRENCY)]),
        (replace(CREATE, currency_code="XYZ"), [("currency_code", CURRENCY)]),
        (replace(CREATE, currency_code="USD" * 100), [("currency_code", CURRENCY)]),
        (replace(CREATE, customer_id="c" * 65), [("customer_id", INVALID)]),
        (replace(CREATE, external_order_id="o" * 129), [("external_order_id", INVALID)]),
        (replace(CREATE, note=LONG_NOTE), [("note", INVALID)]),
        (replace(CREATE, note="bell\x07"), [("note", INVALID)]),
        (replace(CREATE, note="escape \x1b[31m red"), [("note", INVALID)]),
        (replace(CREATE, note="delete\x7f"), [("note", INVALID)]),
        (replace(CREATE, note=f"card {PAN_16}"), [("note", CARD_NUMBER)]),
        (replace(CREATE, customer_id=PAN_16), [("customer_id", CARD_NUMBER)]),
        (replace(CREATE, external_order_id=PAN_13), [("external_order_id", CARD_NUMBER)]),
        # CreateSale: line items
        (replace(CREATE, line_items=(ITEM,) * (MAX_LINE_ITEMS + 1)), [("line_items", INVALID)]),
        (
            replace(CREATE, line_items=(replace(ITEM, quantity=0),)),
            [("line_items[0].quantity", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, quantity=-3),)),
            [("line_items[0].quantity", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, quantity=MAX_QUANTITY + 1, unit_price=1),)),
            [("line_items[0].quantity", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, unit_price=-1),)),
            [("line_items[0].unit_price", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, quantity=2, unit_price=MAX_AMOUNT),)),
            [("line_items[0].unit_price", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, discount=-1),)),
            [("line_items[0].discount", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, discount=1001),)),
            [("line_items[0].discount", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, tax_rate_ppm=-1),)),
            [("line_items[0].tax_rate_ppm", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, tax_rate_ppm=PPM + 1),)),
            [("line_items[0].tax_rate_ppm", INVALID)],
        ),
        (
            replace(CREATE, line_items=(ITEM, replace(ITEM, sku=""), replace(ITEM, name=" "))),
            [("line_items[1].sku", INVALID), ("line_items[2].name", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, sku="s" * 65, name="n" * 201),)),
            [("line_items[0].name", INVALID), ("line_items[0].sku", INVALID)],
        ),
        (
            replace(CREATE, line_items=(replace(ITEM, name=f"{PAN_19} mug"),)),
            [("line_items[0].name", CARD_NUMBER)],
        ),
        (
            # a negative quantity makes the line amount meaningless: no discount complaint too
            replace(CREATE, line_items=(replace(ITEM, quantity=-1, discount=10**9),)),
            [("line_items[0].quantity", INVALID)],
        ),
        # CreateSale: every bad field at once
        (
            CreateSale(
                location_id="",
                channel=None,
                currency_code="EURO",
                line_items=(ITEM, replace(ITEM, quantity=-1, tax_rate_ppm=2 * PPM)),
                customer_id="c" * 65,
                external_order_id="ok",
                note="\x00",
            ),
            [
                ("channel", INVALID),
                ("currency_code", CURRENCY),
                ("customer_id", INVALID),
                ("line_items[1].quantity", INVALID),
                ("line_items[1].tax_rate_ppm", INVALID),
                ("location_id", INVALID),
                ("note", INVALID),
            ],
        ),
        # AddLineItem
        (replace(ADD, sale_id=""), [("sale_id", INVALID)]),
        (replace(ADD, sale_id="sale-1"), [("sale_id", INVALID)]),
        (replace(ADD, line_item=None), [("line_item", INVALID)]),
        (replace(ADD, line_item=replace(ITEM, quantity=-1)), [("line_item.quantity", INVALID)]),
        (
            AddLineItem(sale_id="x", line_item=replace(ITEM, sku="", unit_price=-5)),
            [("line_item.sku", INVALID), ("line_item.unit_price", INVALID), ("sale_id", INVALID)],
        ),
        # RemoveLineItem
        (replace(REMOVE, line_id=""), [("line_id", INVALID)]),
        (replace(REMOVE, line_id="line-1"), [("line_id", INVALID)]),
        (RemoveLineItem(sale_id="", line_id=""), [("line_id", INVALID), ("sale_id", INVALID)]),
        # AttachCustomer
        (replace(ATTACH, customer_id=""), [("customer_id", INVALID)]),
        (replace(ATTACH, customer_id=" \t"), [("customer_id", INVALID)]),
        (replace(ATTACH, customer_id="c" * 65), [("customer_id", INVALID)]),
        (replace(ATTACH, customer_id="c\x1f"), [("customer_id", INVALID)]),
        # RequestPayment
        (replace(REQUEST, sale_id="nope"), [("sale_id", INVALID)]),
        (replace(REQUEST, amount=0), [("amount", INVALID)]),
        (replace(REQUEST, amount=-980), [("amount", INVALID)]),
        (replace(REQUEST, amount=MAX_AMOUNT + 1), [("amount", INVALID)]),
        (replace(REQUEST, currency_code=""), [("currency_code", INVALID)]),
        (replace(REQUEST, currency_code="US$"), [("currency_code", CURRENCY)]),
        (replace(REQUEST, tender_types=()), [("tender_types", INVALID)]),
        (replace(REQUEST, tender_types=(None,)), [("tender_types[0]", INVALID)]),
        (replace(REQUEST, tender_types=(Tender.CARD, None)), [("tender_types[1]", INVALID)]),
        (
            replace(REQUEST, tender_types=(Tender.CASH, Tender.CARD, Tender.CASH)),
            [("tender_types", INVALID)],
        ),
        (
            replace(REQUEST, tender_types=(None, Tender.CARD, None)),
            [("tender_types", INVALID), ("tender_types[0]", INVALID), ("tender_types[2]", INVALID)],
        ),
        (replace(REQUEST, app_id=""), [("app_id", INVALID)]),
        (replace(REQUEST, app_id="a" * 129), [("app_id", INVALID)]),
        (replace(REQUEST, api_version=""), [("api_version", API_VERSION)]),
        (replace(REQUEST, api_version="2.0"), [("api_version", API_VERSION)]),
        (replace(REQUEST, api_version="1.0 "), [("api_version", API_VERSION)]),
        (replace(REQUEST, api_version="v1" * 1000), [("api_version", API_VERSION)]),
        (replace(REQUEST, note=LONG_NOTE), [("note", INVALID)]),
        (replace(REQUEST, state="s" * 4097), [("state", INVALID)]),
        (replace(REQUEST, state=f"pan={PAN_16}"), [("state", CARD_NUMBER)]),
        (
            RequestPayment(
                sale_id="",
                amount=-1,
                currency_code="XXX",
                tender_types=(Tender.CARD, None),
                callback_url="http://pos.example.com/cb",
                app_id="",
                api_version="0.9",
                note="\x00",
                state=PAN_16,
            ),
            [
                ("amount", INVALID),
                ("api_version", API_VERSION),
                ("app_id", INVALID),
                ("callback_url", INVALID),
                ("currency_code", CURRENCY),
                ("note", INVALID),
                ("sale_id", INVALID),
                ("state", CARD_NUMBER),
                ("tender_types[1]", INVALID),
            ],
        ),
        # RecordPaymentResult
        (replace(APPROVED_CARD, sale_id=""), [("sale_id", INVALID)]),
        (replace(APPROVED_CARD, payment_id="p-1"), [("payment_id", INVALID)]),
        (replace(DECLINED, outcome=None), [("outcome", INVALID)]),
        (replace(APPROVED_CARD, tender=None, card=None), [("tender", INVALID)]),
        (replace(APPROVED_CARD, card=None), [("card", INVALID)]),
        (replace(APPROVED_CARD, tender=Tender.CARD_ON_FILE, card=None), [("card", INVALID)]),
        (replace(APPROVED_CARD, card=replace(CARD, last4="12345")), [("card.last4", INVALID)]),
        (replace(APPROVED_CARD, card=replace(CARD, last4="123")), [("card.last4", INVALID)]),
        (replace(APPROVED_CARD, card=replace(CARD, last4="")), [("card.last4", INVALID)]),
        (replace(APPROVED_CARD, card=replace(CARD, last4="12a4")), [("card.last4", INVALID)]),
        (replace(APPROVED_CARD, card=replace(CARD, last4="-123")), [("card.last4", INVALID)]),
        # full-width digits are digits to str.isdigit, but not to us
        (
            replace(APPROVED_CARD, card=replace(CARD, last4="\uff11\uff12\uff13\uff14")),
            [("card.last4", INVALID)],
        ),
        (replace(APPROVED_CARD, card=replace(CARD, last4=PAN_16)), [("card.last4", INVALID)]),
        (replace(APPROVED_CARD, card=replace(CARD, brand="")), [("card.brand", INVALID)]),
        (replace(APPROVED_CARD, card=replace(CARD, brand="b" * 33)), [("card.brand", INVALID)]),
        (
            replace(APPROVED_CARD, card=replace(CARD, entry_method=None)),
            [("card.entry_method", INVALID)],
        ),
        (
            replace(APPROVED_CARD, card=CardInput(brand="", last4="12345", entry_method=None)),
            [("card.brand", INVALID), ("card.entry_method", INVALID), ("card.last4", INVALID)],
        ),
        (replace(APPROVED_CASH, card=CARD), [("card", INVALID)]),
        (replace(DECLINED, tender=Tender.GIFT_CARD), [("card", INVALID)]),
        (replace(DECLINED, card=replace(CARD, last4="99999")), [("card.last4", INVALID)]),
        (replace(APPROVED_CARD, approved_amount=0), [("approved_amount", INVALID)]),
        (replace(APPROVED_CARD, approved_amount=-1), [("approved_amount", INVALID)]),
        (replace(APPROVED_CARD, approved_amount=MAX_AMOUNT + 1), [("approved_amount", INVALID)]),
        (replace(APPROVED_CARD, tip_amount=-1), [("tip_amount", INVALID)]),
        (replace(APPROVED_CARD, tip_amount=MAX_AMOUNT + 1), [("tip_amount", INVALID)]),
        (replace(APPROVED_CASH, cash_tendered=-1), [("cash_tendered", INVALID)]),
        (replace(APPROVED_CASH, change_given=-1), [("change_given", INVALID)]),
        (replace(APPROVED_CARD, cash_tendered=1000), [("cash_tendered", INVALID)]),
        (replace(APPROVED_CARD, change_given=5), [("cash_tendered", INVALID)]),
        (replace(DECLINED, approved_amount=100), [("approved_amount", INVALID)]),
        (replace(DECLINED, tip_amount=100), [("tip_amount", INVALID)]),
        (replace(DECLINED, outcome=Outcome.FAILED, cash_tendered=5), [("cash_tendered", INVALID)]),
        (replace(DECLINED, outcome=Outcome.CANCELED, change_given=5), [("cash_tendered", INVALID)]),
        (replace(APPROVED_CARD, auth_code="a" * 65), [("auth_code", INVALID)]),
        (replace(APPROVED_CARD, processor_reference="r" * 129), [("processor_reference", INVALID)]),
        (
            replace(APPROVED_CARD, processor_reference=PAN_16),
            [("processor_reference", CARD_NUMBER)],
        ),
        (replace(DECLINED, error_code="e" * 65), [("error_code", INVALID)]),
        (replace(DECLINED, error_code="05\n\x00"), [("error_code", INVALID)]),
        # CancelPayment
        (replace(CANCEL_PAYMENT, payment_id=""), [("payment_id", INVALID)]),
        (replace(CANCEL_PAYMENT, reason="r" * 501), [("reason", INVALID)]),
        (replace(CANCEL_PAYMENT, reason=f"card was {PAN_16}"), [("reason", CARD_NUMBER)]),
        # RefundPayment
        (replace(REFUND, amount=0), [("amount", INVALID)]),
        (replace(REFUND, amount=-100), [("amount", INVALID)]),
        (replace(REFUND, amount=MAX_AMOUNT + 1), [("amount", INVALID)]),
        (replace(REFUND, payment_id="x"), [("payment_id", INVALID)]),
        (replace(REFUND, reason="r" * 501), [("reason", INVALID)]),
        (replace(REFUND, processor_reference="p" * 129), [("processor_reference", INVALID)]),
        (replace(REFUND, processor_reference=PAN_19), [("processor_reference", CARD_NUMBER)]),
        # CancelSale
        (replace(CANCEL_SALE, sale_id=""), [("sale_id", INVALID)]),
        (replace(CANCEL_SALE, sale_id=SALE_ID + "0"), [("sale_id", INVALID)]),
        (replace(CANCEL_SALE, reason="r" * 501), [("reason", INVALID)]),
        (replace(CANCEL_SALE, reason="\x08"), [("reason", INVALID)]),
    ],
)
def test_every_bad_field_is_named(command: SaleCommand, expected: list[tuple[str, str]]) -> None:
    assert violations(command) == sorted(expected)


def test_unit_price_above_the_maximum_names_the_unit_price() -> None:
    command = replace(CREATE, line_items=(replace(ITEM, quantity=1, unit_price=MAX_AMOUNT + 1),))
    assert {field for field, _ in violations(command)} == {"line_items[0].unit_price"}


def test_violations_describe_what_is_wrong() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(replace(CREATE, line_items=(replace(ITEM, quantity=0),), channel=None))
    error = info.value
    descriptions = {v.field: v.description for v in error.violations}
    assert descriptions["line_items[0].quantity"] == f"must be between 1 and {MAX_QUANTITY}"
    assert descriptions["channel"] == "must be set to a known value"
    assert "line_items[0].quantity: must be between 1" in error.message
    assert "channel: must be set to a known value" in error.message


def test_reason_is_the_specific_one_when_every_violation_shares_it() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(replace(REQUEST, api_version="9.9"))
    assert info.value.reason == API_VERSION

    with pytest.raises(InvalidRequest) as info:
        validate(replace(CREATE, note=PAN_16, customer_id=PAN_13))
    assert info.value.reason == CARD_NUMBER

    with pytest.raises(InvalidRequest) as info:
        validate(replace(CREATE, currency_code="ABC"))
    assert info.value.reason == CURRENCY


def test_reason_is_generic_for_plain_or_mixed_violations() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(replace(CREATE, channel=None))
    assert info.value.reason == "INVALID_ARGUMENT"

    with pytest.raises(InvalidRequest) as info:
        validate(replace(REQUEST, api_version="9.9", currency_code="ABC"))
    assert info.value.reason == "INVALID_ARGUMENT"


# ---- callback URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://pos.example.com/payments/callback",
        "https://pos.example.com:8443/cb?sale=1&x=y#frag",
        "HTTPS://POS.EXAMPLE.COM/cb",
        "https://203.0.113.7/cb",
        "https://[2001:db8::1]/cb",
        "http://localhost/cb",
        "http://localhost:8080/cb",
        "http://LOCALHOST:8080/cb",
        "http://127.0.0.1:9000/payments",
        "http://[::1]:9000/payments",
        "https://localhost/cb",
        "https://" + "a" * 2035 + ".com/",  # exactly 2048 characters
    ],
)
def test_callback_url_accepted(url: str) -> None:
    assert len(url) <= 2048
    validate(replace(REQUEST, callback_url=url))


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "http://pos.example.com/cb",  # plain http to a real host
        "http://localhost.example.com/cb",
        "http://127.0.0.2/cb",
        "http://0.0.0.0/cb",
        "http://[::2]/cb",
        "ftp://pos.example.com/cb",
        "ws://localhost/cb",
        "javascript:alert(1)",
        "mailto:ops@example.com",
        "/payments/callback",
        "pos.example.com/cb",
        "https://",
        "https:///cb",
        "https://[::1/cb",  # unbalanced IPv6 bracket
        "https://user:secret@pos.example.com/cb",
        "https://user@pos.example.com/cb",
        "https://:secret@pos.example.com/cb",
        "http://user:secret@localhost/cb",
        "https://" + "a" * 2036 + ".com/",  # 2049 characters
        "https://pos.example.com/cb\n",
        "https://pos.example.com/c\x00b",
        f"https://pos.example.com/cb?pan={PAN_16}",
    ],
)
def test_callback_url_refused(url: str) -> None:
    [(field, _reason)] = violations(replace(REQUEST, callback_url=url))
    assert field == "callback_url"


def test_callback_url_with_a_card_number_is_refused_as_a_card_number() -> None:
    url = f"https://pos.example.com/cb?pan={PAN_16}"
    assert violations(replace(REQUEST, callback_url=url)) == [("callback_url", CARD_NUMBER)]


def test_callback_url_with_credentials_says_so() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(replace(REQUEST, callback_url="https://u:p@pos.example.com/cb"))
    (violation,) = info.value.violations
    assert "credentials" in violation.description


def test_plain_http_callback_asks_for_https() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(replace(REQUEST, callback_url="http://pos.example.com/cb"))
    (violation,) = info.value.violations
    assert "https" in violation.description


# ---- card numbers in free text ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        PAN_16,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        f"paid with {PAN_16}, thanks",
        "5500005555555559",  # Mastercard test number
        "378282246310005",  # American Express, 15 digits
        "3782 822463 10005",
        PAN_13,
        PAN_19,
        f"x{PAN_16}x",
        f"first 12 then {PAN_16}",
        "4111 1111 1111 1111 12/27",  # card number then expiry
        "4111111111111111-12",
        f"1234 {PAN_16}",  # card number after another group of digits
        f"{PAN_16} 999",  # ... or before one
    ],
)
def test_text_with_a_card_number_is_refused(text: str) -> None:
    assert violations(replace(CREATE, note=text)) == [("note", CARD_NUMBER)]


@pytest.mark.parametrize(
    "text",
    [
        _luhn_broken("411111111111111"),  # 16 digits, fails the Luhn check
        _luhn_broken("42222222222"),  # 12 digits, fails the Luhn check
        _luhn_complete("42222222222"),  # 12 digits: too short for a card number
        _luhn_broken("622222222222222222"),  # 19 digits, fails the Luhn check
        "4111 1111 1111 1112",
        "call 555-123-4567",
        "order 2024-06-01 #12345",
        "12345678901234567890123",  # a long identifier, no Luhn-valid card-length run
        "",
    ],
)
def test_text_with_a_digit_run_that_is_no_card_number_is_accepted(text: str) -> None:
    validate(replace(CREATE, note=text))


def test_refusal_never_echoes_the_card_number() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(replace(CREATE, note=f"card {PAN_16}"))
    assert PAN_16 not in str(info.value)
    assert PAN_16 not in info.value.violations[0].description


def test_helper_card_numbers_are_what_they_claim() -> None:
    # The fixtures above must be right for the tests to mean anything.
    assert len(PAN_13) == 13
    assert len(PAN_19) == 19
    assert _luhn_complete("411111111111111") == PAN_16
    assert _luhn_broken("411111111111111") != PAN_16


# ---- checks on request envelope fields -------------------------------------------------------


@pytest.mark.parametrize(
    "request_id", ["r", "req-1", "2ade04bb-4176-4249-a6f6-57611efcc403", "r" * 128]
)
def test_request_id_accepted(request_id: str) -> None:
    check_request_id(request_id)


@pytest.mark.parametrize("request_id", ["", "  ", "r" * 129, "req\x00", PAN_16])
def test_request_id_refused(request_id: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_request_id(request_id)
    assert [v.field for v in info.value.violations] == ["request_id"]


@pytest.mark.parametrize("sale_id", ["", "sale-1", "0b6f6c8e", SALE_ID + "x"])
def test_sale_id_must_be_a_uuid(sale_id: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_sale_id(sale_id)
    assert [v.field for v in info.value.violations] == ["sale_id"]


def test_sale_id_accepts_a_uuid() -> None:
    check_sale_id(SALE_ID)
    check_sale_id(SALE_ID.upper())


@pytest.mark.parametrize("version", [None, 1, 2, 10**9])
def test_expected_version_accepted(version: int | None) -> None:
    check_expected_version(version)


@pytest.mark.parametrize("version", [0, -1])
def test_expected_version_must_be_positive(version: int) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_expected_version(version)
    assert [v.field for v in info.value.violations] == ["expected_version"]
