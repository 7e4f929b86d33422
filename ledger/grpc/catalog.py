"""CatalogService: wire ⇄ product commands and state."""

from __future__ import annotations

from typing import Any

import grpc

from ledger.application import Ledger
from ledger.domain import product as d
from ledger.domain.product import Product
from ledger.grpc.context import command_context, timestamp
from ledger.grpc.interceptors import current_principal
from ledger.v1 import catalog_pb2 as pb
from ledger.v1 import catalog_pb2_grpc


def product_message(product: Product) -> pb.Product:
    return pb.Product(
        id=str(product.id),
        version=product.version,
        sku=product.sku,
        name=product.name,
        price=product.price,
        currency_code=product.currency_code,
        tax_rate_ppm=product.tax_rate_ppm,
        barcode=product.barcode,
        category=product.category,
        status=(
            pb.PRODUCT_STATUS_DISCONTINUED if product.is_discontinued else pb.PRODUCT_STATUS_ACTIVE
        ),
        created_at=timestamp(product.created_on),
        updated_at=timestamp(product.modified_on),
        discontinue_reason=product.discontinue_reason,
    )


def masked_changes(fields: Any, paths: list[str]) -> tuple[tuple[str, Any], ...]:
    """The (name, value) pairs of `fields` named by an update mask, in mask order."""
    known = {f.name for f in fields.DESCRIPTOR.fields}
    return tuple(
        (path, getattr(fields, path) if path in known else None) for path in dict.fromkeys(paths)
    )


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def CreateProduct(
        self, request: pb.CreateProductRequest, context: grpc.ServicerContext
    ) -> pb.CreateProductResponse:
        cmd = d.CreateProduct(
            sku=request.sku,
            name=request.name,
            price=request.price,
            currency_code=request.currency_code,
            tax_rate_ppm=request.tax_rate_ppm,
            barcode=request.barcode,
            category=request.category,
        )
        outcome = self.ledger.create_product(command_context(request), cmd)
        return pb.CreateProductResponse(
            product=product_message(outcome.aggregate), position=outcome.position
        )

    def UpdateProduct(
        self, request: pb.UpdateProductRequest, context: grpc.ServicerContext
    ) -> pb.UpdateProductResponse:
        cmd = d.UpdateProduct(
            product_id=request.product_id,
            changes=masked_changes(request.product, list(request.update_mask.paths)),
        )
        outcome = self.ledger.update_product(command_context(request), cmd)
        return pb.UpdateProductResponse(
            product=product_message(outcome.aggregate), position=outcome.position
        )

    def DiscontinueProduct(
        self, request: pb.DiscontinueProductRequest, context: grpc.ServicerContext
    ) -> pb.DiscontinueProductResponse:
        cmd = d.DiscontinueProduct(product_id=request.product_id, reason=request.reason)
        outcome = self.ledger.discontinue_product(command_context(request), cmd)
        return pb.DiscontinueProductResponse(
            product=product_message(outcome.aggregate), position=outcome.position
        )

    def GetProduct(
        self, request: pb.GetProductRequest, context: grpc.ServicerContext
    ) -> pb.GetProductResponse:
        merchant_id = current_principal().merchant_id
        if request.WhichOneof("lookup") == "sku":
            product = self.ledger.get_product_by_sku(merchant_id, request.sku)
        else:
            product = self.ledger.get_product(merchant_id, request.product_id)
        return pb.GetProductResponse(product=product_message(product))
