"""What happened, as merchant-scoped changes that other systems may be given.

A change is derived from one event and the state of its aggregate just after that event,
so it carries everything a receiver needs to act without calling back (a stock change
names the product's sku and the resulting levels; a customer change carries consent).
This module is pure: callers give it the event and the aggregate as of that event.
Raw events never leave the ledger; only these payloads do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ledger.domain.customer import Customer
from ledger.domain.inventory import StockItem
from ledger.domain.product import Product
from ledger.domain.sale import Payment, PaymentStatus, Sale


class Kind(StrEnum):
    PAYMENT_RESOLVED = "payment.resolved"
    ORDER_COMPLETED = "order.completed"
    ORDER_REFUNDED = "order.refunded"
    ORDER_CANCELED = "order.canceled"
    STOCK_CHANGED = "stock.changed"
    PRODUCT_CHANGED = "product.changed"
    CUSTOMER_CREATED = "customer.created"
    CUSTOMER_CHANGED = "customer.changed"
    CUSTOMER_CONSENT_CHANGED = "customer.consent_changed"


# Kinds a webhook subscription may name (a payment's result goes to its own callback_url).
SUBSCRIBABLE = frozenset(Kind) - {Kind.PAYMENT_RESOLVED}


@dataclass(frozen=True)
class Change:
    """One change at a position of the log; `index` orders changes of the same event."""

    kind: Kind
    merchant_id: str
    position: int
    index: int
    occurred_at: datetime
    subject_id: str  # the payment, sale, stock item, product or customer it is about
    data: dict[str, Any] = field(default_factory=dict)
    # The payment's callback_url, for payment.resolved only: where the result is owed.
    callback_url: str = ""
    sale_id: str = ""  # callbacks of one sale are delivered in order

    @property
    def id(self) -> str:
        return f"{self.position}.{self.index}"

    def body(self) -> dict[str, Any]:
        """The JSON document sent to receivers and streamed by the feed."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "merchant_id": self.merchant_id,
            "position": self.position,
            "occurred_at": self.occurred_at.isoformat(),
            "data": self.data,
        }


SkuOf = Callable[[str], str]  # product id -> sku ("" when unknown)


def changes_of(position: int, event: Any, after: Any, sku_of: SkuOf) -> list[Change]:
    """The changes one event makes, given its aggregate as of that event."""
    if isinstance(after, Sale):
        return _sale_changes(position, event, after)
    if isinstance(after, StockItem):
        return _stock_changes(position, event, after, sku_of)
    if isinstance(after, Product):
        return [_change(Kind.PRODUCT_CHANGED, position, event, after, _product(event, after))]
    if isinstance(after, Customer):
        kind = _CUSTOMER_KINDS.get(type(event))
        if kind is None:
            return []
        return [_change(kind, position, event, after, _customer(after))]
    return []


def _change(
    kind: Kind, position: int, event: Any, after: Any, data: dict[str, Any], index: int = 0
) -> Change:
    return Change(
        kind=kind,
        merchant_id=after.merchant_id,
        position=position,
        index=index,
        occurred_at=event.timestamp,
        subject_id=str(after.id),
        data=data,
    )


# ---- sales ---------------------------------------------------------------------------------


def _sale_changes(position: int, event: Any, sale: Sale) -> list[Change]:
    match event:
        case (
            Sale.PaymentApproved()
            | Sale.PaymentNotApproved()
            | Sale.PaymentCanceled()
            | Sale.PaymentExpired()
            | Sale.PaymentApprovedAfterCancel()
        ):
            # An expiry is outcome `expired`. An approval after a cancel or an expiry says
            # so (`approved_after_cancel`, with what is owed back): the app must refund or
            # otherwise settle it.
            payment = sale.payments[event.payment_id]
            return [_payment_change(position, event, sale, payment, payment.status.value, {})]
        case Sale.PaymentRefunded():
            payment = sale.payments[event.payment_id]
            refund = {
                "refund_id": event.refund_id,
                "amount": event.amount,
                "reason": event.reason,
                "processor_reference": event.processor_reference,
            }
            return [
                _payment_change(position, event, sale, payment, "refunded", {"refund": refund}),
                _change(
                    Kind.ORDER_REFUNDED,
                    position,
                    event,
                    sale,
                    _order(sale) | {"refund": refund},
                    index=1,
                ),
            ]
        case Sale.Completed():
            return [_change(Kind.ORDER_COMPLETED, position, event, sale, _order(sale))]
        case Sale.Canceled():
            return [_change(Kind.ORDER_CANCELED, position, event, sale, _order(sale))]
    return []


