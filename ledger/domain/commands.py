"""Commands on sales, and the checks every command must pass whatever the ledger's state.

A command that fails these checks raises InvalidRequest naming every bad field, with field
paths as the wire contract spells them. Checks that depend on state live in the aggregate.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from ledger.domain.errors import FieldViolation, InvalidRequest
from ledger.domain.money import MAX_AMOUNT, PPM, is_currency

SUPPORTED_API_VERSIONS = frozenset({"1.0"})
MAX_LINE_ITEMS = 500
MAX_QUANTITY = 1_000_000


class Channel(StrEnum):
    IN_STORE = "in_store"
    ONLINE = "online"
    MARKETPLACE = "marketplace"
    PHONE = "phone"
    OTHER = "other"


class Tender(StrEnum):
    CARD = "card"
    CASH = "cash"
    GIFT_CARD = "gift_card"
    CARD_ON_FILE = "card_on_file"
    OTHER = "other"


CARD_TENDERS = frozenset({Tender.CARD, Tender.CARD_ON_FILE})


class Outcome(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    CANCELED = "canceled"
    FAILED = "failed"


class EntryMethod(StrEnum):
    SWIPED = "swiped"
    DIPPED = "dipped"
    CONTACTLESS = "contactless"
    KEYED = "keyed"
    ON_FILE = "on_file"


@dataclass(frozen=True)
class LineItemInput:
    sku: str
    name: str
    quantity: int
    unit_price: int
    discount: int = 0
    tax_rate_ppm: int = 0


@dataclass(frozen=True)
class CardInput:
    brand: str
    last4: str
    entry_method: EntryMethod | None


@dataclass(frozen=True)
class CreateSale:
    location_id: str
    channel: Channel | None
    currency_code: str
    line_items: tuple[LineItemInput, ...] = ()
    customer_id: str = ""
    external_order_id: str = ""
    note: str = ""


@dataclass(frozen=True)
class AddLineItem:
    sale_id: str
    line_item: LineItemInput | None


@dataclass(frozen=True)
class RemoveLineItem:
    sale_id: str
    line_id: str


@dataclass(frozen=True)
class AttachCustomer:
    sale_id: str
    customer_id: str


@dataclass(frozen=True)
class RequestPayment:
    sale_id: str
    amount: int
    currency_code: str
    tender_types: tuple[Tender | None, ...]
    callback_url: str
    app_id: str
    api_version: str
    note: str = ""
    state: str = ""


@dataclass(frozen=True)
class RecordPaymentResult:
    sale_id: str
    payment_id: str
    outcome: Outcome | None
    tender: Tender | None = None
    card: CardInput | None = None
    auth_code: str = ""
    processor_reference: str = ""
    approved_amount: int | None = None
    tip_amount: int = 0
    cash_tendered: int = 0
    change_given: int = 0
    error_code: str = ""
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class CancelPayment:
    sale_id: str
    payment_id: str
    reason: str = ""


@dataclass(frozen=True)
class RefundPayment:
    sale_id: str
    payment_id: str
    amount: int
    reason: str = ""
    processor_reference: str = ""


@dataclass(frozen=True)
class CancelSale:
    sale_id: str
    reason: str = ""


SaleCommand = (
    CreateSale
    | AddLineItem
    | RemoveLineItem
    | AttachCustomer
    | RequestPayment
    | RecordPaymentResult
    | CancelPayment
    | RefundPayment
    | CancelSale
)


@dataclass
class _Checks:
    """Collects every violation of a request, so a client can fix them all at once."""

    violations: list[FieldViolation] = field(default_factory=list)

    def fail(self, path: str, description: str, reason: str = "INVALID_FIELD") -> None:
        self.violations.append(FieldViolation(path, description, reason))

    def text(self, path: str, value: str, *, max_len: int, required: bool = False) -> None:
        if required and not value.strip():
            self.fail(path, "is required")
        elif len(value) > max_len:
            self.fail(path, f"must be at most {max_len} characters")
        elif _CONTROL_CHARS.search(value):
            self.fail(path, "must not contain control characters")
        elif _looks_like_card_number(value):
            self.fail(
                path,
                "looks like a card number; card numbers are never accepted or stored",
                "CARD_NUMBER_REJECTED",
            )

    def uuid(self, path: str, value: str) -> None:
        if not value:
            self.fail(path, "is required")
            return
        try:
            uuid.UUID(value)
        except ValueError:
            self.fail(path, "must be a UUID")

    def amount(self, path: str, value: int, *, minimum: int) -> None:
        if not minimum <= value <= MAX_AMOUNT:
            self.fail(path, f"must be between {minimum} and {MAX_AMOUNT} minor units")

    def currency(self, path: str, value: str) -> None:
        if not value:
            self.fail(path, "is required")
        elif not is_currency(value):
            self.fail(path, f"{value[:8]!r} is not an ISO 4217 currency code", "UNKNOWN_CURRENCY")

    def enum(self, path: str, value: object) -> None:
        if value is None:
            self.fail(path, "must be set to a known value")

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidRequest(self.violations)


_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DIGIT_RUN = re.compile(r"(?:\d[ -]?){12,18}\d")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _looks_like_card_number(text: str) -> bool:
    """A run of 13 to 19 digits passing the Luhn check is treated as a card number."""
    for match in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            return True
    return False


def check_request_id(request_id: str) -> None:
    checks = _Checks()
    checks.text("request_id", request_id, max_len=128, required=True)
    checks.raise_if_any()


def check_sale_id(sale_id: str) -> None:
    checks = _Checks()
    checks.uuid("sale_id", sale_id)
    checks.raise_if_any()


def check_expected_version(expected_version: int | None) -> None:
    if expected_version is not None and expected_version < 1:
        raise InvalidRequest([FieldViolation("expected_version", "must be at least 1")])


def _check_line_item(checks: _Checks, path: str, item: LineItemInput) -> None:
    checks.text(f"{path}.sku", item.sku, max_len=64, required=True)
    checks.text(f"{path}.name", item.name, max_len=200, required=True)
    if not 1 <= item.quantity <= MAX_QUANTITY:
        checks.fail(f"{path}.quantity", f"must be between 1 and {MAX_QUANTITY}")
    checks.amount(f"{path}.unit_price", item.unit_price, minimum=0)
    if not 0 <= item.tax_rate_ppm <= PPM:
        checks.fail(f"{path}.tax_rate_ppm", f"must be between 0 and {PPM} (100%)")
    if item.quantity < 1 or item.unit_price < 0:
        return  # the line amount is meaningless; the fields above already say why
    gross = item.quantity * item.unit_price
    if gross > MAX_AMOUNT:
        checks.fail(f"{path}.unit_price", f"quantity x unit_price must be at most {MAX_AMOUNT}")
    elif not 0 <= item.discount <= gross:
        checks.fail(f"{path}.discount", "must be between 0 and quantity x unit_price")


def _check_callback_url(checks: _Checks, url: str) -> None:
    if not url:
        checks.fail("callback_url", "is required")
        return
    if len(url) > 2048:
        checks.fail("callback_url", "must be at most 2048 characters")
        return
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        checks.fail("callback_url", "is not a valid URL")
        return
    local = host in {"localhost", "127.0.0.1", "::1"}
    if not host:
        checks.fail("callback_url", "must be an absolute URL with a host")
    elif parts.scheme == "https" or (parts.scheme == "http" and local):
        if parts.username or parts.password:
            checks.fail("callback_url", "must not carry credentials")
    else:
        checks.fail("callback_url", "must use https (http is allowed only for localhost)")


def _check_card(checks: _Checks, card: CardInput) -> None:
    checks.text("card.brand", card.brand, max_len=32, required=True)
    if not (len(card.last4) == 4 and card.last4.isascii() and card.last4.isdigit()):
        checks.fail("card.last4", "must be exactly 4 digits")
    checks.enum("card.entry_method", card.entry_method)


def validate(command: SaleCommand) -> None:
    """Raises InvalidRequest naming every field of the command that can never be right."""
    checks = _Checks()
    match command:
        case CreateSale():
            checks.text("location_id", command.location_id, max_len=64, required=True)
            checks.enum("channel", command.channel)
            checks.currency("currency_code", command.currency_code)
            if len(command.line_items) > MAX_LINE_ITEMS:
                checks.fail("line_items", f"must have at most {MAX_LINE_ITEMS} items")
            for i, item in enumerate(command.line_items):
                _check_line_item(checks, f"line_items[{i}]", item)
            checks.text("customer_id", command.customer_id, max_len=64)
            checks.text("external_order_id", command.external_order_id, max_len=128)
            checks.text("note", command.note, max_len=1000)
        case AddLineItem():
            checks.uuid("sale_id", command.sale_id)
            if command.line_item is None:
                checks.fail("line_item", "is required")
            else:
                _check_line_item(checks, "line_item", command.line_item)
        case RemoveLineItem():
            checks.uuid("sale_id", command.sale_id)
            checks.uuid("line_id", command.line_id)
        case AttachCustomer():
            checks.uuid("sale_id", command.sale_id)
            checks.text("customer_id", command.customer_id, max_len=64, required=True)
        case RequestPayment():
            checks.uuid("sale_id", command.sale_id)
            checks.amount("amount", command.amount, minimum=1)
            checks.currency("currency_code", command.currency_code)
            if not command.tender_types:
                checks.fail("tender_types", "must name at least one tender type")
            for i, tender in enumerate(command.tender_types):
                checks.enum(f"tender_types[{i}]", tender)
            if len(set(command.tender_types)) != len(command.tender_types):
                checks.fail("tender_types", "must not repeat a tender type")
            _check_callback_url(checks, command.callback_url)
            checks.text("app_id", command.app_id, max_len=128, required=True)
            if command.api_version not in SUPPORTED_API_VERSIONS:
                supported = ", ".join(sorted(SUPPORTED_API_VERSIONS))
                checks.fail(
                    "api_version",
                    f"{command.api_version[:16]!r} is not supported; supported: {supported}",
                    "UNSUPPORTED_API_VERSION",
                )
            checks.text("note", command.note, max_len=1000)
            checks.text("state", command.state, max_len=4096)
        case RecordPaymentResult():
            _check_payment_result(checks, command)
        case CancelPayment():
            checks.uuid("sale_id", command.sale_id)
            checks.uuid("payment_id", command.payment_id)
            checks.text("reason", command.reason, max_len=500)
        case RefundPayment():
            checks.uuid("sale_id", command.sale_id)
            checks.uuid("payment_id", command.payment_id)
            checks.amount("amount", command.amount, minimum=1)
            checks.text("reason", command.reason, max_len=500)
            checks.text("processor_reference", command.processor_reference, max_len=128)
        case CancelSale():
            checks.uuid("sale_id", command.sale_id)
            checks.text("reason", command.reason, max_len=500)
    checks.raise_if_any()


def _check_payment_result(checks: _Checks, command: RecordPaymentResult) -> None:
    checks.uuid("sale_id", command.sale_id)
    checks.uuid("payment_id", command.payment_id)
    checks.enum("outcome", command.outcome)
    checks.text("auth_code", command.auth_code, max_len=64)
    checks.text("processor_reference", command.processor_reference, max_len=128)
    checks.text("error_code", command.error_code, max_len=64)
    if command.card is not None:
        _check_card(checks, command.card)
        if command.tender is not None and command.tender not in CARD_TENDERS:
            checks.fail("card", "is only for card and card-on-file tenders")
    for name in ("tip_amount", "cash_tendered", "change_given"):
        checks.amount(name, getattr(command, name), minimum=0)
    if command.outcome is Outcome.APPROVED:
        checks.enum("tender", command.tender)
        if command.tender in CARD_TENDERS and command.card is None:
            checks.fail("card", "is required when a card tender is approved")
        if command.approved_amount is not None:
            checks.amount("approved_amount", command.approved_amount, minimum=1)
        if command.tender is not Tender.CASH and (command.cash_tendered or command.change_given):
            checks.fail("cash_tendered", "is only for cash tenders")
    elif command.outcome is not None:
        if command.approved_amount is not None:
            checks.fail("approved_amount", "is only for approved payments")
        if command.tip_amount:
            checks.fail("tip_amount", "is only for approved payments")
        if command.cash_tendered or command.change_given:
            checks.fail("cash_tendered", "is only for approved payments")
