"""The catalog view: products with their current price and status, searchable."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.domain.customer import Customer, ExternalIdClaim
from ledger.domain.inventory import StockItem
from ledger.domain.product import Product
from ledger.domain.sale import Sale
from ledger.event_log import EventLog
from projections import source
from projections.view import Event, View, q

DDL = (
    """CREATE TABLE IF NOT EXISTS {schema}.products (
        product_id uuid PRIMARY KEY,
        merchant_id text NOT NULL,
        version bigint NOT NULL,
        sku text NOT NULL,
        name text NOT NULL,
        price bigint NOT NULL,
        currency_code text NOT NULL,
        tax_rate_ppm bigint NOT NULL,
        barcode text NOT NULL,
        category text NOT NULL,
        status text NOT NULL,
        discontinue_reason text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS products_by_sku ON {schema}.products (merchant_id, sku)""",
)

UPSERT = """
    INSERT INTO {schema}.products VALUES (
        %(product_id)s, %(merchant_id)s, %(version)s, %(sku)s, %(name)s, %(price)s,
        %(currency_code)s, %(tax_rate_ppm)s, %(barcode)s, %(category)s, %(status)s,
        %(discontinue_reason)s, %(created_at)s, %(updated_at)s)
    ON CONFLICT (product_id) DO UPDATE SET
        version = excluded.version, name = excluded.name, price = excluded.price,
        currency_code = excluded.currency_code, tax_rate_ppm = excluded.tax_rate_ppm,
        barcode = excluded.barcode, category = excluded.category, status = excluded.status,
        discontinue_reason = excluded.discontinue_reason, updated_at = excluded.updated_at"""


class CatalogView(View):
    name = "catalog"
    handles = (Product.Created, Product.Updated, Product.Discontinued, Product.Reactivated)
    ignores = (Sale, StockItem, Customer, ExternalIdClaim)
    ddl = DDL
    tables = ("products",)

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def apply(self, curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        products = source.aggregates_at(self.log, source.latest_versions(events, Product))
        if products:
            curs.executemany(
                q(UPSERT, schema),
                [
                    {
                        "product_id": p.id,
                        "merchant_id": p.merchant_id,
                        "version": p.version,
                        "sku": p.sku,
                        "name": p.name,
                        "price": p.price,
                        "currency_code": p.currency_code,
                        "tax_rate_ppm": p.tax_rate_ppm,
                        "barcode": p.barcode,
                        "category": p.category,
                        "status": "discontinued" if p.is_discontinued else "active",
                        "discontinue_reason": p.discontinue_reason,
                        "created_at": p.created_on,
                        "updated_at": p.modified_on,
                    }
                    for p in products.values()
                ],
            )


# ---- queries ---------------------------------------------------------------------------------

LIST_PRODUCTS = """
    SELECT * FROM {schema}.products
    WHERE merchant_id = %(merchant_id)s
      AND (%(query)s::text IS NULL OR sku LIKE %(prefix)s OR barcode = %(query)s
           OR name ILIKE %(infix)s)
      AND (%(status)s::text IS NULL OR status = %(status)s)
      AND (%(category)s::text IS NULL OR category = %(category)s)
      AND (%(after_sku)s::text IS NULL OR sku > %(after_sku)s)
    ORDER BY sku
    LIMIT %(limit)s"""
