"""What each query RPC reads from the views: its filters, its keyset pages, its rows.

Where it reads is `reader.py`: the view's live generation, once a runner follows it and
it has applied the log up to the caller's `min_position`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.domain.errors import NotFound
from ledger.domain.validation import Checks
from projections import catalog, customers, inventory, orders, paging
from projections.reader import Page, ViewReader, switch_safe
from projections.view import q


@dataclass(frozen=True)
class SaleFilters:
    status: str | None = None
    channel: str | None = None
    location_id: str | None = None
    customer_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class ReadModels(ViewReader):
    """The query RPCs' reads, each from a view's live generation (`ViewReader.view`)."""

    # ---- sales ----------------------------------------------------------------------------

    @switch_safe
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
        with self.view(merchant_id, "orders", min_position) as (curs, schema, position):
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
            rows, token = paging.page_of("sales", found, limit, ["created_at", "sale_id"])
            curs.execute(q(orders.LINES_OF, schema), ([r["sale_id"] for r in rows],))
            lines: dict[Any, list[dict[str, Any]]] = {}
            for line in curs.fetchall():
                lines.setdefault(line["sale_id"], []).append(dict(line))
        return Page(rows, token, position, lines)

    @switch_safe
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
        with self.view(merchant_id, "orders", min_position) as (curs, schema, position):
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
            rows, token = paging.page_of(
                "payments", curs.fetchall(), limit, ["requested_at", "payment_id"]
            )
        return Page(rows, token, position)

    # ---- catalog --------------------------------------------------------------------------

    @switch_safe
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
        with self.view(merchant_id, "catalog", min_position) as (curs, schema, position):
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
            rows, token = paging.page_of("products", curs.fetchall(), limit, ["sku"])
        return Page(rows, token, position)

    # ---- customers ------------------------------------------------------------------------

    @switch_safe
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
        with self.view(merchant_id, "customers", min_position) as (curs, schema, position):
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
            rows, token = paging.page_of(
                "customers", curs.fetchall(), limit, ["name", "customer_id"]
            )
            related = self._purchases(curs, schema, merchant_id, [r["customer_id"] for r in rows])
        return Page(rows, token, position, related)

    @switch_safe
    def customer_summary(
        self, merchant_id: str, customer_id: str, *, min_position: int = 0
    ) -> Page:
        with self.view(merchant_id, "customers", min_position) as (curs, schema, position):
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

    @switch_safe
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
        with self.view(merchant_id, "inventory", min_position) as (curs, schema, position):
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
            rows, token = paging.page_of(
                "stock_levels", curs.fetchall(), limit, ["location_id", "product_id"]
            )
        return Page(rows, token, position)

    @switch_safe
    def stock_level(
        self, merchant_id: str, product_id: str, location_id: str, *, min_position: int = 0
    ) -> Page:
        product_id = _stock_key(product_id, location_id)
        with self.view(merchant_id, "inventory", min_position) as (curs, schema, position):
            curs.execute(q(inventory.GET_LEVEL, schema), (merchant_id, product_id, location_id))
            row = curs.fetchone()
        if row is None:
            raise NotFound(
                f"no stock of product {product_id} has moved at {location_id}",
                reason="STOCK_LEVEL_NOT_FOUND",
            )
        return Page([dict(row)], "", position)

    @switch_safe
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
        with self.view(merchant_id, "inventory", min_position) as (curs, schema, position):
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
            rows, token = paging.page_of("movements", curs.fetchall(), limit, ["position"])
        return Page(rows, token, position)


def _stock_key(product_id: str, location_id: str) -> str:
    """Checks the (product, location) a stock query names; the product id in canonical form."""
    checks = Checks()
    checks.uuid("product_id", product_id)
    checks.text("location_id", location_id, max_len=64, required=True)
    checks.raise_if_any()
    return str(uuid.UUID(product_id))
