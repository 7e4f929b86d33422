"""What a sale holds and what follows from it: totals, status, the amount due, stock held.

The Sale aggregate is this state plus its rules and events (as `StockItem` is `StockLevel`
plus its own). Totals are derived from line items and payments, never stored separately.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from enum import StrEnum
from typing import Any

from ledger.domain.commands import Channel
from ledger.domain.line_items import LineItem
from ledger.domain.payments import Payment, PaymentStatus, Refund


class SaleStatus(StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    CANCELED = "canceled"
    REFUNDED = "refunded"


class SaleState:
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

    def restocked(self, line_id: str) -> int:
        return sum(
            item["quantity"]
            for refund in self.refunds
            for item in refund.restock_items
            if item["line_id"] == line_id
        )
