"""InventoryService: requests → stock commands, stock items, levels and movements → messages."""

from __future__ import annotations

import uuid
from typing import Any

from ledger.domain import inventory as d
from ledger.domain.inventory import StockItem
from ledger.grpc.context import timestamp
from ledger.v1 import inventory_pb2 as pb
from projections.inventory import COUNTERS

REASONS = {
    pb.ADJUSTMENT_REASON_DAMAGE: d.AdjustmentReason.DAMAGE,
    pb.ADJUSTMENT_REASON_THEFT: d.AdjustmentReason.THEFT,
    pb.ADJUSTMENT_REASON_LOSS: d.AdjustmentReason.LOSS,
    pb.ADJUSTMENT_REASON_CORRECTION: d.AdjustmentReason.CORRECTION,
    pb.ADJUSTMENT_REASON_RETURN_TO_STOCK: d.AdjustmentReason.RETURN_TO_STOCK,
    pb.ADJUSTMENT_REASON_OTHER: d.AdjustmentReason.OTHER,
}


def stock_item_message(item: StockItem) -> pb.StockItem:
    return pb.StockItem(
        product_id=item.product_id,
        location_id=item.location_id,
        version=item.version,
        on_hand=item.on_hand,
        reserved=item.reserved,
        available=item.available,
        received=item.received,
        sold=item.sold,
        returned=item.returned,
        adjusted=item.adjusted,
        transferred_in=item.transferred_in,
        transferred_out=item.transferred_out,
        count_variance=item.count_variance,
        last_count=item.last_count,
        last_count_variance=item.last_count_variance,
        last_counted_at=timestamp(item.last_counted_at),
        updated_at=timestamp(item.modified_on),
    )


def empty_stock_item(product_id: str, location_id: str) -> pb.StockItem:
    """The stock of a product that never moved at a location (`product_id` is valid)."""
    # The id as the ledger spells it (the request may use upper case, say), as it is
    # answered once the product has moved there.
    return pb.StockItem(product_id=str(uuid.UUID(product_id)), location_id=location_id)


REASONS_BY_NAME = {v.value: k for k, v in REASONS.items()}
MOVEMENT_KINDS = {
    "received": pb.MOVEMENT_KIND_RECEIVED,
    "adjusted": pb.MOVEMENT_KIND_ADJUSTED,
    "counted": pb.MOVEMENT_KIND_COUNTED,
    "transferred_out": pb.MOVEMENT_KIND_TRANSFERRED_OUT,
    "transferred_in": pb.MOVEMENT_KIND_TRANSFERRED_IN,
    "sold": pb.MOVEMENT_KIND_SOLD,
    "returned": pb.MOVEMENT_KIND_RETURNED,
    "reserved": pb.MOVEMENT_KIND_RESERVED,
    "reservation_released": pb.MOVEMENT_KIND_RESERVATION_RELEASED,
}


def level_message(row: dict[str, Any]) -> pb.StockLevel:
    """A stock level as the inventory view holds it."""
    item = pb.StockItem(
        product_id=row["product_id"],
        location_id=row["location_id"],
        version=row["version"],
        last_counted_at=timestamp(row["last_counted_at"]),
        updated_at=timestamp(row["last_movement_at"]),
        available=row["on_hand"] - row["reserved"],
        **{name: row[name] for name in COUNTERS},
    )
    return pb.StockLevel(stock_item=item, last_movement_at=timestamp(row["last_movement_at"]))


def movement_message(row: dict[str, Any]) -> pb.StockMovement:
    return pb.StockMovement(
        position=row["position"],
        kind=MOVEMENT_KINDS[row["kind"]],
        quantity=row["quantity"],
        on_hand_after=row["on_hand_after"],
        reserved=row["reserved"],
        reserved_after=row["reserved_after"],
        reason=REASONS_BY_NAME.get(row["reason"], pb.ADJUSTMENT_REASON_UNSPECIFIED),
        reference=row["reference"],
        note=row["note"],
        sale_id=row["sale_id"],
        other_location_id=row["other_location_id"],
        occurred_at=timestamp(row["occurred_at"]),
    )


def receive_stock(req: pb.ReceiveStockRequest) -> d.ReceiveStock:
    return d.ReceiveStock(
        product_id=req.product_id,
        location_id=req.location_id,
        quantity=req.quantity,
        reference=req.reference,
        note=req.note,
    )


def adjust_stock(req: pb.AdjustStockRequest) -> d.AdjustStock:
    return d.AdjustStock(
        product_id=req.product_id,
        location_id=req.location_id,
        quantity=req.quantity,
        reason=REASONS.get(req.reason),
        note=req.note,
    )


def record_stock_count(req: pb.RecordStockCountRequest) -> d.RecordStockCount:
    return d.RecordStockCount(
        product_id=req.product_id,
        location_id=req.location_id,
        counted_quantity=req.counted_quantity,
        note=req.note,
    )


def transfer_stock(req: pb.TransferStockRequest) -> d.TransferStock:
    return d.TransferStock(
        product_id=req.product_id,
        from_location_id=req.from_location_id,
        to_location_id=req.to_location_id,
        quantity=req.quantity,
        reference=req.reference,
        note=req.note,
    )
