"""InventoryService: parse, call the ledger, build the response (`convert.inventory`)."""

from __future__ import annotations

import grpc

from ledger.application import Ledger
from ledger.grpc.context import command_context
from ledger.grpc.convert import inventory as convert
from ledger.grpc.interceptors import current_principal
from ledger.v1 import inventory_pb2 as pb
from ledger.v1 import inventory_pb2_grpc
from projections.queries import ReadModels


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, ledger: Ledger, reads: ReadModels) -> None:
        self.ledger = ledger
        self.reads = reads

    def ReceiveStock(
        self, request: pb.ReceiveStockRequest, context: grpc.ServicerContext
    ) -> pb.ReceiveStockResponse:
        cmd = convert.receive_stock(request)
        outcome = self.ledger.receive_stock(command_context(request), cmd)
        return pb.ReceiveStockResponse(
            stock_item=convert.stock_item_message(outcome.aggregate), position=outcome.position
        )

    def AdjustStock(
        self, request: pb.AdjustStockRequest, context: grpc.ServicerContext
    ) -> pb.AdjustStockResponse:
        cmd = convert.adjust_stock(request)
        outcome = self.ledger.adjust_stock(command_context(request), cmd)
        return pb.AdjustStockResponse(
            stock_item=convert.stock_item_message(outcome.aggregate), position=outcome.position
        )

    def RecordStockCount(
        self, request: pb.RecordStockCountRequest, context: grpc.ServicerContext
    ) -> pb.RecordStockCountResponse:
        cmd = convert.record_stock_count(request)
        outcome = self.ledger.record_stock_count(command_context(request), cmd)
        return pb.RecordStockCountResponse(
            stock_item=convert.stock_item_message(outcome.aggregate), position=outcome.position
        )

    def TransferStock(
        self, request: pb.TransferStockRequest, context: grpc.ServicerContext
    ) -> pb.TransferStockResponse:
        cmd = convert.transfer_stock(request)
        outcome = self.ledger.transfer_stock(command_context(request), cmd)
        source, target = outcome.aggregates
        return pb.TransferStockResponse(
            from_stock_item=convert.stock_item_message(source),
            to_stock_item=convert.stock_item_message(target),
            position=outcome.position,
        )

    def GetStockItem(
        self, request: pb.GetStockItemRequest, context: grpc.ServicerContext
    ) -> pb.GetStockItemResponse:
        item = self.ledger.get_stock_item(
            current_principal().merchant_id, request.product_id, request.location_id
        )
        if item is None:  # a catalog product that never moved here: nothing on hand
            empty = convert.empty_stock_item(request.product_id, request.location_id)
            return pb.GetStockItemResponse(stock_item=empty)
        return pb.GetStockItemResponse(stock_item=convert.stock_item_message(item))

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
            stock_levels=[convert.level_message(row) for row in page.rows],
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
            stock_level=convert.level_message(page.rows[0]), position=page.position
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
            movements=[convert.movement_message(row) for row in page.rows],
            next_page_token=page.next_page_token,
            position=page.position,
        )
