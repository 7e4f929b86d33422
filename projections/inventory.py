"""The inventory view: stock levels per (product, location) and every movement.

Stock items have long histories (every sale of a product at a location), so this view
applies their events incrementally: it reads the current rows of the items a page touches,
applies the page in memory with the aggregate's own arithmetic (`StockLevel.move`), and
writes the rows and movements back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.domain.customer import Customer, ExternalIdClaim
from ledger.domain.inventory import StockItem, StockLevel
from ledger.domain.product import Product
from ledger.domain.sale import Sale
from projections.view import Event, View, copy_rows, q

DDL = (
    """CREATE TABLE IF NOT EXISTS {schema}.stock_levels (
        stock_item_id uuid PRIMARY KEY,
        merchant_id text NOT NULL,
        product_id text NOT NULL,
        location_id text NOT NULL,
        version bigint NOT NULL,
        on_hand bigint NOT NULL,
        received bigint NOT NULL,
        sold bigint NOT NULL,
        returned bigint NOT NULL,
        adjusted bigint NOT NULL,
        transferred_in bigint NOT NULL,
        transferred_out bigint NOT NULL,
        count_variance bigint NOT NULL,
        last_count bigint NOT NULL,
        last_count_variance bigint NOT NULL,
        last_counted_at timestamptz,
        last_movement_at timestamptz NOT NULL)""",
    # Added with reservations; a view created before them had none, hence the default.
    """ALTER TABLE {schema}.stock_levels
        ADD COLUMN IF NOT EXISTS reserved bigint NOT NULL DEFAULT 0""",
    """CREATE INDEX IF NOT EXISTS stock_levels_by_location
        ON {schema}.stock_levels (merchant_id, location_id, product_id)""",
    """CREATE TABLE IF NOT EXISTS {schema}.stock_movements (
        position bigint PRIMARY KEY,
        stock_item_id uuid NOT NULL,
        merchant_id text NOT NULL,
        product_id text NOT NULL,
        location_id text NOT NULL,
        kind text NOT NULL,
        quantity bigint NOT NULL,
        on_hand_after bigint NOT NULL,
        reason text NOT NULL,
        reference text NOT NULL,
        note text NOT NULL,
        sale_id text NOT NULL,
        other_location_id text NOT NULL,
        occurred_at timestamptz NOT NULL)""",
    """ALTER TABLE {schema}.stock_movements
        ADD COLUMN IF NOT EXISTS reserved bigint NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS reserved_after bigint NOT NULL DEFAULT 0""",
    """CREATE INDEX IF NOT EXISTS stock_movements_by_item
        ON {schema}.stock_movements (stock_item_id, position DESC)""",
)

SELECT_LEVELS = "SELECT * FROM {schema}.stock_levels WHERE stock_item_id = ANY(%s)"
UPSERT_LEVEL = """
    INSERT INTO {schema}.stock_levels (
        stock_item_id, merchant_id, product_id, location_id, version, on_hand, reserved,
        received, sold, returned, adjusted, transferred_in, transferred_out, count_variance,
        last_count, last_count_variance, last_counted_at, last_movement_at)
    VALUES (
        %(stock_item_id)s, %(merchant_id)s, %(product_id)s, %(location_id)s, %(version)s,
        %(on_hand)s, %(reserved)s, %(received)s, %(sold)s, %(returned)s, %(adjusted)s,
        %(transferred_in)s, %(transferred_out)s, %(count_variance)s, %(last_count)s,
        %(last_count_variance)s, %(last_counted_at)s, %(last_movement_at)s)
    ON CONFLICT (stock_item_id) DO UPDATE SET
        version = excluded.version, on_hand = excluded.on_hand, reserved = excluded.reserved,
        received = excluded.received, sold = excluded.sold, returned = excluded.returned,
        adjusted = excluded.adjusted, transferred_in = excluded.transferred_in,
        transferred_out = excluded.transferred_out, count_variance = excluded.count_variance,
        last_count = excluded.last_count, last_count_variance = excluded.last_count_variance,
        last_counted_at = excluded.last_counted_at, last_movement_at = excluded.last_movement_at"""

# The level's counters as the view's columns (and the wire's StockItem fields).
COUNTERS = tuple(f.name for f in fields(StockLevel) if f.name != "last_counted_at")


class InventoryView(View):
    name = "inventory"
    handles = (
        StockItem.Created,
        StockItem.Received,
        StockItem.Adjusted,
        StockItem.Counted,
        StockItem.TransferredOut,
        StockItem.TransferredIn,
        StockItem.Sold,
        StockItem.Returned,
        StockItem.Reserved,
        StockItem.ReservationReleased,
        StockItem.SoldFromReservation,
    )
    ignores = (Sale, Product, Customer, ExternalIdClaim)
    ddl = DDL
    tables = ("stock_levels", "stock_movements")

    def apply(self, curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        if not events:
            return
        curs.execute(q(SELECT_LEVELS, schema), (list({e.originator_id for e in events}),))
        rows: dict[Any, dict[str, Any]] = {row["stock_item_id"]: dict(row) for row in curs}
        levels = {key: StockLevel.of(row) for key, row in rows.items()}
        movements = []
        for e in events:
            if isinstance(e.event, StockItem.Created):
                rows[e.originator_id] = {
                    "stock_item_id": e.originator_id,
                    "merchant_id": e.event.merchant_id,
                    "product_id": e.event.product_id,
                    "location_id": e.event.location_id,
                }
                levels[e.originator_id] = StockLevel()
            else:
                level = levels[e.originator_id]
                row = rows[e.originator_id]
                movement = level.move(e.event)
                movements.append(
                    {
                        "position": e.position,
                        "stock_item_id": e.originator_id,
                        "merchant_id": row["merchant_id"],
                        "product_id": row["product_id"],
                        "location_id": row["location_id"],
                        **asdict(movement),
                        "on_hand_after": level.on_hand,
                        "reserved_after": level.reserved,
                        "occurred_at": e.event.timestamp,
                    }
                )
            rows[e.originator_id]["version"] = e.originator_version
            rows[e.originator_id]["last_movement_at"] = e.event.timestamp
        for key, row in rows.items():
            row.update(levels[key].values())
        curs.executemany(q(UPSERT_LEVEL, schema), list(rows.values()))
        copy_rows(curs, schema, "stock_movements", movements)


# ---- queries ---------------------------------------------------------------------------------

LIST_LEVELS = """
    SELECT * FROM {schema}.stock_levels
    WHERE merchant_id = %(merchant_id)s
      AND (%(location_id)s::text IS NULL OR location_id = %(location_id)s)
      AND (%(product_id)s::text IS NULL OR product_id = %(product_id)s)
      AND (NOT %(negative_only)s OR on_hand < 0)
      AND (%(after_location)s::text IS NULL
           OR (location_id, product_id) > (%(after_location)s, %(after_product)s))
    ORDER BY location_id, product_id
    LIMIT %(limit)s"""
GET_LEVEL = """
    SELECT * FROM {schema}.stock_levels
    WHERE merchant_id = %s AND product_id = %s AND location_id = %s"""
LIST_MOVEMENTS = """
    SELECT * FROM {schema}.stock_movements
    WHERE merchant_id = %(merchant_id)s AND product_id = %(product_id)s
      AND location_id = %(location_id)s
      AND (%(after_position)s::bigint IS NULL OR position < %(after_position)s)
    ORDER BY position DESC
    LIMIT %(limit)s"""
