"""Commands on sales, and the checks every command must pass whatever the ledger's state.

A command that fails these checks raises InvalidRequest naming every bad field, with field
paths as the wire contract spells them. Checks that depend on state live in the aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from ledger.domain.errors import FieldViolation, InvalidRequest
from ledger.domain.money import MAX_AMOUNT, PPM
from ledger.domain.validation import Checks

SUPPORTED_API_VERSIONS = frozenset({"1.0"})
MAX_LINE_ITEMS = 500
MAX_QUANTITY = 1_000_000


# Field metadata of a command field added after its command's records were first stored:
# left out of the request fingerprint while it holds its default, so a retry of a request
# recorded before the field existed still matches its record.
ADDED_LATER = {"fingerprint": "unless_default"}


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
    unit_price: int | None  # None: the catalog product with this sku gives the price
    discount: int = 0
    tax_rate_ppm: int | None = None  # None: the catalog's rate, or no tax for open items
    product_id: str = ""  # set by the ledger when the sku names a catalog product


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
    # None: the configured default (POSLEDGER_PAYMENT_EXPIRES_AFTER).
    expires_after: timedelta | None = field(default=None, metadata=ADDED_LATER)


@dataclass(frozen=True)
class ExpirePayment:
    """Ends a payment still pending at its deadline (the ledger's own command)."""

    sale_id: str
    payment_id: str


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
class RestockItem:
    line_id: str
    quantity: int


@dataclass(frozen=True)
class RefundPayment:
    sale_id: str
    payment_id: str
    amount: int
    reason: str = ""
    processor_reference: str = ""
    restock_items: tuple[RestockItem, ...] = ()


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
    | ExpirePayment
    | RefundPayment
    | CancelSale
)


MIN_EXPIRES_AFTER = timedelta(seconds=1)


def check_expires_after(expires_after: timedelta | None, maximum: timedelta) -> None:
    """A payment's deadline, when the request gives one, lies within the configured bounds."""
    if expires_after is not None and not MIN_EXPIRES_AFTER <= expires_after <= maximum:
        raise InvalidRequest(
            [
                FieldViolation(
                    "expires_after",
                    f"must be from {MIN_EXPIRES_AFTER.total_seconds():g} s to "
                    f"{maximum.total_seconds():g} s",
                )
            ]
        )


def check_request_id(request_id: str) -> None:
    checks = Checks()
    checks.text("request_id", request_id, max_len=128, required=True)
    checks.raise_if_any()


def check_sale_id(sale_id: str) -> None:
    checks = Checks()
    checks.uuid("sale_id", sale_id)
    checks.raise_if_any()


def check_expected_version(expected_version: int | None) -> None:
    if expected_version is not None and expected_version < 1:
        raise InvalidRequest([FieldViolation("expected_version", "must be at least 1")])


def _check_line_item(checks: Checks, path: str, item: LineItemInput) -> None:
    checks.text(f"{path}.sku", item.sku, max_len=64, required=True)
    # An empty name takes the catalog product's name (or, for an open item, the sku).
    checks.text(f"{path}.name", item.name, max_len=200)
    if item.name and not item.name.strip():
        checks.fail(f"{path}.name", "must not be blank")
    if not 1 <= item.quantity <= MAX_QUANTITY:
        checks.fail(f"{path}.quantity", f"must be between 1 and {MAX_QUANTITY}")
    if item.unit_price is not None:
        checks.amount(f"{path}.unit_price", item.unit_price, minimum=0)
    if item.tax_rate_ppm is not None and not 0 <= item.tax_rate_ppm <= PPM:
        checks.fail(f"{path}.tax_rate_ppm", f"must be between 0 and {PPM} (100%)")
    if item.quantity < 1 or item.unit_price is None or item.unit_price < 0:
        if item.discount < 0:
            checks.fail(f"{path}.discount", "must not be negative")
        return  # the line amount is unknown here or meaningless
    gross = item.quantity * item.unit_price
    if gross > MAX_AMOUNT:
        checks.fail(f"{path}.unit_price", f"quantity x unit_price must be at most {MAX_AMOUNT}")
    elif not 0 <= item.discount <= gross:
        checks.fail(f"{path}.discount", "must be between 0 and quantity x unit_price")


def check_delivery_url(checks: Checks, url: str, path: str = "callback_url") -> None:
    """A URL the ledger will POST to: https (http only for localhost), no credentials."""
    before = len(checks.violations)
    # Required, length, control characters (urlsplit drops some silently) and card numbers.
    checks.text(path, url, max_len=2048, required=True)
    if len(checks.violations) > before:
        return
    if any(ch.isspace() for ch in url):
        checks.fail(path, "must not contain whitespace")
        return
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        checks.fail(path, "is not a valid URL")
        return
    local = host in {"localhost", "127.0.0.1", "::1"}
    if not host:
        checks.fail(path, "must be an absolute URL with a host")
    elif parts.scheme == "https" or (parts.scheme == "http" and local):
        if parts.username or parts.password:
            checks.fail(path, "must not carry credentials")
    else:
        checks.fail(path, "must use https (http is allowed only for localhost)")


