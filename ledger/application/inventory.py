"""Stock commands: receipts, adjustments, counts and transfers of catalog products."""

from __future__ import annotations

import uuid

from ledger.application.base import LedgerBase
from ledger.application.context import Context, Decision, Outcome
from ledger.domain import inventory as d
from ledger.domain.errors import VersionConflict
from ledger.domain.inventory import StockItem, stock_item_id
from ledger.domain.product import Product
from ledger.domain.validation import Checks


class InventoryCommands(LedgerBase):
    def receive_stock(self, ctx: Context, cmd: d.ReceiveStock) -> Outcome:
        d.validate_stock_command(cmd)

        def decide() -> Decision:
            item = self._stock_item(ctx, cmd.product_id, cmd.location_id)
            item.receive(cmd.quantity, cmd.reference, cmd.note)
            return [item], {}

        return self._execute(ctx, cmd, decide)

    def adjust_stock(self, ctx: Context, cmd: d.AdjustStock) -> Outcome:
        d.validate_stock_command(cmd)

        def decide() -> Decision:
            assert cmd.reason is not None
            item = self._stock_item(ctx, cmd.product_id, cmd.location_id)
            item.adjust(cmd.quantity, cmd.reason, cmd.note)
            return [item], {}

        return self._execute(ctx, cmd, decide)

    def record_stock_count(self, ctx: Context, cmd: d.RecordStockCount) -> Outcome:
        d.validate_stock_command(cmd)

        def decide() -> Decision:
            item = self._stock_item(ctx, cmd.product_id, cmd.location_id)
            item.count(cmd.counted_quantity, cmd.note)
            return [item], {}

        return self._execute(ctx, cmd, decide)

    def transfer_stock(self, ctx: Context, cmd: d.TransferStock) -> Outcome:
        d.validate_stock_command(cmd)

        def decide() -> Decision:
            source = self._stock_item(ctx, cmd.product_id, cmd.from_location_id)
            target = self._stock_item(ctx, cmd.product_id, cmd.to_location_id)
            transfer_id = str(uuid.uuid4())
            source.transfer_out(
                transfer_id, cmd.quantity, cmd.to_location_id, cmd.reference, cmd.note
            )
            target.transfer_in(
                transfer_id, cmd.quantity, cmd.from_location_id, cmd.reference, cmd.note
            )
            return [source, target], {"transfer_id": transfer_id}

        return self._execute(ctx, cmd, decide)

    def get_stock_item(
        self, merchant_id: str, product_id: str, location_id: str
    ) -> StockItem | None:
        """The product's stock at the location; None if nothing ever moved there."""
        checks = Checks()
        checks.uuid("product_id", product_id)
        checks.text("location_id", location_id, max_len=64, required=True)
        checks.raise_if_any()
        product = self._load(Product, merchant_id, product_id, "PRODUCT_NOT_FOUND")
        key = stock_item_id(merchant_id, str(product.id), location_id)
        return self._find(StockItem, merchant_id, key)

    def _stock_item(self, ctx: Context, product_id: str, location_id: str) -> StockItem:
        """The stock item a command moves; the first movement opens it."""
        product = self._load(Product, ctx.merchant_id, product_id, "PRODUCT_NOT_FOUND")
        key = stock_item_id(ctx.merchant_id, str(product.id), location_id)
        item = self._find(StockItem, ctx.merchant_id, key)
        if item is None:
            if ctx.expected_version is not None:
                raise VersionConflict(
                    f"nothing has moved at {location_id} yet, so it has no version "
                    f"{ctx.expected_version}"
                )
            return StockItem.open(ctx.merchant_id, str(product.id), location_id)
        self._check_version(ctx, item)
        return item
