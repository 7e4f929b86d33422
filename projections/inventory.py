"""The inventory view: stock levels per (product, location) and every movement.

Stock items have long histories (every sale of a product at a location), so this view
applies their events incrementally: it reads the current rows of the items a page touches,
applies the page in memory, and writes the rows and movements back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.domain.inventory import StockItem
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
    """CREATE INDEX IF NOT EXISTS stock_movements_by_item
        ON {schema}.stock_movements (stock_item_id, position DESC)""",
)

SELECT_LEVELS = "SELECT * FROM {schema}.stock_levels WHERE stock_item_id = ANY(%s)"
UPSERT_LEVEL = """
    INSERT INTO {schema}.stock_levels VALUES (
        %(stock_item_id)s, %(merchant_id)s, %(product_id)s, %(location_id)s, %(version)s,
        %(on_hand)s, %(received)s, %(sold)s, %(returned)s, %(adjusted)s, %(transferred_in)s,
        %(transferred_out)s, %(count_variance)s, %(last_count)s, %(last_count_variance)s,
        %(last_counted_at)s, %(last_movement_at)s)
    ON CONFLICT (stock_item_id) DO UPDATE SET
        version = excluded.version, on_hand = excluded.on_hand, received = excluded.received,
        sold = excluded.sold, returned = excluded.returned, adjusted = excluded.adjusted,
        transferred_in = excluded.transferred_in, transferred_out = excluded.transferred_out,
        count_variance = excluded.count_variance, last_count = excluded.last_count,
        last_count_variance = excluded.last_count_variance,
        last_counted_at = excluded.last_counted_at, last_movement_at = excluded.last_movement_at"""

COUNTERS = (
    "on_hand", "received", "sold", "returned", "adjusted", "transferred_in", "transferred_out",
    "count_variance", "last_count", "last_count_variance",
)  # fmt: skip


def _movement(level: dict[str, Any], e: Any) -> dict[str, Any]:
    """Applies one stock event to a level row; returns what the movement row records."""
    m: dict[str, Any] = dict.fromkeys(
        ("reason", "reference", "note", "sale_id", "other_location_id"), ""
    )
    match e:
        case StockItem.Received():
            level["received"] += e.quantity
            level["on_hand"] += e.quantity
            m.update(kind="received", quantity=e.quantity, reference=e.reference, note=e.note)
        case StockItem.Adjusted():
            level["adjusted"] += e.quantity
            level["on_hand"] += e.quantity
            m.update(kind="adjusted", quantity=e.quantity, reason=e.reason, note=e.note)
        case StockItem.Counted():
            variance = e.counted_quantity - e.expected_quantity
            level["count_variance"] += variance
            level["last_count"] = e.counted_quantity
            level["last_count_variance"] = variance
            level["last_counted_at"] = e.timestamp
            level["on_hand"] = e.counted_quantity
            m.update(kind="counted", quantity=variance, note=e.note)
        case StockItem.TransferredOut():
            level["transferred_out"] += e.quantity
            level["on_hand"] -= e.quantity
            m.update(
                kind="transferred_out",
                quantity=-e.quantity,
                reference=e.reference,
                note=e.note,
                other_location_id=e.to_location_id,
            )
        case StockItem.TransferredIn():
            level["transferred_in"] += e.quantity
            level["on_hand"] += e.quantity
            m.update(
                kind="transferred_in",
                quantity=e.quantity,
                reference=e.reference,
                note=e.note,
                other_location_id=e.from_location_id,
            )
        case StockItem.Sold():
            level["sold"] += e.quantity
            level["on_hand"] -= e.quantity
            m.update(kind="sold", quantity=-e.quantity, sale_id=e.sale_id)
        case StockItem.Returned():
            level["returned"] += e.quantity
            level["on_hand"] += e.quantity
            m.update(kind="returned", quantity=e.quantity, reference=e.refund_id, sale_id=e.sale_id)
        case _:
            raise AssertionError(f"not a stock movement: {type(e).__name__}")
    return m


class InventoryView(View):
    name = "inventory"
    topics = (
        "posledger.StockItemCreated",
        "posledger.StockReceived",
        "posledger.StockAdjusted",
        "posledger.StockCounted",
        "posledger.StockTransferredOut",
        "posledger.StockTransferredIn",
        "posledger.StockSold",
        "posledger.StockReturned",
    )
    ddl = DDL
    tables = ("stock_levels", "stock_movements")

    def apply(self, curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        if not events:
            return
        curs.execute(q(SELECT_LEVELS, schema), (list({e.originator_id for e in events}),))
        levels: dict[Any, dict[str, Any]] = {row["stock_item_id"]: dict(row) for row in curs}
        movements = []
        for e in events:
            if isinstance(e.event, StockItem.Created):
                levels[e.originator_id] = {
                    "stock_item_id": e.originator_id,
                    "merchant_id": e.event.merchant_id,
                    "product_id": e.event.product_id,
                    "location_id": e.event.location_id,
                    "version": e.originator_version,
                    **dict.fromkeys(COUNTERS, 0),
                    "last_counted_at": None,
                    "last_movement_at": e.event.timestamp,
                }
                continue
            level = levels[e.originator_id]
            movement = _movement(level, e.event)
            level["version"] = e.originator_version
            level["last_movement_at"] = e.event.timestamp
            movements.append(
                {
                    "position": e.position,
                    "stock_item_id": e.originator_id,
                    "merchant_id": level["merchant_id"],
                    "product_id": level["product_id"],
                    "location_id": level["location_id"],
                    **movement,
                    "on_hand_after": level["on_hand"],
                    "occurred_at": e.event.timestamp,
                }
            )
        curs.executemany(q(UPSERT_LEVEL, schema), list(levels.values()))
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
