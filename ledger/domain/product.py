"""The Product aggregate: one entry of a merchant's catalog.

A product's id is derived from (merchant, sku), so two racing creations of one sku collide
on the same aggregate and exactly one wins; the sku can therefore never change.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import singledispatchmethod
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.domain.copying import CheapCopy
from ledger.domain.errors import RuleViolated
from ledger.domain.handlers import apply_when
from ledger.domain.money import PPM
from ledger.domain.validation import Checks

PRODUCT_NAMESPACE = uuid.UUID("6f1b7a52-3c0e-4d8e-9a57-0c4b8f2f1a10")
UPDATABLE_FIELDS = ("name", "price", "currency_code", "tax_rate_ppm", "barcode", "category")


def product_id(merchant_id: str, sku: str) -> uuid.UUID:
    return uuid.uuid5(PRODUCT_NAMESPACE, f"{merchant_id}\x1f{sku}")


@dataclass(frozen=True)
class CreateProduct:
    sku: str
    name: str
    price: int
    currency_code: str
    tax_rate_ppm: int = 0
    barcode: str = ""
    category: str = ""


@dataclass(frozen=True)
class UpdateProduct:
    product_id: str
    # Only the fields named by the update mask, by name.
    changes: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class DiscontinueProduct:
    product_id: str
    reason: str = ""


@dataclass(frozen=True)
class ReactivateProduct:
    product_id: str
    reason: str = ""


def _check_fields(checks: Checks, fields: dict[str, Any], prefix: str = "") -> None:
    if "name" in fields:
        checks.text(f"{prefix}name", fields["name"], max_len=200, required=True)
    if "price" in fields:
        checks.amount(f"{prefix}price", fields["price"], minimum=0)
    if "currency_code" in fields:
        checks.currency(f"{prefix}currency_code", fields["currency_code"])
    if "tax_rate_ppm" in fields and not 0 <= fields["tax_rate_ppm"] <= PPM:
        checks.fail(f"{prefix}tax_rate_ppm", f"must be between 0 and {PPM} (100%)")
    if "barcode" in fields:
        checks.text(f"{prefix}barcode", fields["barcode"], max_len=64)
        if " " in fields["barcode"]:
            checks.fail(f"{prefix}barcode", "must not contain spaces")
    if "category" in fields:
        checks.text(f"{prefix}category", fields["category"], max_len=100)


def validate_product_command(
    command: CreateProduct | UpdateProduct | DiscontinueProduct | ReactivateProduct,
) -> None:
    checks = Checks()
    match command:
        case CreateProduct():
            checks.sku("sku", command.sku)
            _check_fields(checks, vars(command))
        case UpdateProduct():
            checks.uuid("product_id", command.product_id)
            checks.update_mask([name for name, _ in command.changes], UPDATABLE_FIELDS)
            _check_fields(checks, dict(command.changes), prefix="product.")
        case DiscontinueProduct() | ReactivateProduct():
            checks.uuid("product_id", command.product_id)
            checks.text("reason", command.reason, max_len=500)
    checks.raise_if_any()


class Product(CheapCopy, Aggregate):
    TOPIC = "posledger.Product"

    class Event(Aggregate.Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Product)
            apply_when(aggregate, self)

    class Created(Aggregate.Created):
        TOPIC = "posledger.ProductCreated"
        merchant_id: str
        sku: str
        name: str
        price: int
        currency_code: str
        tax_rate_ppm: int
        barcode: str
        category: str

    class Updated(Event):
        TOPIC = "posledger.ProductUpdated"
        changes: dict[str, Any]

    class Discontinued(Event):
        TOPIC = "posledger.ProductDiscontinued"
        reason: str

    class Reactivated(Event):
        TOPIC = "posledger.ProductReactivated"
        reason: str

    def __init__(
        self,
        merchant_id: str,
        sku: str,
        name: str,
        price: int,
        currency_code: str,
        tax_rate_ppm: int,
        barcode: str,
        category: str,
    ) -> None:
        self.merchant_id = merchant_id
        self.sku = sku
        self.name = name
        self.price = price
        self.currency_code = currency_code
        self.tax_rate_ppm = tax_rate_ppm
        self.barcode = barcode
        self.category = category
        self.is_discontinued = False
        self.discontinue_reason = ""

    @classmethod
    def create(cls, merchant_id: str, cmd: CreateProduct) -> Product:
        return cls._create(
            cls.Created,
            id=product_id(merchant_id, cmd.sku),
            merchant_id=merchant_id,
            sku=cmd.sku,
            name=cmd.name,
            price=cmd.price,
            currency_code=cmd.currency_code,
            tax_rate_ppm=cmd.tax_rate_ppm,
            barcode=cmd.barcode,
            category=cmd.category,
        )

    def update(self, changes: dict[str, Any]) -> None:
        self.check_active()
        changed = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if changed:
            self.trigger_event(self.Updated, changes=changed)

    def discontinue(self, reason: str) -> None:
        if not self.is_discontinued:
            self.trigger_event(self.Discontinued, reason=reason)

    def reactivate(self, reason: str) -> None:
        """Sold again, with the price and fields it had (an active product stays as it is)."""
        if self.is_discontinued:
            self.trigger_event(self.Reactivated, reason=reason)

    def check_active(self) -> None:
        if self.is_discontinued:
            raise RuleViolated(
                f"product {self.sku!r} is discontinued", reason="PRODUCT_DISCONTINUED"
            )

    @singledispatchmethod
    def when(self, event: Aggregate.Event) -> None:
        raise NotImplementedError(f"Product cannot apply {type(event).__name__}")

    @when.register(Created)
    def _created(self, event: Created) -> None:
        pass  # __init__ has applied it

    @when.register(Updated)
    def _updated(self, event: Updated) -> None:
        for name, value in event.changes.items():
            setattr(self, name, value)

    @when.register(Discontinued)
    def _discontinued(self, event: Discontinued) -> None:
        self.is_discontinued = True
        self.discontinue_reason = event.reason

    @when.register(Reactivated)
    def _reactivated(self, event: Reactivated) -> None:
        self.is_discontinued = False
        self.discontinue_reason = ""
