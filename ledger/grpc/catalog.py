"""CatalogService: wire ⇄ product commands and state."""

from __future__ import annotations

from typing import Any

import grpc

from ledger.application import Ledger
from ledger.domain import product as d
from ledger.domain.errors import FieldViolation, InvalidRequest
from ledger.domain.product import Product
from ledger.grpc.context import command_context, timestamp
from ledger.grpc.interceptors import current_principal
from ledger.v1 import catalog_pb2 as pb
from ledger.v1 import catalog_pb2_grpc
from projections.queries import ReadModels


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


def product_row_message(row: dict[str, Any]) -> pb.Product:
    """A product as the catalog view holds it."""
    return pb.Product(
        id=str(row["product_id"]),
        version=row["version"],
        sku=row["sku"],
        name=row["name"],
        price=row["price"],
        currency_code=row["currency_code"],
        tax_rate_ppm=row["tax_rate_ppm"],
        barcode=row["barcode"],
        category=row["category"],
        status=PRODUCT_STATUSES[row["status"]],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
        discontinue_reason=row["discontinue_reason"],
    )


PRODUCT_STATUSES = {
    "active": pb.PRODUCT_STATUS_ACTIVE,
    "discontinued": pb.PRODUCT_STATUS_DISCONTINUED,
}


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, ledger: Ledger, reads: ReadModels) -> None:
        self.ledger = ledger
        self.reads = reads

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

    def ReactivateProduct(
        self, request: pb.ReactivateProductRequest, context: grpc.ServicerContext
    ) -> pb.ReactivateProductResponse:
        cmd = d.ReactivateProduct(product_id=request.product_id, reason=request.reason)
        outcome = self.ledger.reactivate_product(command_context(request), cmd)
        return pb.ReactivateProductResponse(
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

    def ListProducts(
        self, request: pb.ListProductsRequest, context: grpc.ServicerContext
    ) -> pb.ListProductsResponse:
        statuses = {v: k for k, v in PRODUCT_STATUSES.items()}
        if request.status and request.status not in statuses:
            raise InvalidRequest([FieldViolation("status", "must be a known value or unset")])
        page = self.reads.list_products(
            current_principal().merchant_id,
            query=request.query,
            status=statuses.get(request.status),
            category=request.category,
            page_size=request.page_size,
            page_token=request.page_token,
            min_position=request.min_position,
        )
        return pb.ListProductsResponse(
            products=[product_row_message(row) for row in page.rows],
            next_page_token=page.next_page_token,
            position=page.position,
        )
