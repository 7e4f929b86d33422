"""Catalog, stock, customers and order import against a running ledger.

    .venv/bin/python examples/catalog_and_stock.py [--target 127.0.0.1:50051] [--api-key plk_...]

Creates a product (or finds it), receives stock, sells two units by sku only (price and tax
come from the catalog), shows the stock going down, creates a customer, and imports two web
shop orders twice: the second time both are reported as duplicates.
"""

from __future__ import annotations

import argparse
import uuid

import grpc

from ledger.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    sales_pb2_grpc,
)
from ledger.v1 import sales_pb2 as pb


def rid() -> str:
    return str(uuid.uuid4())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--api-key", default="", help="omit in development mode")
    args = parser.parse_args()
    md = [("authorization", f"Bearer {args.api_key}")] if args.api_key else []

    with grpc.insecure_channel(args.target) as channel:
        catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        stock = inventory_pb2_grpc.InventoryServiceStub(channel)
        customers = customers_pb2_grpc.CustomerServiceStub(channel)
        sales = sales_pb2_grpc.SalesServiceStub(channel)

        try:
            product = catalog.CreateProduct(
                catalog_pb2.CreateProductRequest(
                    request_id=rid(),
                    sku="MUG-01",
                    name="Mug",
                    price=1200,
                    currency_code="EUR",
                    tax_rate_ppm=190_000,
                    barcode="4006381333931",
                ),
                metadata=md,
            ).product
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            product = catalog.GetProduct(
                catalog_pb2.GetProductRequest(sku="MUG-01"), metadata=md
            ).product
        print(f"product {product.sku}: {product.price} {product.currency_code}")

        item = stock.ReceiveStock(
            inventory_pb2.ReceiveStockRequest(
                request_id=rid(),
                product_id=product.id,
                location_id="store-1",
                quantity=10,
                reference="PO-1001",
            ),
            metadata=md,
        ).stock_item
        print(f"on hand at store-1 after receiving: {item.on_hand}")

        sale = sales.CreateSale(
            pb.CreateSaleRequest(
                request_id=rid(),
                location_id="store-1",
                channel=pb.SALES_CHANNEL_IN_STORE,
                currency_code="EUR",
                line_items=[pb.LineItemInput(sku="MUG-01", name="Mug", quantity=2)],
            ),
            metadata=md,
        ).sale
        payment = sales.RequestPayment(
            pb.RequestPaymentRequest(
                request_id=rid(),
                sale_id=sale.id,
                amount=sale.amount_due,
                currency_code="EUR",
                tender_types=[pb.TENDER_TYPE_CASH],
                callback_url="https://pos.example.com/cb",
                app_id="example-pos",
                api_version="1.0",
            ),
            metadata=md,
        ).payment
        sales.RecordPaymentResult(
            pb.RecordPaymentResultRequest(
                request_id=rid(),
                sale_id=sale.id,
                payment_id=payment.id,
                outcome=pb.PAYMENT_OUTCOME_APPROVED,
                tender=pb.TENDER_TYPE_CASH,
                cash_tendered=3000,
                change_given=3000 - sale.total,
            ),
            metadata=md,
        )
        item = stock.GetStockItem(
            inventory_pb2.GetStockItemRequest(product_id=product.id, location_id="store-1"),
            metadata=md,
        ).stock_item
        print(f"sold 2 for {sale.total} (tax {sale.tax_total}); on hand now: {item.on_hand}")

        customer = customers.CreateCustomer(
            customers_pb2.CreateCustomerRequest(
                request_id=rid(),
                name="Ada Lovelace",
                email="ada@example.com",
                marketing_consent=True,
                consent_channel=pb.SALES_CHANNEL_IN_STORE,
                external_ids=[customers_pb2.ExternalId(channel="webshop", external_id=rid())],
            ),
            metadata=md,
        ).customer
        print(f"customer {customer.id}: consent {customer.marketing_consent}")

        run = rid()[:8]
        orders = [
            pb.ImportedOrder(
                channel="webshop",
                external_order_id=f"{run}-{n}",
                sales_channel=pb.SALES_CHANNEL_ONLINE,
                location_id="store-1",
                currency_code="EUR",
                customer_id=customer.id,
                line_items=[pb.LineItemInput(sku="MUG-01", name="Mug", quantity=1)],
                payments=[
                    pb.ImportedPayment(
                        tender=pb.TENDER_TYPE_CARD_ON_FILE,
                        amount=1428,
                        card=pb.CardDetails(
                            brand="visa", last4="4242", entry_method=pb.CARD_ENTRY_METHOD_ON_FILE
                        ),
                    )
                ],
            )
            for n in range(2)
        ]
        for attempt in ("import", "re-import"):
            result = sales.ImportSales(iter([pb.ImportSalesRequest(orders=orders)]), metadata=md)
            print(f"{attempt}: imported {result.imported}, duplicates {result.duplicates}")


if __name__ == "__main__":
    main()
