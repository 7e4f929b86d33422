"""Reading the views: filters, keyset pages, and read-your-writes via `min_position`.

Each query finds the view's live generation in the registry, first waiting (bounded) until
the view has applied the log up to `min_position` when the caller gives one.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from eventsourcing.persistence import ProgrammingError
from psycopg import Cursor
from psycopg.errors import InvalidSchemaName, UndefinedTable
from psycopg.rows import DictRow

from ledger.domain.errors import NotFound, NotYetVisible, ViewsNotRunning
from ledger.domain.validation import Checks
from ledger.limits import Slots, Watch
from projections import catalog, customers, inventory, orders, paging
from projections.runner import Projections
from projections.view import q

FOLLOWED_CACHE_SECONDS = 1.0  # how long a query trusts the last look at who runs the views
P = ParamSpec("P")
R = TypeVar("R")


def _switch_safe(query: Callable[P, R]) -> Callable[P, R]:
    """Runs a query again if a rebuild dropped the generation it had just looked up."""

    @functools.wraps(query)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for _ in range(2):
            try:
                return query(*args, **kwargs)
            except ProgrammingError as e:
                if not isinstance(e.__cause__, (UndefinedTable, InvalidSchemaName)):
                    raise
        return query(*args, **kwargs)

    return run


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_page_token: str
    position: int
    # Extra rows by key, e.g. the line items of each sale.
    related: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class SaleFilters:
    status: str | None = None
    channel: str | None = None
    location_id: str | None = None
    customer_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class ReadModels:
    def __init__(
        self,
        projections: Projections,
        *,
        wait_seconds: float = 5.0,
        require_runner: bool = False,
        waits: Slots | None = None,
        positions: Watch[dict[str, int]] | None = None,
    ) -> None:
        self.projections = projections
        self.wait_seconds = wait_seconds
        # A served query that has to wait for its view takes one of the capped wait slots,
        # and waits on the server's shared watch of the views instead of polling each.
        self.waits = waits
        self.positions = positions
        self.datastore = projections.datastore
        # Served queries refuse to read a view that no runner follows (a stale page that
        # looks current); tests and tools that catch views up themselves may read anyway.
        self.require_runner = require_runner
        self._followed: tuple[float, set[str]] = (0.0, set())

    def _check_followed(self, view: str) -> None:
        if not self.require_runner:
            return
        checked_at, followed = self._followed
        if time.monotonic() - checked_at > FOLLOWED_CACHE_SECONDS or view not in followed:
            followed = self.projections.followed()
            self._followed = (time.monotonic(), followed)
        if view not in followed:
            raise ViewsNotRunning(
                f"no projections runner keeps the {view} view up to date; start one "
                "(`posledger serve` runs them unless --no-projections, or "
                "`posledger projections run`)"
            )

    def _reached(self, merchant_id: str, view: str, min_position: int) -> bool:
        if self.positions is None or self.waits is None:
            return self.projections.wait_for(view, min_position, self.wait_seconds)
        if self.projections.live_schema(view)[1] >= min_position:
            return True  # no need to park
        with self.waits.held(merchant_id):
            return self.positions.wait(
                lambda positions: positions.get(view, 0) >= min_position, self.wait_seconds
            )

    @contextmanager
    def _view(
        self, merchant_id: str, view: str, min_position: int
    ) -> Iterator[tuple[Cursor[DictRow], str, int]]:
        if min_position < 0:
            checks = Checks()
            checks.fail("min_position", "must not be negative")
            checks.raise_if_any()
        self._check_followed(view)
        if min_position and not self._reached(merchant_id, view, min_position):
            raise NotYetVisible(
                f"the {view} view has not reached position {min_position} yet; retry shortly"
            )
        schema, position = self.projections.live_schema(view)
        with self.datastore.transaction() as curs:
            yield curs, schema, position

    def _page(
        self, listing: str, rows: list[DictRow], limit: int, key: list[str], position: int
    ) -> tuple[list[dict[str, Any]], str, int]:
        rows_out = [dict(r) for r in rows[:limit]]
        token = ""
        if len(rows) > limit:
            last = rows_out[-1]
            token = paging.encode(listing, [last[k] for k in key])
        return rows_out, token, position

    # ---- sales ----------------------------------------------------------------------------

    @_switch_safe
    def list_sales(
        self,
        merchant_id: str,
        filters: SaleFilters,
        *,
        page_size: int = 0,
        page_token: str = "",
        min_position: int = 0,
    ) -> Page:
        limit = paging.page_size(page_size)
        paging.check_filters(location_id=filters.location_id, customer_id=filters.customer_id)
        after = paging.decode("sales", page_token, 2, (paging.moment, paging.uuid_text)) or [
            None,
            None,
        ]
        with self._view(merchant_id, "orders", min_position) as (curs, schema, position):
            curs.execute(
                q(orders.LIST_SALES, schema),
                {
                    "merchant_id": merchant_id,
                    **vars(filters),
                    "after_created": after[0],
                    "after_id": after[1],
                    "limit": limit + 1,
                },
            )
            found = curs.fetchall()
            rows, token, position = self._page(
                "sales", found, limit, ["created_at", "sale_id"], position
            )
            curs.execute(q(orders.LINES_OF, schema), ([r["sale_id"] for r in rows],))
            lines: dict[Any, list[dict[str, Any]]] = {}
            for line in curs.fetchall():
                lines.setdefault(line["sale_id"], []).append(dict(line))
        return Page(rows, token, position, lines)

    @_switch_safe
    def find_payments(
        self,
        merchant_id: str,
        *,
        payment_id: str | None = None,
        processor_reference: str | None = None,
        state: str | None = None,
        owed_only: bool = False,
        page_size: int = 0,
        page_token: str = "",
        min_position: int = 0,
    ) -> Page:
        """Payments of the merchant's sales (orders view), newest request first."""
        limit = paging.page_size(page_size)
        after = paging.decode("payments", page_token, 2, (paging.moment, paging.text)) or [
            None,
            None,
        ]
        with self._view(merchant_id, "orders", min_position) as (curs, schema, position):
            curs.execute(
                q(orders.FIND_PAYMENTS, schema),
                {
                    "merchant_id": merchant_id,
                    "payment_id": payment_id,
                    "processor_reference": processor_reference,
                    "state": state,
                    "owed_only": owed_only,
                    "after_requested": after[0],
                    "after_id": after[1],
                    "limit": limit + 1,
                },
            )
            rows, token, position = self._page(
                "payments", curs.fetchall(), limit, ["requested_at", "payment_id"], position
            )
        return Page(rows, token, position)

    # ---- catalog --------------------------------------------------------------------------

    @_switch_safe
    def list_products(
        self,
        merchant_id: str,
        *,
        query: str = "",
        status: str | None = None,
        category: str = "",
        page_size: int = 0,
        page_token: str = "",
        min_position: int = 0,
    ) -> Page:
        limit = paging.page_size(page_size)
        paging.check_filters(query=query, category=category)
        after = paging.decode("products", page_token, 1, (paging.text,)) or [None]
        with self._view(merchant_id, "catalog", min_position) as (curs, schema, position):
            curs.execute(
                q(catalog.LIST_PRODUCTS, schema),
                {
                    "merchant_id": merchant_id,
                    "query": query or None,
                    "prefix": paging.like_prefix(query),
                    "infix": "%" + paging.like_prefix(query),
                    "status": status,
                    "category": category or None,
                    "after_sku": after[0],
                    "limit": limit + 1,
                },
            )
            rows, token, position = self._page(
                "products", curs.fetchall(), limit, ["sku"], position
            )
        return Page(rows, token, position)

    # ---- customers ------------------------------------------------------------------------

    @_switch_safe
    def list_customers(
        self,
        merchant_id: str,
        *,
        query: str = "",
        tag: str = "",
        page_size: int = 0,
        page_token: str = "",
        min_position: int = 0,
    ) -> Page:
        limit = paging.page_size(page_size)
        paging.check_filters(query=query, tag=tag)
        after = paging.decode("customers", page_token, 2, (paging.text, paging.text)) or [
            None,
            None,
        ]
        with self._view(merchant_id, "customers", min_position) as (curs, schema, position):
            curs.execute(
                q(customers.LIST_CUSTOMERS, schema),
                {
                    "merchant_id": merchant_id,
                    "query": query or None,
                    "prefix": paging.like_prefix(query.lower()),
                    "infix": "%" + paging.like_prefix(query),
                    "tag": tag or None,
                    "after_name": after[0],
                    "after_id": after[1],
                    "limit": limit + 1,
                },
            )
            rows, token, position = self._page(
                "customers", curs.fetchall(), limit, ["name", "customer_id"], position
            )
            related = self._purchases(curs, schema, merchant_id, [r["customer_id"] for r in rows])
        return Page(rows, token, position, related)

    @_switch_safe
    def customer_summary(
        self, merchant_id: str, customer_id: str, *, min_position: int = 0
    ) -> Page:
        with self._view(merchant_id, "customers", min_position) as (curs, schema, position):
            curs.execute(q(customers.GET_CUSTOMER, schema), (merchant_id, customer_id))
            row = curs.fetchone()
            if row is None:
                raise NotFound(f"customer {customer_id} not found", reason="CUSTOMER_NOT_FOUND")
            related = self._purchases(curs, schema, merchant_id, [customer_id])
        return Page([dict(row)], "", position, related)

    def _purchases(
        self, curs: Cursor[DictRow], schema: str, merchant_id: str, ids: list[str]
    ) -> dict[Any, list[dict[str, Any]]]:
        """Per customer id: its stats row first (if any), then one row per currency."""
        related: dict[Any, list[dict[str, Any]]] = {i: [] for i in ids}
        curs.execute(q(customers.STATS_OF, schema), (merchant_id, ids))
        for r in curs.fetchall():
            related[r["customer_id"]].insert(0, {"stats": True, **r})
        curs.execute(q(customers.SPEND_OF, schema), (merchant_id, ids))
        for r in curs.fetchall():
            related[r["customer_id"]].append(dict(r))
        return related

    # ---- inventory ------------------------------------------------------------------------

    @_switch_safe
    def list_stock_levels(
        self,
        merchant_id: str,
        *,
        location_id: str = "",
        product_id: str = "",
        negative_only: bool = False,
        page_size: int = 0,
        page_token: str = "",
        min_position: int = 0,
    ) -> Page:
        limit = paging.page_size(page_size)
        paging.check_filters(location_id=location_id, product_id=product_id)
        after = paging.decode("stock_levels", page_token, 2, (paging.text, paging.text)) or [
            None,
            None,
        ]
        with self._view(merchant_id, "inventory", min_position) as (curs, schema, position):
            curs.execute(
                q(inventory.LIST_LEVELS, schema),
                {
                    "merchant_id": merchant_id,
                    "location_id": location_id or None,
                    "product_id": product_id or None,
                    "negative_only": negative_only,
                    "after_location": after[0],
                    "after_product": after[1],
                    "limit": limit + 1,
                },
            )
            rows, token, position = self._page(
                "stock_levels", curs.fetchall(), limit, ["location_id", "product_id"], position
            )
        return Page(rows, token, position)

    @_switch_safe
    def stock_level(
        self, merchant_id: str, product_id: str, location_id: str, *, min_position: int = 0
    ) -> Page:
        product_id = _stock_key(product_id, location_id)
        with self._view(merchant_id, "inventory", min_position) as (curs, schema, position):
            curs.execute(q(inventory.GET_LEVEL, schema), (merchant_id, product_id, location_id))
            row = curs.fetchone()
        if row is None:
            raise NotFound(
                f"no stock of product {product_id} has moved at {location_id}",
                reason="STOCK_LEVEL_NOT_FOUND",
            )
        return Page([dict(row)], "", position)

    @_switch_safe
    def list_movements(
        self,
        merchant_id: str,
        product_id: str,
        location_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        min_position: int = 0,
    ) -> Page:
        limit = paging.page_size(page_size)
        product_id = _stock_key(product_id, location_id)
        after = paging.decode("movements", page_token, 1, (paging.integer,)) or [None]
        with self._view(merchant_id, "inventory", min_position) as (curs, schema, position):
            curs.execute(
                q(inventory.LIST_MOVEMENTS, schema),
                {
                    "merchant_id": merchant_id,
                    "product_id": product_id,
                    "location_id": location_id,
                    "after_position": after[0],
                    "limit": limit + 1,
                },
            )
            rows, token, position = self._page(
                "movements", curs.fetchall(), limit, ["position"], position
            )
        return Page(rows, token, position)


def _stock_key(product_id: str, location_id: str) -> str:
    """Checks the (product, location) a stock query names; the product id in canonical form."""
    checks = Checks()
    checks.uuid("product_id", product_id)
    checks.text("location_id", location_id, max_len=64, required=True)
    checks.raise_if_any()
    return str(uuid.UUID(product_id))
