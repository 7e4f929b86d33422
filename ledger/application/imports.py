"""Importing orders from other channels, in bulk.

Each finished order becomes a completed sale; an open one, an open sale holding its stock
(refused, that order alone, when its location cannot cover it). A sale's id derives from
(merchant, channel, external order id), so importing it twice can never record it twice.
Its `SaleImported` event keeps a fingerprint of the order: a re-import with the same
content is a DUPLICATE, with different content a CONFLICT; neither records anything.
New sales of a chunk, and the stock they move, are saved in one transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from ledger.application.base import MAX_ATTEMPTS
from ledger.application.context import Context
from ledger.application.fingerprint import canonical_json
from ledger.application.sales import SalesCommands
from ledger.domain import commands as c
from ledger.domain.customer import Customer
from ledger.domain.errors import DomainError, InvalidRequest, RuleViolated, VersionConflict
from ledger.domain.inventory import StockItem, stock_item_id
from ledger.domain.product import Product
from ledger.domain.sale import Sale

IMPORT_NAMESPACE = uuid.UUID("3c9e1f70-5b2a-4d8c-9e41-7a6b0d2c8f13")
CHUNK_SIZE = 250  # orders per transaction


class ImportStatus(StrEnum):
    IMPORTED = "imported"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ImportResult:
    status: ImportStatus
    sale_id: str = ""
    message: str = ""


def imported_sale_id(merchant_id: str, channel: str, external_order_id: str) -> UUID:
    return uuid.uuid5(IMPORT_NAMESPACE, f"{merchant_id}\x1f{channel}\x1f{external_order_id}")


def order_fingerprint(order: c.ImportOrder) -> str:
    canonical = canonical_json(order)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class _Pending:
    index: int
    order: c.ImportOrder
    sale_id: UUID
    fingerprint: str


class ImportCommands(SalesCommands):
    def import_sales(
        self, ctx: Context, orders: list[c.ImportOrder | InvalidRequest]
    ) -> list[ImportResult]:
        """One result per order, in order. Invalid orders are rejected, not raised."""
        results: dict[int, ImportResult] = {}
        pending: list[_Pending] = []
        for index, order in enumerate(orders):
            try:
                if isinstance(order, InvalidRequest):
                    raise order
                c.validate_import(order)
            except InvalidRequest as e:
                results[index] = ImportResult(ImportStatus.REJECTED, message=e.message)
                continue
            sale_id = imported_sale_id(ctx.merchant_id, order.channel, order.external_order_id)
            pending.append(_Pending(index, order, sale_id, order_fingerprint(order)))
        for start in range(0, len(pending), CHUNK_SIZE):
            results.update(self._import_splitting(ctx, pending[start : start + CHUNK_SIZE]))
        return [results[i] for i in range(len(orders))]

    def _import_splitting(self, ctx: Context, chunk: list[_Pending]) -> dict[int, ImportResult]:
        """Imports a chunk; if it keeps losing races (live sales moving the same stock
        items), imports its halves instead: a smaller save holds its reads for less time.
        """
        try:
            return self._import_chunk(ctx, chunk, attempts=3 if len(chunk) > 1 else MAX_ATTEMPTS)
        except VersionConflict:
            if len(chunk) == 1:
                raise
        half = len(chunk) // 2
        return {
            **self._import_splitting(ctx, chunk[:half]),
            **self._import_splitting(ctx, chunk[half:]),
        }

    def _import_chunk(
        self, ctx: Context, chunk: list[_Pending], attempts: int
    ) -> dict[int, ImportResult]:
        fresh = False
        for _ in range(attempts):
            with self._reading(fresh=fresh) as reads:
                results, aggregates = self._decide_chunk(ctx, chunk)
                rejected_on_cache = reads.used_cache and any(
                    r.status is ImportStatus.REJECTED for r in results.values()
                )
            if rejected_on_cache:
                fresh = True  # refused on cached state, which may be behind: confirm
                continue
            try:
                self._save_decision(
                    aggregates, reads, event_metadata=ctx.event_metadata(aggregates)
                )
            except IntegrityError:
                fresh = True  # a concurrent writer got there first: decide again
                continue
            return results
        raise VersionConflict(
            f"gave up importing after {attempts} attempts: the data is changing too fast",
            reason="CONCURRENT_MODIFICATION",
        )

    def _decide_chunk(
        self, ctx: Context, chunk: list[_Pending]
    ) -> tuple[dict[int, ImportResult], list[Any]]:
        """Each order's result, and the new sales and the stock items they move."""
        results: dict[int, ImportResult] = {}
        new_sales: list[Sale] = []
        stock: dict[UUID, StockItem] = {}
        products: dict[str, Product | None] = {}
        # Fingerprints of orders imported before, then of this chunk's new sales.
        known_orders = self._imported_fingerprints([p.sale_id for p in chunk])
        for p in chunk:
            sale_id = str(p.sale_id)
            known = known_orders.get(p.sale_id)
            if known is not None:
                status = ImportStatus.DUPLICATE if known == p.fingerprint else ImportStatus.CONFLICT
                message = (
                    ""
                    if status is ImportStatus.DUPLICATE
                    else "imported before with different content; nothing was changed"
                )
                results[p.index] = ImportResult(status, sale_id, message)
                continue
            try:
                if p.order.customer_id:
                    self._load(Customer, ctx.merchant_id, p.order.customer_id, "CUSTOMER_NOT_FOUND")
                lines = self._price_lines(
                    ctx.merchant_id, p.order.currency_code, p.order.line_items, products
                )
                sale = Sale.import_order(
                    p.sale_id, ctx.merchant_id, replace(p.order, line_items=lines), p.fingerprint
                )
                short = self._short_of(sale, stock)
                if short:
                    raise RuleViolated(short, reason="INSUFFICIENT_STOCK")
            except DomainError as e:
                results[p.index] = ImportResult(ImportStatus.REJECTED, message=e.message)
                continue
            # In order: an open order is checked against what the orders before it left.
            self._stock_effects(sale, stock)
            new_sales.append(sale)
            known_orders[p.sale_id] = p.fingerprint
            results[p.index] = ImportResult(ImportStatus.IMPORTED, sale_id)
        return results, [*new_sales, *stock.values()]

    def _short_of(self, sale: Sale, stock: dict[UUID, StockItem]) -> str:
        """Why an open order's location cannot cover what it would reserve ("" if it can).
        Reads only: a refused order must leave the batch's stock items untouched."""
        if sale.may_oversell or not sale.holds_stock:
            return ""
        short = []
        for product, units in sorted(sale.reservation().items()):
            key = stock_item_id(sale.merchant_id, product, sale.location_id)
            item = stock.get(key) or self._find(StockItem, sale.merchant_id, key, copy=False)
            available = 0 if item is None else item.available
            if units > available:
                short.append(f"product {product} has {max(available, 0)} available, needs {units}")
        if not short:
            return ""
        return f"INSUFFICIENT_STOCK at {sale.location_id}: " + "; ".join(short)

    def _imported_fingerprints(self, sale_ids: list[UUID]) -> dict[UUID, str]:
        """Orders imported before, by sale id (ids embed the merchant), in one query."""
        stored = self.event_log.events_of(sale_ids, topic=Sale.Imported.TOPIC)
        events = [self.mapper.to_domain_event(s) for s in stored]
        return {e.originator_id: e.fingerprint for e in events if isinstance(e, Sale.Imported)}