def _payment_change(
    position: int, event: Any, sale: Sale, payment: Payment, outcome: str, extra: dict[str, Any]
) -> Change:
    data = {
        "payment_id": payment.id,
        "sale_id": str(sale.id),
        "outcome": outcome,
        "amount": payment.amount,
        "approved_amount": payment.approved_amount,
        "tip_amount": payment.tip_amount,
        "refunded_amount": payment.refunded_amount,
        "owed_amount": payment.owed_amount,
        "currency_code": payment.currency_code,
        "tender": payment.tender,
        "card": payment.card,  # brand, last 4 and entry method only
        "auth_code": payment.auth_code,
        "processor_reference": payment.processor_reference,
        "error_code": payment.error_code,
        "cancel_reason": payment.cancel_reason,
        "state": payment.state,
        "app_id": payment.app_id,
    } | extra
    change = _change(Kind.PAYMENT_RESOLVED, position, event, sale, data)
    # The change is about the payment; its callback is owed to the URL the request gave.
    return Change(
        kind=change.kind,
        merchant_id=change.merchant_id,
        position=position,
        index=0,
        occurred_at=change.occurred_at,
        subject_id=payment.id,
        data=data,
        callback_url=payment.callback_url,
        sale_id=str(sale.id),
    )


def _order(sale: Sale) -> dict[str, Any]:
    return {
        "sale_id": str(sale.id),
        "status": sale.status.value,
        "channel": sale.channel.value,
        "location_id": sale.location_id,
        "customer_id": sale.customer_id,
        "external_order_id": sale.external_order_id,
        "currency_code": sale.currency_code,
        "subtotal": sale.subtotal,
        "discount_total": sale.discount_total,
        "tax_total": sale.tax_total,
        "total": sale.total,
        "paid_total": sale.paid_total,
        "refunded_total": sale.refunded_total,
        "tip_total": sale.tip_total,
        "line_items": [
            {
                "line_id": line.line_id,
                "product_id": line.product_id,
                "sku": line.sku,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "total_amount": line.total_amount,
            }
            for line in sale.line_items
        ],
        "payments": [
            {"payment_id": p.id, "status": p.status.value, "approved_amount": p.approved_amount}
            for p in sale.payments.values()
            if p.status is not PaymentStatus.PENDING
        ],
    }


# ---- stock, products, customers ------------------------------------------------------------

_STOCK_REASONS: dict[type, str] = {
    StockItem.Received: "received",
    StockItem.Adjusted: "adjusted",
    StockItem.Counted: "counted",
    StockItem.TransferredOut: "transferred_out",
    StockItem.TransferredIn: "transferred_in",
    StockItem.Sold: "sold",
    StockItem.Returned: "returned",
    StockItem.Reserved: "reserved",
    StockItem.ReservationReleased: "reservation_released",
    StockItem.SoldFromReservation: "sold",
}
# The events of each kind of change: the outbox reads their topics (ledger/deliveries/outbox.py).
STOCK_EVENTS: tuple[type, ...] = tuple(_STOCK_REASONS)


def _stock_changes(position: int, event: Any, item: StockItem, sku_of: SkuOf) -> list[Change]:
    reason = _STOCK_REASONS.get(type(event))
    if reason is None:
        return []  # opening a stock item changes no level
    data = {
        "product_id": item.product_id,
        "sku": sku_of(item.product_id),
        "location_id": item.location_id,
        "reason": reason,
        "on_hand": item.on_hand,
        "reserved": item.reserved,  # promised to open sales
        "available": item.available,  # what can still be sold: on-hand less reserved
    }
    return [_change(Kind.STOCK_CHANGED, position, event, item, data)]


_PRODUCT_CHANGES: dict[type, str] = {
    Product.Created: "created",
    Product.Discontinued: "discontinued",
    Product.Reactivated: "reactivated",
}
_CUSTOMER_KINDS: dict[type, Kind] = {
    Customer.Created: Kind.CUSTOMER_CREATED,
    Customer.Updated: Kind.CUSTOMER_CHANGED,
    Customer.ConsentChanged: Kind.CUSTOMER_CONSENT_CHANGED,
}


def _product(event: Any, product: Product) -> dict[str, Any]:
    return {
        "product_id": str(product.id),
        "change": _PRODUCT_CHANGES.get(type(event), "updated"),
        "sku": product.sku,
        "name": product.name,
        "price": product.price,
        "currency_code": product.currency_code,
        "tax_rate_ppm": product.tax_rate_ppm,
        "barcode": product.barcode,
        "category": product.category,
        "discontinued": product.is_discontinued,
    }


def _customer(customer: Customer) -> dict[str, Any]:
    changed_at = customer.consent_changed_at
    return {
        "customer_id": str(customer.id),
        "name": customer.name,
        "email": customer.email,
        "phone": customer.phone,
        "tags": list(customer.tags),
        "external_ids": [e.to_event() for e in customer.external_ids],
        "marketing_consent": {
            "granted": customer.marketing_consent,
            "channel": customer.consent_channel,
            "changed_at": changed_at.isoformat() if changed_at else None,
        },
    }
