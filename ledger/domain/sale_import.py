"""What an order from another channel (an online shop, a marketplace) records when imported.

`Sale.import_order` creates the sale from the order's lines (already priced), then records
the import with these: a finished order's settled payments must add up to its total, and
it completes; an open order has no payments yet and holds its stock until paid.
"""

from __future__ import annotations

import uuid
from typing import Any

from ledger.domain.commands import ImportOrder
from ledger.domain.errors import RuleViolated
from ledger.domain.payments import card_to_event


def check_paid(order: ImportOrder, total: int) -> None:
    paid = sum(p.amount for p in order.payments)
    if not order.open and paid != total:
        raise RuleViolated(
            f"payments add up to {paid} but the order's total is {total}",
            reason="PAYMENTS_DO_NOT_MATCH_TOTAL",
        )


def imported_payments(order: ImportOrder) -> list[dict[str, Any]]:
    """The order's settled payments as the `Imported` event records them."""
    return [
        {
            "payment_id": str(uuid.uuid4()),
            "tender": p.tender.value if p.tender else "",
            "amount": p.amount,
            "card": card_to_event(p.card),
            "auth_code": p.auth_code,
            "processor_reference": p.processor_reference,
        }
        for p in order.payments
    ]
