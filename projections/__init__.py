"""Read models built from the event log: orders, inventory, customers, catalog.

Each view module holds its tables' SQL and how events change its rows. They read the log
through `ledger.event_log.EventLog`, never the application. `runner.Projections` keeps them
current, each of its jobs in a module of its own: `registry` (the table of views and their
positions), `follow` (catch-up in pages, live, standby, reconnect: exactly once),
`rebuild` (a new generation from the log, then a switch) and `status` (lag). `source`
reads the log for them. The query RPCs read through `queries` (what each reads), `reader`
(where: the live generation, followed and caught up) and `paging` (keyset tokens).
"""

from __future__ import annotations

from ledger.event_log import EventLog
from projections.catalog import CatalogView
from projections.customers import CustomersView
from projections.inventory import InventoryView
from projections.orders import OrdersView
from projections.runner import Projections
from projections.view import View


def all_views(log: EventLog) -> list[View]:
    return [OrdersView(log), InventoryView(), CustomersView(log), CatalogView(log)]


def projections_for(log: EventLog) -> Projections:
    """The ledger's views and their runner; `log` is `Ledger.event_log`."""
    return Projections(log, all_views(log))


__all__ = ["Projections", "View", "all_views", "projections_for"]
