"""InventoryService: wire ⇄ stock commands and state."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from ledger.application import Ledger
from ledger.domain import inventory as d
from ledger.domain.inventory import StockItem
from ledger.grpc.context import command_context, timestamp
from ledger.grpc.interceptors import current_principal
from ledger.v1 import inventory_pb2 as pb
from ledger.v1 import inventory_pb2_grpc
from projections.inventory import COUNTERS
from projections.queries import ReadModels

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


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, ledger: Ledger, reads: ReadModels) -> None:
        self.ledger = ledger
        self.reads = reads

    def ReceiveStock(
        self, request: pb.ReceiveStockRequest, context: grpc.ServicerContext
    ) -> pb.ReceiveStockResponse:
        cmd = d.ReceiveStock(
            product_id=request.product_id,
            location_id=request.location_id,
            quantity=request.quantity,
            reference=request.reference,
            note=request.note,
        )
        outcome = self.ledger.receive_stock(command_context(request), cmd)
        return pb.ReceiveStockResponse(
            stock_item=stock_item_message(outcome.aggregate), position=outcome.position
        )

    def AdjustStock(
        self, request: pb.AdjustStockRequest, context: grpc.ServicerContext
    ) -> pb.AdjustStockResponse:
        cmd = d.AdjustStock(
            product_id=request.product_id,
            location_id=request.location_id,
            quantity=request.quantity,
            reason=REASONS.get(request.reason),
            note=request.note,
        )
        outcome = self.ledger.adjust_stock(command_context(request), cmd)
        return pb.AdjustStockResponse(
            stock_item=stock_item_message(outcome.aggregate), position=outcome.position
        )

    def RecordStockCount(
        self, request: pb.RecordStockCountRequest, context: grpc.ServicerContext
    ) -> pb.RecordStockCountResponse:
        cmd = d.RecordStockCount(
            product_id=request.product_id,
            location_id=request.location_id,
            counted_quantity=request.counted_quantity,
            note=request.note,
        )
        outcome = self.ledger.record_stock_count(command_context(request), cmd)
        return pb.RecordStockCountResponse(
            stock_item=stock_item_message(outcome.aggregate), position=outcome.position
        )

    def TransferStock(
        self, request: pb.TransferStockRequest, context: grpc.ServicerContext
    ) -> pb.TransferStockResponse:
        cmd = d.TransferStock(
            product_id=request.product_id,
            from_location_id=request.from_location_id,
            to_location_id=request.to_location_id,
            quantity=request.quantity,
            reference=request.reference,
            note=request.note,
        )
        outcome = self.ledger.transfer_stock(command_context(request), cmd)
        source, target = outcome.aggregates
        return pb.TransferStockResponse(
            from_stock_item=stock_item_message(source),
            to_stock_item=stock_item_message(target),
            position=outcome.position,
        )

    def GetStockItem(
        self, request: pb.GetStockItemRequest, context: grpc.ServicerContext
    ) -> pb.GetStockItemResponse:
        item = self.ledger.get_stock_item(
            current_principal().merchant_id, request.product_id, request.location_id
        )
        if item is None:  # a catalog product that never moved here: nothing on hand
            # The id as the ledger spells it (the request may use upper case, say), as it
            # is answered once the product has moved here; get_stock_item validated it.
            product_id = str(uuid.UUID(request.product_id))
            empty = pb.StockItem(product_id=product_id, location_id=request.location_id)
            return pb.GetStockItemResponse(stock_item=empty)
        return pb.GetStockItemResponse(stock_item=stock_item_message(item))

    def ListStockLevels(
        self, request: pb.ListStockLevelsRequest, context: grpc.ServicerContext
    ) -> pb.ListStockLevelsResponse:
        page = self.reads.list_stock_levels(
            current_principal().merchant_id,
            location_id=request.location_id,
            product_id=request.product_id,
            negative_only=request.negative_only,
            page_size=request.page_size,
            page_token=request.page_token,
            min_position=request.min_position,
        )
        return pb.ListStockLevelsResponse(
            stock_levels=[level_message(row) for row in page.rows],
            next_page_token=page.next_page_token,
            position=page.position,
        )

    def GetStockLevel(
        self, request: pb.GetStockLevelRequest, context: grpc.ServicerContext
    ) -> pb.GetStockLevelResponse:
        page = self.reads.stock_level(
            current_principal().merchant_id,
            request.product_id,
            request.location_id,
            min_position=request.min_position,
        )
        return pb.GetStockLevelResponse(
            stock_level=level_message(page.rows[0]), position=page.position
        )

    def ListStockMovements(
        self, request: pb.ListStockMovementsRequest, context: grpc.ServicerContext
    ) -> pb.ListStockMovementsResponse:
        page = self.reads.list_movements(
            current_principal().merchant_id,
            request.product_id,
            request.location_id,
            page_size=request.page_size,
            page_token=request.page_token,
            min_position=request.min_position,
        )
        return pb.ListStockMovementsResponse(
            movements=[movement_message(row) for row in page.rows],
            next_page_token=page.next_page_token,
            position=page.position,
        )