def _check_card(checks: Checks, card: CardInput, prefix: str = "") -> None:
    checks.text(f"{prefix}card.brand", card.brand, max_len=32, required=True)
    if not (len(card.last4) == 4 and card.last4.isascii() and card.last4.isdigit()):
        checks.fail(f"{prefix}card.last4", "must be exactly 4 digits")
    checks.enum(f"{prefix}card.entry_method", card.entry_method)


def validate(command: SaleCommand) -> None:
    """Raises InvalidRequest naming every field of the command that can never be right."""
    checks = Checks()
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
            check_delivery_url(checks, command.callback_url)
            checks.text("app_id", command.app_id, max_len=128, required=True)
            if command.api_version not in SUPPORTED_API_VERSIONS:
                supported = ", ".join(sorted(SUPPORTED_API_VERSIONS))
                checks.fail(
                    "api_version",
                    f"this version is not supported; supported: {supported}",
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
        case ExpirePayment():
            checks.uuid("sale_id", command.sale_id)
            checks.uuid("payment_id", command.payment_id)
        case RefundPayment():
            checks.uuid("sale_id", command.sale_id)
            checks.uuid("payment_id", command.payment_id)
            checks.amount("amount", command.amount, minimum=1)
            checks.text("reason", command.reason, max_len=500)
            checks.text("processor_reference", command.processor_reference, max_len=128)
            for i, restock in enumerate(command.restock_items):
                checks.uuid(f"restock_items[{i}].line_id", restock.line_id)
                if not 1 <= restock.quantity <= MAX_QUANTITY:
                    checks.fail(
                        f"restock_items[{i}].quantity", f"must be between 1 and {MAX_QUANTITY}"
                    )
            restocked_lines = {r.line_id for r in command.restock_items}
            if len(restocked_lines) != len(command.restock_items):
                checks.fail("restock_items", "must not repeat a line")
        case CancelSale():
            checks.uuid("sale_id", command.sale_id)
            checks.text("reason", command.reason, max_len=500)
    checks.raise_if_any()


def _check_payment_result(checks: Checks, command: RecordPaymentResult) -> None:
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


@dataclass(frozen=True)
class ImportedPayment:
    tender: Tender | None
    amount: int
    card: CardInput | None = None
    auth_code: str = ""
    processor_reference: str = ""


@dataclass(frozen=True)
class ImportOrder:
    """An order from another channel: finished and fully paid, or (`open`) still to pay."""

    channel: str
    external_order_id: str
    sales_channel: Channel | None
    location_id: str
    currency_code: str
    line_items: tuple[LineItemInput, ...]
    payments: tuple[ImportedPayment, ...]
    customer_id: str = ""
    placed_at: datetime | None = None
    note: str = ""
    open: bool = field(default=False, metadata=ADDED_LATER)


def validate_import(order: ImportOrder) -> None:
    """Raises InvalidRequest naming every bad field of one imported order."""
    checks = Checks()
    checks.slug("channel", order.channel)
    checks.text("external_order_id", order.external_order_id, max_len=128, required=True)
    checks.enum("sales_channel", order.sales_channel)
    checks.text("location_id", order.location_id, max_len=64, required=True)
    checks.currency("currency_code", order.currency_code)
    if not order.line_items:
        checks.fail("line_items", "must have at least one item")
    if len(order.line_items) > MAX_LINE_ITEMS:
        checks.fail("line_items", f"must have at most {MAX_LINE_ITEMS} items")
    for i, item in enumerate(order.line_items):
        _check_line_item(checks, f"line_items[{i}]", item)
    if order.open and order.payments:
        checks.fail("payments", "an open order has none; request them with RequestPayment")
    if not order.open and not order.payments:
        checks.fail("payments", "must have at least one settled payment")
    for i, payment in enumerate(order.payments):
        checks.enum(f"payments[{i}].tender", payment.tender)
        checks.amount(f"payments[{i}].amount", payment.amount, minimum=1)
        if payment.card is not None:
            _check_card(checks, payment.card, prefix=f"payments[{i}].")
            if payment.tender is not None and payment.tender not in CARD_TENDERS:
                checks.fail(f"payments[{i}].card", "is only for card and card-on-file tenders")
        checks.text(f"payments[{i}].auth_code", payment.auth_code, max_len=64)
        checks.text(f"payments[{i}].processor_reference", payment.processor_reference, max_len=128)
    checks.text("customer_id", order.customer_id, max_len=64)
    checks.text("note", order.note, max_len=1000)
    checks.raise_if_any()
