"""A sale's payments and refunds: value objects the Sale aggregate keeps and its events change.

The checks here are the rules of one payment's result that need only the payment and the
result; the aggregate applies them (see `Sale.record_payment_result`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ledger.domain.commands import CardInput, Outcome, RecordPaymentResult
from ledger.domain.errors import RuleViolated
from ledger.domain.money import MAX_AMOUNT

if TYPE_CHECKING:
    from ledger.domain.sale import Sale


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

    @classmethod
    def requested(cls, event: Sale.PaymentRequested, currency_code: str) -> Payment:
        return cls(
            id=event.payment_id,
            amount=event.amount,
            currency_code=currency_code,
            tender_types=list(event.tender_types),
            callback_url=event.callback_url,
            app_id=event.app_id,
            api_version=event.api_version,
            note=event.note,
            state=event.state,
            requested_at=event.timestamp,
            expires_at=event.expires_at,
        )

    @classmethod
    def imported(cls, row: dict[str, Any], event: Sale.Imported, currency_code: str) -> Payment:
        """A settled payment of an imported order (one row of `Imported.payments`)."""
        return cls(
            id=row["payment_id"],
            amount=row["amount"],
            currency_code=currency_code,
            tender_types=[row["tender"]],
            callback_url="",
            app_id=f"import:{event.channel}",
            api_version="",
            note="",
            state="",
            requested_at=event.placed_at or event.timestamp,
            status=PaymentStatus.APPROVED,
            approved_amount=row["amount"],
            tender=row["tender"],
            card=row["card"],
            auth_code=row["auth_code"],
            processor_reference=row["processor_reference"],
            occurred_at=event.placed_at,
            resolved_at=event.timestamp,
        )

    def approve(
        self, event: Sale.PaymentApproved | Sale.PaymentApprovedAfterCancel, *, late: bool
    ) -> None:
        """Applies an approval: in time, or late (after the payment was canceled or expired)."""
        if late:
            self.status = PaymentStatus.APPROVED_AFTER_CANCEL
            self.error_code = ""  # of the canceled outcome, if the app reported one
        else:
            self.status = PaymentStatus.APPROVED
        self.approved_amount = event.approved_amount
        self.tip_amount = event.tip_amount
        self.tender = event.tender
        self.card = event.card
        self.auth_code = event.auth_code
        self.processor_reference = event.processor_reference
        self.cash_tendered = event.cash_tendered
        self.change_given = event.change_given
        self.occurred_at = event.occurred_at
        self.resolved_at = event.timestamp

    def not_approve(self, event: Sale.PaymentNotApproved) -> None:
        """Applies a declined, failed or canceled outcome reported by the payment app."""
        self.status = PaymentStatus(event.outcome)
        self.tender = event.tender
        self.card = event.card
        self.processor_reference = event.processor_reference
        self.error_code = event.error_code
        self.occurred_at = event.occurred_at
        self.resolved_at = event.timestamp

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


def card_to_event(card: CardInput | None) -> dict[str, str] | None:
    """The card as events record it: brand, last 4 digits and entry method, nothing more."""
    if card is None:
        return None
    assert card.entry_method is not None
    return {"brand": card.brand, "last4": card.last4, "entry_method": card.entry_method.value}


def approved_amount(payment: Payment, result: RecordPaymentResult) -> int:
    """What an approval took: the amount reported, or else the amount requested."""
    return payment.amount if result.approved_amount is None else result.approved_amount


def check_approval(payment: Payment, result: RecordPaymentResult, tip_total: int) -> None:
    """An approval fits its payment; `tip_total` is what the sale's tips are so far."""
    assert result.tender is not None
    if result.tender.value not in payment.tender_types:
        raise RuleViolated(
            f"tender {result.tender.value} was not allowed for this payment "
            f"(allowed: {', '.join(payment.tender_types)})",
            reason="TENDER_NOT_ALLOWED",
        )
    approved = approved_amount(payment, result)
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
    if tip_total + result.tip_amount > MAX_AMOUNT:
        raise RuleViolated(
            f"the sale's tips would exceed {MAX_AMOUNT} minor units", reason="AMOUNT_TOO_LARGE"
        )


def same_result(payment: Payment, result: RecordPaymentResult) -> bool:
    """Whether `result` repeats the result the payment already has (a retry by the app)."""
    outcome = result.outcome.value if result.outcome else ""
    recorded = Outcome.APPROVED.value if payment.is_late else payment.status.value
    if outcome != recorded:
        return False
    if payment.cancel_reason and not payment.is_late:
        return True  # canceled by the merchant; the app agrees it was canceled
    same_details = (
        (result.tender.value if result.tender else "") == payment.tender
        and card_to_event(result.card) == payment.card
        and result.processor_reference == payment.processor_reference
        and result.error_code == payment.error_code
    )
    if result.outcome is not Outcome.APPROVED:
        return same_details
    return (
        same_details
        and approved_amount(payment, result) == payment.approved_amount
        and result.auth_code == payment.auth_code
        and result.tip_amount == payment.tip_amount
        and result.cash_tendered == payment.cash_tendered
        and result.change_given == payment.change_given
    )
