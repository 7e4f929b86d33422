"""The Sale aggregate: line items, totals, payments and refunds of one sale.

Command methods check the rules against the current state, then trigger events; the
`when` handlers only apply events, so replaying history never re-runs a rule (rules may
change; recorded facts may not). Events carry plain JSON-friendly values.

Stored event names are explicit (`TOPIC`) and independent of module paths, so code can be
moved without breaking old events. Bump an event's `class_version` and add an upcaster when
its fields change.

The value objects are in `line_items` and `payments` (with the rules of one payment's
result); what an imported order records is in `sale_import`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import singledispatchmethod
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.domain.commands import (
    MAX_LINE_ITEMS,
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
from ledger.domain.line_items import LineItem, check_sale_total
from ledger.domain.payments import (
    Payment,
    PaymentStatus,
    Refund,
    approved_amount,
    card_to_event,
    check_approval,
    same_result,
)
from ledger.domain.sale_import import check_paid, imported_payments
from ledger.domain.sale_state import SaleState, SaleStatus

__all__ = ["LineItem", "Payment", "PaymentStatus", "Refund", "Sale", "SaleStatus"]


class Sale(CheapCopy, SaleState, Aggregate):
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

    # The state, and what follows from it, is SaleState's (its __init__ applies Created).

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
        sale_id: uuid.UUID | None = None,
        merchant_id: str,
        location_id: str,
        channel: Channel,
        currency_code: str,
        line_items: tuple[LineItemInput, ...],
        customer_id: str = "",
        external_order_id: str = "",
        note: str = "",
    ) -> Sale:
        """A new open sale; `sale_id` is given by an import, else a new one is made."""
        items = [LineItem.new(item) for item in line_items]
        check_sale_total(sum(item.total_amount for item in items))
        return cls._create(
            cls.Created,
            id=sale_id or uuid.uuid4(),
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
        """A sale from another channel's order (see `sale_import`): completed for a
        finished order, open (holding its stock) for an open one."""
        assert order.sales_channel is not None
        sale = cls.create(
            sale_id=sale_id,
            merchant_id=merchant_id,
            location_id=order.location_id,
            channel=order.sales_channel,
            currency_code=order.currency_code,
            line_items=order.line_items,
            customer_id=order.customer_id,
            external_order_id=order.external_order_id,
            note=order.note,
        )
        check_paid(order, sale.total)
        sale.trigger_event(
            cls.Imported,
            channel=order.channel,
            fingerprint=fingerprint,
            placed_at=order.placed_at,
            payments=imported_payments(order),
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
        check_sale_total(self.total + line.total_amount)
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
            if same_result(payment, result):
                return
            raise RuleViolated(
                f"payment {payment.id} already has a result ({payment.status.value})",
                reason="PAYMENT_ALREADY_RESOLVED",
            )
        tender = result.tender.value if result.tender else ""
        if result.outcome is Outcome.APPROVED:
            assert result.tender is not None
            check_approval(payment, result, self.tip_total)
            self.trigger_event(
                self.PaymentApproved,
                payment_id=payment.id,
                approved_amount=approved_amount(payment, result),
                tip_amount=result.tip_amount,
                tender=tender,
                card=card_to_event(result.card),
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
                card=card_to_event(result.card),
                processor_reference=result.processor_reference,
                error_code=result.error_code,
                occurred_at=result.occurred_at,
            )

    def _record_late_approval(self, payment: Payment, result: RecordPaymentResult) -> None:
        """Money taken after the merchant or the app gave up on the payment: recorded as
        it is (the ledger never loses money taken), owed back to the customer."""
        assert result.tender is not None
        check_approval(payment, result, self.tip_total)
        self.trigger_event(
            self.PaymentApprovedAfterCancel,
            payment_id=payment.id,
            approved_amount=approved_amount(payment, result),
            tip_amount=result.tip_amount,
            tender=result.tender.value,
            card=card_to_event(result.card),
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
        self.payments[event.payment_id] = Payment.requested(event, self.currency_code)

    @when.register(PaymentExpired)
    def _payment_expired(self, event: PaymentExpired) -> None:
        payment = self.payments[event.payment_id]
        payment.status = PaymentStatus.EXPIRED
        payment.resolved_at = event.timestamp

    @when.register(PaymentApproved)
    def _payment_approved(self, event: PaymentApproved) -> None:
        self.payments[event.payment_id].approve(event, late=False)

    @when.register(PaymentApprovedAfterCancel)
    def _payment_approved_after_cancel(self, event: PaymentApprovedAfterCancel) -> None:
        self.payments[event.payment_id].approve(event, late=True)

    @when.register(PaymentNotApproved)
    def _payment_not_approved(self, event: PaymentNotApproved) -> None:
        self.payments[event.payment_id].not_approve(event)

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
        for row in event.payments:
            self.payments[row["payment_id"]] = Payment.imported(row, event, self.currency_code)

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
