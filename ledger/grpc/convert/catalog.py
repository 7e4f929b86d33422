"""CatalogService: requests → product commands, products → messages."""

from __future__ import annotations

from typing import Any

from ledger.domain import product as d
from ledger.domain.product import Product
from ledger.grpc.context import timestamp
from ledger.grpc.convert.shared import enum_filter, masked_changes
from ledger.v1 import catalog_pb2 as pb

PRODUCT_STATUSES = {
    "active": pb.PRODUCT_STATUS_ACTIVE,
    "discontinued": pb.PRODUCT_STATUS_DISCONTINUED,
}
STATUS_FILTERS = {v: k for k, v in PRODUCT_STATUSES.items()}


def create_product(req: pb.CreateProductRequest) -> d.CreateProduct:
    return d.CreateProduct(
        sku=req.sku,
        name=req.name,
        price=req.price,
        currency_code=req.currency_code,
        tax_rate_ppm=req.tax_rate_ppm,
        barcode=req.barcode,
        category=req.category,
    )


def update_product(req: pb.UpdateProductRequest) -> d.UpdateProduct:
    return d.UpdateProduct(
        product_id=req.product_id,
        changes=masked_changes(req.product, list(req.update_mask.paths)),
    )


def discontinue_product(req: pb.DiscontinueProductRequest) -> d.DiscontinueProduct:
    return d.DiscontinueProduct(product_id=req.product_id, reason=req.reason)


def reactivate_product(req: pb.ReactivateProductRequest) -> d.ReactivateProduct:
    return d.ReactivateProduct(product_id=req.product_id, reason=req.reason)


def status_filter(req: pb.ListProductsRequest) -> str | None:
    return enum_filter("status", req.status, STATUS_FILTERS)


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
