"""A sale's line items: what was sold, at what price, with its discount and tax."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ledger.domain.commands import LineItemInput
from ledger.domain.errors import RuleViolated
from ledger.domain.money import MAX_AMOUNT, line_tax


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


def check_sale_total(total: int) -> None:
    """A sale's total stays within what an amount may be."""
    if total > MAX_AMOUNT:
        raise RuleViolated(
            f"the sale total would exceed {MAX_AMOUNT} minor units", reason="AMOUNT_TOO_LARGE"
        )
