"""The ledger application: one method per command, each shaped load → decide → save."""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.domain import MutableOrImmutableAggregate

from ledger.application.catalog import CatalogCommands
from ledger.application.context import Context, Outcome
from ledger.application.customers import CustomerCommands
from ledger.application.imports import ImportCommands, ImportResult, ImportStatus
from ledger.application.inventory import InventoryCommands
from ledger.application.sales import SaleResult
from ledger.domain.inventory import StockItem


class Ledger(ImportCommands, CatalogCommands, CustomerCommands, InventoryCommands):
    """Sales, catalog, customers and stock, stored as events in PostgreSQL."""

    name = "Ledger"  # events live in the table `ledger_events`
    # A stock item records every sale of its product at its location, so its history grows
    # without end; snapshots keep loading it fast. Sales and the rest stay short.
    snapshotting_intervals: ClassVar[dict[type[MutableOrImmutableAggregate[Any]], int]] = {
        StockItem: 100
    }


__all__ = ["Context", "ImportResult", "ImportStatus", "Ledger", "Outcome", "SaleResult"]
