"""Catalog commands: products, unique by sku per merchant."""

from __future__ import annotations

from ledger.application.base import LedgerBase
from ledger.application.context import Context, Decision, Outcome
from ledger.domain import product as d
from ledger.domain.errors import AlreadyExists
from ledger.domain.product import Product, product_id
from ledger.domain.validation import Checks


class CatalogCommands(LedgerBase):
    def create_product(self, ctx: Context, cmd: d.CreateProduct) -> Outcome:
        d.validate_product_command(cmd)

        def decide() -> Decision:
            # Two racing creations of one sku build the same aggregate id: the loser's save
            # fails, its retry lands here and finds the winner's product.
            if self._find(Product, ctx.merchant_id, product_id(ctx.merchant_id, cmd.sku)):
                raise AlreadyExists(
                    f"sku {cmd.sku!r} is already in the catalog", reason="SKU_TAKEN"
                )
            return [Product.create(ctx.merchant_id, cmd)], {}

        return self._execute(ctx, cmd, decide)

    def update_product(self, ctx: Context, cmd: d.UpdateProduct) -> Outcome:
        d.validate_product_command(cmd)

        def decide() -> Decision:
            product = self._load(Product, ctx.merchant_id, cmd.product_id, "PRODUCT_NOT_FOUND")
            self._check_version(ctx, product)
            product.update(dict(cmd.changes))
            return [product], {}

        return self._execute(ctx, cmd, decide)

    def discontinue_product(self, ctx: Context, cmd: d.DiscontinueProduct) -> Outcome:
        d.validate_product_command(cmd)

        def decide() -> Decision:
            product = self._load(Product, ctx.merchant_id, cmd.product_id, "PRODUCT_NOT_FOUND")
            self._check_version(ctx, product)
            product.discontinue(cmd.reason)
            return [product], {}

        return self._execute(ctx, cmd, decide)

    def reactivate_product(self, ctx: Context, cmd: d.ReactivateProduct) -> Outcome:
        d.validate_product_command(cmd)

        def decide() -> Decision:
            product = self._load(Product, ctx.merchant_id, cmd.product_id, "PRODUCT_NOT_FOUND")
            self._check_version(ctx, product)
            product.reactivate(cmd.reason)
            return [product], {}

        return self._execute(ctx, cmd, decide)

    def get_product(self, merchant_id: str, product_id: str) -> Product:
        checks = Checks()
        checks.uuid("product_id", product_id)
        checks.raise_if_any()
        return self._load(Product, merchant_id, product_id, "PRODUCT_NOT_FOUND")

    def get_product_by_sku(self, merchant_id: str, sku: str) -> Product:
        checks = Checks()
        checks.sku("sku", sku)
        checks.raise_if_any()
        return self._load(Product, merchant_id, product_id(merchant_id, sku), "PRODUCT_NOT_FOUND")
