"""CatalogService: parse, call the ledger, build the response (`convert.catalog`)."""

from __future__ import annotations

import grpc

from ledger.application import Ledger
from ledger.grpc.context import command_context
from ledger.grpc.convert import catalog as convert
from ledger.grpc.interceptors import current_principal
from ledger.v1 import catalog_pb2 as pb
from ledger.v1 import catalog_pb2_grpc
from projections.queries import ReadModels


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, ledger: Ledger, reads: ReadModels) -> None:
        self.ledger = ledger
        self.reads = reads

    def CreateProduct(
        self, request: pb.CreateProductRequest, context: grpc.ServicerContext
    ) -> pb.CreateProductResponse:
        outcome = self.ledger.create_product(
            command_context(request), convert.create_product(request)
        )
        return pb.CreateProductResponse(
            product=convert.product_message(outcome.aggregate), position=outcome.position
        )

    def UpdateProduct(
        self, request: pb.UpdateProductRequest, context: grpc.ServicerContext
    ) -> pb.UpdateProductResponse:
        outcome = self.ledger.update_product(
            command_context(request), convert.update_product(request)
        )
        return pb.UpdateProductResponse(
            product=convert.product_message(outcome.aggregate), position=outcome.position
        )

    def DiscontinueProduct(
        self, request: pb.DiscontinueProductRequest, context: grpc.ServicerContext
    ) -> pb.DiscontinueProductResponse:
        outcome = self.ledger.discontinue_product(
            command_context(request), convert.discontinue_product(request)
        )
        return pb.DiscontinueProductResponse(
            product=convert.product_message(outcome.aggregate), position=outcome.position
        )

    def ReactivateProduct(
        self, request: pb.ReactivateProductRequest, context: grpc.ServicerContext
    ) -> pb.ReactivateProductResponse:
        outcome = self.ledger.reactivate_product(
            command_context(request), convert.reactivate_product(request)
        )
        return pb.ReactivateProductResponse(
            product=convert.product_message(outcome.aggregate), position=outcome.position
        )

    def GetProduct(
        self, request: pb.GetProductRequest, context: grpc.ServicerContext
    ) -> pb.GetProductResponse:
        merchant_id = current_principal().merchant_id
        if request.WhichOneof("lookup") == "sku":
            product = self.ledger.get_product_by_sku(merchant_id, request.sku)
        else:
            product = self.ledger.get_product(merchant_id, request.product_id)
        return pb.GetProductResponse(product=convert.product_message(product))

    def ListProducts(
        self, request: pb.ListProductsRequest, context: grpc.ServicerContext
    ) -> pb.ListProductsResponse:
        page = self.reads.list_products(
            current_principal().merchant_id,
            query=request.query,
            status=convert.status_filter(request),
            category=request.category,
            page_size=request.page_size,
            page_token=request.page_token,
            min_position=request.min_position,
        )
        return pb.ListProductsResponse(
            products=[convert.product_row_message(row) for row in page.rows],
            next_page_token=page.next_page_token,
            position=page.position,
        )
