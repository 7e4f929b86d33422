"""Read models built from the event log: orders, inventory, customers, catalog.

Each view module holds its tables' SQL and how events change its rows; `runner.py` keeps
them up to date (exactly once, catch-up in pages, live, standby, rebuild, status).
"""

from __future__ import annotations

from ledger.application import Ledger
from projections.catalog import CatalogView
from projections.customers import CustomersView
from projections.inventory import InventoryView
from projections.orders import OrdersView
from projections.runner import Projections
from projections.view import View


def all_views(ledger: Ledger) -> list[View]:
    return [OrdersView(ledger), InventoryView(), CustomersView(ledger), CatalogView(ledger)]


def projections_for(ledger: Ledger) -> Projections:
    return Projections(ledger, all_views(ledger))


__all__ = ["Projections", "View", "all_views", "projections_for"]
