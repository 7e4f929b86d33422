"""The Sale aggregate: line items, totals, payments and refunds of one sale.

Command methods check the rules against the current state, then trigger events; the
`when` handlers only apply events, so replaying history never re-runs a rule (rules may
change; recorded facts may not). Events carry plain JSON-friendly values.

Stored event names are explicit (`TOPIC`) and independent of module paths, so code can be
moved without breaking old events. Bump an event's `class_version` and add an upcaster when
its fields change.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import singledispatchmethod
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.domain.commands import (
    MAX_LINE_ITEMS,
    CardInput,
    Channel,
    ImportOrder,
    LineItemInput,
    Outcome,
    RecordPaymentResult,
    RestockItem,
    Tender,
)
from ledger.domain.copying import CheapCopy
from ledger.domain.errors import NotFound, RuleViolated
from ledger.domain.handlers import apply_when
from ledger.domain.money import MAX_AMOUNT, line_tax


class SaleStatus(StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    CANCELED = "canceled"
    REFUNDED = "refunded"


class PaymentStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    CANCELED = "canceled"
    FAILED = "failed"
    # Approved after it was canceled: the money was taken, and is owed back until refunded.
    APPROVED_AFTER_CANCEL = "approved_after_cancel"
    # Still pending at its deadline: the ledger ended it (an approval after is late).
    EXPIRED = "expired"


@dataclass(frozen=True)
class LineItem:
    line_id: str
    sku: str
    name: str
    quantity: int
    unit_price: int
    discount: int
    tax_rate_ppm: int
    product_id: str = ""  # the catalog product, or "" for an open item

    @property
    def gross_amount(self) -> int:
        return self.quantity * self.unit_price

    @property
    def tax_amount(self) -> int:
        return line_tax(self.gross_amount - self.discount, self.tax_rate_ppm)

    @property
    def total_amount(self) -> int:
        return self.gross_amount - self.discount + self.tax_amount

    @classmethod
    def new(cls, item: LineItemInput) -> LineItem:
        if item.unit_price is None:
            raise RuleViolated(
                f"sku {item.sku!r} is not in the catalog, so the line needs a unit_price",
                reason="UNKNOWN_SKU",
            )
        return cls(
            line_id=str(uuid.uuid4()),
            sku=item.sku,
            name=item.name,
            quantity=item.quantity,
            unit_price=item.unit_price,
            discount=item.discount,
            tax_rate_ppm=item.tax_rate_ppm or 0,
            product_id=item.product_id,
        )

    def to_event(self) -> dict[str, Any]:
        return dict(vars(self))  # = asdict(self): every field is a plain value

    def __deepcopy__(self, memo: dict[int, Any]) -> LineItem:
        return self  # immutable through and through: a copy would only cost time


@dataclass
class Payment:
    id: str
    amount: int
    currency_code: str
    tender_types: list[str]
    callback_url: str
    app_id: str
    api_version: str
    note: str
    state: str
    requested_at: datetime
    status: PaymentStatus = PaymentStatus.PENDING
    approved_amount: int = 0
    tip_amount: int = 0
    tender: str = ""
    card: dict[str, str] | None = None
    auth_code: str = ""
    processor_reference: str = ""
    cash_tendered: int = 0
    change_given: int = 0
    error_code: str = ""
    occurred_at: datetime | None = None
    resolved_at: datetime | None = None
    refunded_amount: int = 0
    cancel_reason: str = ""
    expires_at: datetime | None = None  # None: requested before payments had deadlines

    def is_due(self, now: datetime) -> bool:
        """Whether the payment is pending past its deadline."""
        return (
            self.status is PaymentStatus.PENDING
            and self.expires_at is not None
            and now >= self.expires_at
        )

    @property
    def is_late(self) -> bool:
        return self.status is PaymentStatus.APPROVED_AFTER_CANCEL

    @property
    def refundable(self) -> int:
        if self.is_late:  # everything taken goes back, the tip included
            return self.approved_amount + self.tip_amount - self.refunded_amount
        return self.approved_amount - self.refunded_amount

    @property
    def owed_amount(self) -> int:
        """What a late approval took that is not refunded yet: owed to the customer."""
        return self.refundable if self.is_late else 0

    def __deepcopy__(self, memo: dict[int, Any]) -> Payment:
        # Commands copy cached sales; every field is immutable but these two containers.
        card = None if self.card is None else dict(self.card)
        return replace(self, tender_types=list(self.tender_types), card=card)


@dataclass(frozen=True)
class Refund:
    id: str
    payment_id: str
    amount: int
    reason: str
    processor_reference: str
    refunded_at: datetime
    restock_items: tuple[dict[str, Any], ...] = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> Refund:
        return self  # never changed once made (its restock lines are read-only)


def _card_to_event(card: CardInput | None) -> dict[str, str] | None:
    if card is None:
        return None
    assert card.entry_method is not None
    return {"brand": card.brand, "last4": card.last4, "entry_method": card.entry_method.value}


class Sale(CheapCopy, Aggregate):
    TOPIC = "posledger.Sale"

    class Event(Aggregate.Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Sale)
            apply_when(aggregate, self)

    class Created(Aggregate.Created):
        TOPIC = "posledger.SaleCreated"
        merchant_id: str
        location_id: str
        channel: str
        currency_code: str
        line_items: list[dict[str, Any]]
        customer_id: str
        external_order_id: str
        note: str

    class LineItemAdded(Event):
        TOPIC = "posledger.SaleLineItemAdded"
        line_item: dict[str, Any]

    class LineItemRemoved(Event):
        TOPIC = "posledger.SaleLineItemRemoved"
        line_id: str

    class CustomerAttached(Event):
        TOPIC = "posledger.SaleCustomerAttached"
        customer_id: str

    class PaymentRequested(Event):
        TOPIC = "posledger.PaymentRequested"
        payment_id: str
        amount: int
        tender_types: list[str]
        callback_url: str
        app_id: str
        api_version: str
        note: str
        state: str
        expires_at: datetime | None  # from version 2; None for payments requested before

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["expires_at"] = None  # requested before payments had deadlines

    class PaymentExpired(Event):
        """A pending payment reached its deadline with no outcome: the ledger ended it."""

        TOPIC = "posledger.PaymentExpired"
        payment_id: str

    class PaymentApproved(Event):
        TOPIC = "posledger.PaymentApproved"
        payment_id: str
        approved_amount: int
        tip_amount: int
        tender: str
        card: dict[str, str] | None
        auth_code: str
        processor_reference: str
        cash_tendered: int
        change_given: int
        occurred_at: datetime | None

    class PaymentApprovedAfterCancel(Event):
        """An approval reported after the payment was canceled: recorded, never refused,
        since the money was taken; it does not pay the sale and is owed back."""

        TOPIC = "posledger.PaymentApprovedAfterCancel"
        payment_id: str
        approved_amount: int
        tip_amount: int
        tender: str
        card: dict[str, str] | None
        auth_code: str
        processor_reference: str
        cash_tendered: int
        change_given: int
        occurred_at: datetime | None

    class PaymentNotApproved(Event):
        """A declined, failed or canceled outcome reported by the payment app."""

        TOPIC = "posledger.PaymentNotApproved"
        payment_id: str
        outcome: str
        tender: str
        card: dict[str, str] | None
        processor_reference: str
        error_code: str
        occurred_at: datetime | None

    class PaymentCanceled(Event):
        """The merchant gave up on a pending payment."""

        TOPIC = "posledger.PaymentCanceled"
        payment_id: str
        reason: str

    class PaymentRefunded(Event):
        TOPIC = "posledger.PaymentRefunded"
        refund_id: str
        payment_id: str
        amount: int
        reason: str
        processor_reference: str
        # Units back in stock: [{"line_id", "product_id", "quantity"}].
        restock_items: list[dict[str, Any]]

    class Imported(Event):
        """A finished order from another channel, with its settled payments."""

        TOPIC = "posledger.SaleImported"
        channel: str
        fingerprint: str
        placed_at: datetime | None
        # [{"payment_id", "tender", "amount", "card", "auth_code", "processor_reference"}]
        payments: list[dict[str, Any]]
        open: bool  # from version 2: an order still to pay, which holds its stock

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["open"] = False  # imported before open orders existed: a finished order

    class Oversold(Event):
        """An in-store sale took units its location did not have available (flagged)."""

        TOPIC = "posledger.SaleOversold"
        # [{"line_id", "product_id", "quantity"}]: units short, per line.
        lines: list[dict[str, Any]]

    class Completed(Event):
        TOPIC = "posledger.SaleCompleted"

    class Canceled(Event):
        TOPIC = "posledger.SaleCanceled"
        reason: str

    # ---- state ---------------------------------------------------------------------------

    def __init__(
        self,
        merchant_id: str,
        location_id: str,
        channel: str,
        currency_code: str,
        line_items: list[dict[str, Any]],
        customer_id: str,
        external_order_id: str,
        note: str,
    ) -> None:
        self.merchant_id = merchant_id
        self.location_id = location_id
        self.channel = Channel(channel)
        self.currency_code = currency_code
        self.line_items: list[LineItem] = [LineItem(**item) for item in line_items]
        self.customer_id = customer_id
        self.external_order_id = external_order_id
        self.note = note
        self.payments: dict[str, Payment] = {}
        self.refunds: list[Refund] = []
        self.is_completed = False
        self.is_canceled = False
        self.completed_at: datetime | None = None
        self.canceled_at: datetime | None = None
        self.cancel_reason = ""
        self.import_channel = ""
        self.import_fingerprint = ""
        self.placed_at: datetime | None = None
        self.oversold: dict[str, int] = {}  # units short per line id (in-store only)
        self.import_open = False  # an open order from another channel

    # Totals are derived from line items and payments, never stored separately.
    @property
    def subtotal(self) -> int:
        return sum(item.gross_amount for item in self.line_items)

    @property
    def discount_total(self) -> int:
        return sum(item.discount for item in self.line_items)

    @property
    def tax_total(self) -> int:
        return sum(item.tax_amount for item in self.line_items)

    @property
    def total(self) -> int:
        return sum(item.total_amount for item in self.line_items)

    @property
    def paid_total(self) -> int:
        return sum(p.approved_amount for p in self._approved())

    @property
    def tip_total(self) -> int:
        return sum(p.tip_amount for p in self._approved())

    @property
    def refunded_total(self) -> int:
        """Refunds of the payments that paid the sale (not of late approvals)."""
        return sum(r.amount for r in self.refunds if not self.payments[r.payment_id].is_late)

    @property
    def owed_total(self) -> int:
        """Taken by approvals that came after their payment was canceled, not yet refunded."""
        return sum(p.owed_amount for p in self.payments.values())

    def _approved(self) -> list[Payment]:
        return [p for p in self.payments.values() if p.status is PaymentStatus.APPROVED]

    @property
    def pending_total(self) -> int:
        return sum(p.amount for p in self.payments.values() if p.status is PaymentStatus.PENDING)

    @property
    def committed_total(self) -> int:
        """What the sale's total may not drop below: kept money plus pending requests."""
        return self.paid_total - self.refunded_total + self.pending_total

    @property
    def amount_due(self) -> int:
        if self.status is not SaleStatus.OPEN:
            return 0
        return self.total - self.committed_total

    @property
    def status(self) -> SaleStatus:
        if self.is_canceled:
            return SaleStatus.CANCELED
        if self.is_completed:
            if self.paid_total > 0 and self.refunded_total == self.paid_total:
                return SaleStatus.REFUNDED
            return SaleStatus.COMPLETED
        return SaleStatus.OPEN

    @property
    def may_oversell(self) -> bool:
        """In store the goods are in the customer's hand: the sale goes ahead, flagged."""
        return self.channel is Channel.IN_STORE and not self.import_open

    @property
    def holds_stock(self) -> bool:
        """Whether the sale's products are reserved at its location: while it is open and a
        payment is pending or money is kept."""
        return self.status is SaleStatus.OPEN and (
            self.import_open or self.pending_total > 0 or self.paid_total - self.refunded_total > 0
        )

    def reservation(self) -> Counter[str]:
        """Units of each catalog product the sale holds at its location."""
        units = Counter[str]()
        if self.holds_stock:
            for line in self.line_items:
                if line.product_id:
                    units[line.product_id] += line.quantity
        return units

    def record_oversold(self, product_id: str, short: int) -> None:
        """Flags the product's lines with the units that were short, the last line first."""
        lines = []
        for line in reversed(self.line_items):
            if short <= 0:
                break
            if line.product_id == product_id:
                units = min(short, line.quantity - self.oversold.get(line.line_id, 0))
                if units > 0:
                    lines.append(
                        {"line_id": line.line_id, "product_id": product_id, "quantity": units}
                    )
                    short -= units
        if lines:
            self.trigger_event(self.Oversold, lines=lines)

    def payment(self, payment_id: str) -> Payment:
        try:
            return self.payments[payment_id]
        except KeyError:
            raise NotFound(
                f"payment {payment_id} not found on sale {self.id}", reason="PAYMENT_NOT_FOUND"
            ) from None

    # ---- commands ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        merchant_id: str,
        location_id: str,
        channel: Channel,
        currency_code: str,
        line_items: tuple[LineItemInput, ...],
        customer_id: str = "",
        external_order_id: str = "",
        note: str = "",
    ) -> Sale:
        items = [LineItem.new(item) for item in line_items]
        _check_total(sum(item.total_amount for item in items))
        return cls._create(
            cls.Created,
            id=uuid.uuid4(),
            merchant_id=merchant_id,
            location_id=location_id,
            channel=channel.value,
            currency_code=currency_code,
            line_items=[item.to_event() for item in items],
            customer_id=customer_id,
            external_order_id=external_order_id,
            note=note,
        )

    @classmethod
    def import_order(
        cls, sale_id: uuid.UUID, merchant_id: str, order: ImportOrder, fingerprint: str
    ) -> Sale:
        """A sale from another channel's order (lines already priced): completed for a
        finished order, open (holding its stock) for an open one."""
        assert order.sales_channel is not None
        items = [LineItem.new(item) for item in order.line_items]
        total = sum(item.total_amount for item in items)
        _check_total(total)
        paid = sum(p.amount for p in order.payments)
        if not order.open and paid != total:
            raise RuleViolated(
                f"payments add up to {paid} but the order's total is {total}",
                reason="PAYMENTS_DO_NOT_MATCH_TOTAL",
            )
        sale = cls._create(
            cls.Created,
            id=sale_id,
            merchant_id=merchant_id,
            location_id=order.location_id,
            channel=order.sales_channel.value,
            currency_code=order.currency_code,
            line_items=[item.to_event() for item in items],
            customer_id=order.customer_id,
            external_order_id=order.external_order_id,
            note=order.note,
        )
        sale.trigger_event(
            cls.Imported,
            channel=order.channel,
            fingerprint=fingerprint,
            placed_at=order.placed_at,
            payments=[
                {
                    "payment_id": str(uuid.uuid4()),
                    "tender": p.tender.value if p.tender else "",
                    "amount": p.amount,
                    "card": _card_to_event(p.card),
                    "auth_code": p.auth_code,
                    "processor_reference": p.processor_reference,
                }
                for p in order.payments
            ],
            open=order.open,
        )
        if not order.open:
            sale.trigger_event(cls.Completed)
        return sale

    def add_line_item(self, item: LineItemInput) -> str:
        self._check_open()
        if len(self.line_items) >= MAX_LINE_ITEMS:
            raise RuleViolated(
                f"a sale has at most {MAX_LINE_ITEMS} line items", reason="TOO_MANY_LINE_ITEMS"
            )
        line = LineItem.new(item)
        _check_total(self.total + line.total_amount)
        self.trigger_event(self.LineItemAdded, line_item=line.to_event())
        return line.line_id

    def remove_line_item(self, line_id: str) -> None:
        self._check_open()
        line = next((item for item in self.line_items if item.line_id == line_id), None)
        if line is None:
            raise NotFound(
                f"line item {line_id} not found on sale {self.id}", reason="LINE_ITEM_NOT_FOUND"
            )
        if self.total - line.total_amount < self.committed_total:
            raise RuleViolated(
                "removing this line would make the total less than what is paid or pending",
                reason="TOTAL_BELOW_PAID",
            )
        self.trigger_event(self.LineItemRemoved, line_id=line_id)
        if self.total > 0 and self.paid_total - self.refunded_total == self.total:
            # What is already approved now covers the smaller total: nothing more can be paid.
            self.trigger_event(self.Completed)

    def attach_customer(self, customer_id: str) -> None:
        self._check_open()
        if customer_id != self.customer_id:
            self.trigger_event(self.CustomerAttached, customer_id=customer_id)

    def request_payment(
        self,
        *,
        amount: int,
        currency_code: str,
        tender_types: list[Tender],
        callback_url: str,
        app_id: str,
        api_version: str,
        note: str = "",
        state: str = "",
        expires_after: timedelta | None = None,
    ) -> str:
        """Requests a payment; with `expires_after`, the ledger ends it if still pending
        that long after (see `expire_payment`)."""
        self._check_open()
        if currency_code != self.currency_code:
            raise RuleViolated(
                f"payment currency {currency_code} differs from the sale's {self.currency_code}",
                reason="CURRENCY_MISMATCH",
            )
        if amount > self.amount_due:
            raise RuleViolated(
                f"amount {amount} exceeds the amount due {self.amount_due}",
                reason="AMOUNT_EXCEEDS_DUE",
            )
        payment_id = str(uuid.uuid4())
        self.trigger_event(
            self.PaymentRequested,
            payment_id=payment_id,
            amount=amount,
            tender_types=[t.value for t in tender_types],
            callback_url=callback_url,
            app_id=app_id,
            api_version=api_version,
            note=note,
            state=state,
            expires_at=None if expires_after is None else datetime.now(UTC) + expires_after,
        )
        return payment_id

    def record_payment_result(self, result: RecordPaymentResult) -> None:
        """Records a payment's one result. Repeating the same result records nothing."""
        payment = self.payment(result.payment_id)
        ended = payment.status in (PaymentStatus.CANCELED, PaymentStatus.EXPIRED)
        if ended and result.outcome is Outcome.APPROVED:
            self._record_late_approval(payment, result)
            return
        if payment.status is PaymentStatus.EXPIRED:
            return  # no money taken, as the expiry assumed: nothing more to record
        if payment.status is not PaymentStatus.PENDING:
            if self._same_result(payment, result):
                return
            raise RuleViolated(
                f"payment {payment.id} already has a result ({payment.status.value})",
                reason="PAYMENT_ALREADY_RESOLVED",
            )
        tender = result.tender.value if result.tender else ""
        if result.outcome is Outcome.APPROVED:
            assert result.tender is not None
            self._check_approval(payment, result)
            self.trigger_event(
                self.PaymentApproved,
                payment_id=payment.id,
                approved_amount=self._approved_amount(payment, result),
                tip_amount=result.tip_amount,
                tender=tender,
                card=_card_to_event(result.card),
                auth_code=result.auth_code,
                processor_reference=result.processor_reference,
                cash_tendered=result.cash_tendered,
                change_given=result.change_given,
                occurred_at=result.occurred_at,
            )
            if self.total > 0 and self.paid_total - self.refunded_total == self.total:
                self.trigger_event(self.Completed)
        else:
            assert result.outcome is not None
            self.trigger_event(
                self.PaymentNotApproved,
                payment_id=payment.id,
                outcome=result.outcome.value,
                tender=tender,
                card=_card_to_event(result.card),
                processor_reference=result.processor_reference,
                error_code=result.error_code,
                occurred_at=result.occurred_at,
            )

    def _record_late_approval(self, payment: Payment, result: RecordPaymentResult) -> None:
        """Money taken after the merchant or the app gave up on the payment: recorded as
        it is (the ledger never loses money taken), owed back to the customer."""
        assert result.tender is not None
        self._check_approval(payment, result)
        self.trigger_event(
            self.PaymentApprovedAfterCancel,
            payment_id=payment.id,
            approved_amount=self._approved_amount(payment, result),
            tip_amount=result.tip_amount,
            tender=result.tender.value,
            card=_card_to_event(result.card),
            auth_code=result.auth_code,
            processor_reference=result.processor_reference,
            cash_tendered=result.cash_tendered,
            change_given=result.change_given,
            occurred_at=result.occurred_at,
        )

    def cancel_payment(self, payment_id: str, reason: str) -> None:
        payment = self.payment(payment_id)
        if payment.status is PaymentStatus.CANCELED:
            return
        if payment.status is not PaymentStatus.PENDING:
            raise RuleViolated(
                f"payment {payment.id} is {payment.status.value}, not pending",
                reason="PAYMENT_NOT_PENDING",
            )
        self.trigger_event(self.PaymentCanceled, payment_id=payment_id, reason=reason)

    def expire_payment(self, payment_id: str, now: datetime) -> None:
        """Ends a payment still pending at its deadline. Expiring it again records nothing."""
        payment = self.payment(payment_id)
        if payment.status is PaymentStatus.EXPIRED:
            return
        if payment.status is not PaymentStatus.PENDING:
            raise RuleViolated(
                f"payment {payment.id} is {payment.status.value}, not pending",
                reason="PAYMENT_NOT_PENDING",
            )
        if not payment.is_due(now):
            deadline = "has no deadline" if payment.expires_at is None else "is not due yet"
            raise RuleViolated(f"payment {payment.id} {deadline}", reason="PAYMENT_NOT_DUE")
        self.trigger_event(self.PaymentExpired, payment_id=payment_id)

    def restocked(self, line_id: str) -> int:
        return sum(
            item["quantity"]
            for refund in self.refunds
            for item in refund.restock_items
            if item["line_id"] == line_id
        )

    def _restock_lines(self, restock: tuple[RestockItem, ...]) -> list[dict[str, Any]]:
        """Checks that each restocked line was sold here and not restocked in full already."""
        lines = {item.line_id: item for item in self.line_items}
        result = []
        for item in restock:
            line = lines.get(item.line_id)
            if line is None:
                raise NotFound(
                    f"line item {item.line_id} not found on sale {self.id}",
                    reason="LINE_ITEM_NOT_FOUND",
                )
            if not self.is_completed:
                raise RuleViolated(
                    "goods return to stock only from a completed sale",
                    reason="SALE_NOT_COMPLETED",
                )
            if not line.product_id:
                raise RuleViolated(
                    f"line {line.line_id} is an open item, not a catalog product; it has no stock",
                    reason="LINE_NOT_STOCKED",
                )
            if item.quantity > line.quantity - self.restocked(line.line_id):
                raise RuleViolated(
                    f"line {line.line_id} sold {line.quantity} units and "
                    f"{self.restocked(line.line_id)} are back in stock already",
                    reason="RESTOCK_EXCEEDS_SOLD",
                )
            result.append(
                {"line_id": line.line_id, "product_id": line.product_id, "quantity": item.quantity}
            )
        return result

    def refund_payment(
        self,
        payment_id: str,
        amount: int,
        reason: str,
        processor_reference: str,
        restock: tuple[RestockItem, ...] = (),
    ) -> str:
        payment = self.payment(payment_id)
        if payment.status not in (PaymentStatus.APPROVED, PaymentStatus.APPROVED_AFTER_CANCEL):
            raise RuleViolated(
                f"payment {payment.id} is {payment.status.value}; only approved payments refund",
                reason="PAYMENT_NOT_APPROVED",
            )
        if payment.is_late and restock:
            raise RuleViolated(
                f"payment {payment.id} was approved after it was canceled; it sold nothing, "
                "so nothing returns to stock",
                reason="LINE_NOT_SOLD",
            )
        if amount > payment.refundable:
            raise RuleViolated(
                f"refund {amount} exceeds what is refundable on the payment ({payment.refundable})",
                reason="REFUND_EXCEEDS_REFUNDABLE",
            )
        restock_items = self._restock_lines(restock)
        refund_id = str(uuid.uuid4())
        self.trigger_event(
            self.PaymentRefunded,
            refund_id=refund_id,
            payment_id=payment_id,
            amount=amount,
            reason=reason,
            processor_reference=processor_reference,
            restock_items=restock_items,
        )
        return refund_id

    def cancel(self, reason: str) -> None:
        self._check_open()
        if self.pending_total:
            raise RuleViolated(
                "the sale has pending payments; cancel them or record their results first",
                reason="PAYMENTS_PENDING",
            )
        if self.paid_total - self.refunded_total:
            raise RuleViolated(
                "the sale has approved payments; refund them instead", reason="PAYMENTS_APPROVED"
            )
        self.trigger_event(self.Canceled, reason=reason)

    # ---- checks --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.status is not SaleStatus.OPEN:
            raise RuleViolated(f"sale {self.id} is {self.status.value}", reason="SALE_NOT_OPEN")

    @staticmethod
    def _approved_amount(payment: Payment, result: RecordPaymentResult) -> int:
        return payment.amount if result.approved_amount is None else result.approved_amount

    def _check_approval(self, payment: Payment, result: RecordPaymentResult) -> None:
        assert result.tender is not None
        if result.tender.value not in payment.tender_types:
            raise RuleViolated(
                f"tender {result.tender.value} was not allowed for this payment "
                f"(allowed: {', '.join(payment.tender_types)})",
                reason="TENDER_NOT_ALLOWED",
            )
        approved = self._approved_amount(payment, result)
        if approved > payment.amount:
            raise RuleViolated(
                f"approved amount {approved} exceeds the amount requested {payment.amount}",
                reason="APPROVED_AMOUNT_EXCEEDS_REQUESTED",
            )
        if (result.cash_tendered or result.change_given) and (
            result.cash_tendered - approved - result.tip_amount != result.change_given
        ):
            raise RuleViolated(
                "change_given must equal cash_tendered - approved amount - tip_amount",
                reason="CHANGE_MISMATCH",
            )
        if self.tip_total + result.tip_amount > MAX_AMOUNT:
            raise RuleViolated(
                f"the sale's tips would exceed {MAX_AMOUNT} minor units", reason="AMOUNT_TOO_LARGE"
            )

    @staticmethod
    def _same_result(payment: Payment, result: RecordPaymentResult) -> bool:
        outcome = result.outcome.value if result.outcome else ""
        recorded = Outcome.APPROVED.value if payment.is_late else payment.status.value
        if outcome != recorded:
            return False
        if payment.cancel_reason and not payment.is_late:
            return True  # canceled by the merchant; the app agrees it was canceled
        same_details = (
            (result.tender.value if result.tender else "") == payment.tender
            and _card_to_event(result.card) == payment.card
            and result.processor_reference == payment.processor_reference
            and result.error_code == payment.error_code
        )
        if result.outcome is not Outcome.APPROVED:
            return same_details
        return (
            same_details
            and Sale._approved_amount(payment, result) == payment.approved_amount
            and result.auth_code == payment.auth_code
            and result.tip_amount == payment.tip_amount
            and result.cash_tendered == payment.cash_tendered
            and result.change_given == payment.change_given
        )

    # ---- evolution -----------------------------------------------------------------------

    @singledispatchmethod
    def when(self, event: Aggregate.Event) -> None:
        raise NotImplementedError(f"Sale cannot apply {type(event).__name__}")

    @when.register(Created)
    def _created(self, event: Created) -> None:
        pass  # __init__ has applied it

    @when.register(LineItemAdded)
    def _line_item_added(self, event: LineItemAdded) -> None:
        self.line_items.append(LineItem(**event.line_item))

    @when.register(LineItemRemoved)
    def _line_item_removed(self, event: LineItemRemoved) -> None:
        self.line_items = [item for item in self.line_items if item.line_id != event.line_id]

    @when.register(CustomerAttached)
    def _customer_attached(self, event: CustomerAttached) -> None:
        self.customer_id = event.customer_id

    @when.register(PaymentRequested)
    def _payment_requested(self, event: PaymentRequested) -> None:
        self.payments[event.payment_id] = Payment(
            id=event.payment_id,
            amount=event.amount,
            currency_code=self.currency_code,
            tender_types=list(event.tender_types),
            callback_url=event.callback_url,
            app_id=event.app_id,
            api_version=event.api_version,
            note=event.note,
            state=event.state,
            requested_at=event.timestamp,
            expires_at=event.expires_at,
        )

    @when.register(PaymentExpired)
    def _payment_expired(self, event: PaymentExpired) -> None:
        payment = self.payments[event.payment_id]
        payment.status = PaymentStatus.EXPIRED
        payment.resolved_at = event.timestamp

    @when.register(PaymentApproved)
    def _payment_approved(self, event: PaymentApproved) -> None:
        payment = self.payments[event.payment_id]
        payment.status = PaymentStatus.APPROVED
        payment.approved_amount = event.approved_amount
        payment.tip_amount = event.tip_amount
        payment.tender = event.tender
        payment.card = event.card
        payment.auth_code = event.auth_code
        payment.processor_reference = event.processor_reference
        payment.cash_tendered = event.cash_tendered
        payment.change_given = event.change_given
        payment.occurred_at = event.occurred_at
        payment.resolved_at = event.timestamp

    @when.register(PaymentApprovedAfterCancel)
    def _payment_approved_after_cancel(self, event: PaymentApprovedAfterCancel) -> None:
        payment = self.payments[event.payment_id]
        payment.status = PaymentStatus.APPROVED_AFTER_CANCEL
        payment.error_code = ""  # of the canceled outcome, if the app reported one
        payment.approved_amount = event.approved_amount
        payment.tip_amount = event.tip_amount
        payment.tender = event.tender
        payment.card = event.card
        payment.auth_code = event.auth_code
        payment.processor_reference = event.processor_reference
        payment.cash_tendered = event.cash_tendered
        payment.change_given = event.change_given
        payment.occurred_at = event.occurred_at
        payment.resolved_at = event.timestamp

    @when.register(PaymentNotApproved)
    def _payment_not_approved(self, event: PaymentNotApproved) -> None:
        payment = self.payments[event.payment_id]
        payment.status = PaymentStatus(event.outcome)
        payment.tender = event.tender
        payment.card = event.card
        payment.processor_reference = event.processor_reference
        payment.error_code = event.error_code
        payment.occurred_at = event.occurred_at
        payment.resolved_at = event.timestamp

    @when.register(PaymentCanceled)
    def _payment_canceled(self, event: PaymentCanceled) -> None:
        payment = self.payments[event.payment_id]
        payment.status = PaymentStatus.CANCELED
        payment.cancel_reason = event.reason or "canceled"
        payment.resolved_at = event.timestamp

    @when.register(PaymentRefunded)
    def _payment_refunded(self, event: PaymentRefunded) -> None:
        self.payments[event.payment_id].refunded_amount += event.amount
        self.refunds.append(
            Refund(
                id=event.refund_id,
                payment_id=event.payment_id,
                amount=event.amount,
                reason=event.reason,
                processor_reference=event.processor_reference,
                refunded_at=event.timestamp,
                restock_items=tuple(event.restock_items),
            )
        )

    @when.register(Imported)
    def _imported(self, event: Imported) -> None:
        self.import_channel = event.channel
        self.import_fingerprint = event.fingerprint
        self.placed_at = event.placed_at
        self.import_open = event.open
        for p in event.payments:
            self.payments[p["payment_id"]] = Payment(
                id=p["payment_id"],
                amount=p["amount"],
                currency_code=self.currency_code,
                tender_types=[p["tender"]],
                callback_url="",
                app_id=f"import:{event.channel}",
                api_version="",
                note="",
                state="",
                requested_at=event.placed_at or event.timestamp,
                status=PaymentStatus.APPROVED,
                approved_amount=p["amount"],
                tender=p["tender"],
                card=p["card"],
                auth_code=p["auth_code"],
                processor_reference=p["processor_reference"],
                occurred_at=event.placed_at,
                resolved_at=event.timestamp,
            )

    @when.register(Oversold)
    def _oversold(self, event: Oversold) -> None:
        for line in event.lines:
            self.oversold[line["line_id"]] = (
                self.oversold.get(line["line_id"], 0) + line["quantity"]
            )

    @when.register(Completed)
    def _completed(self, event: Completed) -> None:
        self.is_completed = True
        self.completed_at = event.timestamp

    @when.register(Canceled)
    def _canceled(self, event: Canceled) -> None:
        self.is_canceled = True
        self.canceled_at = event.timestamp
        self.cancel_reason = event.reason


def _check_total(total: int) -> None:
    if total > MAX_AMOUNT:
        raise RuleViolated(
            f"the sale total would exceed {MAX_AMOUNT} minor units", reason="AMOUNT_TOO_LARGE"
        )
