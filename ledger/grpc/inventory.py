"""InventoryService: wire ⇄ stock commands and state."""

from __future__ import annotations

import grpc

from ledger.application import Ledger
from ledger.domain import inventory as d
from ledger.domain.inventory import StockItem
from ledger.grpc.context import command_context, timestamp
from ledger.grpc.interceptors import current_principal
from ledger.v1 import inventory_pb2 as pb
from ledger.v1 import inventory_pb2_grpc

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


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

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
            empty = pb.StockItem(product_id=request.product_id, location_id=request.location_id)
            return pb.GetStockItemResponse(stock_item=empty)
        return pb.GetStockItemResponse(stock_item=stock_item_message(item))
