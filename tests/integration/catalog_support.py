"""Helpers for the catalog, customer, stock and import tests (integration tier)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from ledger.application import Context, Ledger, SaleResult
from ledger.domain import commands as c
from ledger.domain import inventory as inv
from ledger.domain import product as prod
from ledger.domain.inventory import StockItem
from ledger.domain.product import Product
from tests.integration.conftest import (
    CARD,
    COMMANDS_TABLE,
    EVENTS_TABLE,
    MERCHANT_A,
    Db,
    ctx,
    request_payment_cmd,
)

MUG_PRICE = 1200
MUG_TAX_PPM = 80_000  # 8%: 96 on one mug
MUG_UNIT_TOTAL = 1296


def create_product(
    ledger: Ledger,
    merchant_id: str = MERCHANT_A,
    sku: str = "MUG-1",
    price: int = MUG_PRICE,
    tax_rate_ppm: int = MUG_TAX_PPM,
    currency_code: str = "USD",
    **fields: Any,
) -> Product:
    cmd = prod.CreateProduct(
        sku=sku,
        name=fields.pop("name", f"Product {sku}"),
        price=price,
        currency_code=currency_code,
        tax_rate_ppm=tax_rate_ppm,
        **fields,
    )
    product = ledger.create_product(ctx(merchant_id), cmd).aggregate
    assert isinstance(product, Product)
    return product


def receive(
    ledger: Ledger,
    product: Product,
    quantity: int,
    location_id: str = "loc-1",
    merchant_id: str = MERCHANT_A,
) -> StockItem:
    cmd = inv.ReceiveStock(str(product.id), location_id, quantity, reference="PO-1")
    item = ledger.receive_stock(ctx(merchant_id), cmd).aggregate
    assert isinstance(item, StockItem)
    return item


def stock(
    ledger: Ledger, product: Product, location_id: str = "loc-1", merchant_id: str = MERCHANT_A
) -> StockItem:
    item = ledger.get_stock_item(merchant_id, str(product.id), location_id)
    assert item is not None, f"no stock of {product.sku} at {location_id}"
    return item


def catalog_line(
    sku: str = "MUG-1",
    quantity: int = 1,
    unit_price: int | None = None,
    tax_rate_ppm: int | None = None,
) -> c.LineItemInput:
    """A line priced by the catalog unless a unit price or tax rate is given."""
    return c.LineItemInput(
        sku=sku,
        name=f"Item {sku}",
        quantity=quantity,
        unit_price=unit_price,
        tax_rate_ppm=tax_rate_ppm,
    )


def new_sale(
    ledger: Ledger,
    *lines: c.LineItemInput,
    location_id: str = "loc-1",
    merchant_id: str = MERCHANT_A,
    currency_code: str = "USD",
    channel: c.Channel = c.Channel.IN_STORE,
) -> SaleResult:
    cmd = c.CreateSale(
        location_id=location_id,
        channel=channel,
        currency_code=currency_code,
        line_items=lines,
    )
    return ledger.create_sale(ctx(merchant_id), cmd)


def request_full_payment(ledger: Ledger, sale_id: str, merchant_id: str = MERCHANT_A) -> str:
    sale = ledger.get_sale(merchant_id, sale_id)
    cmd = request_payment_cmd(sale_id, sale.amount_due)
    payment_id: str = ledger.request_payment(ctx(merchant_id), cmd).ids["payment_id"]
    return payment_id


def approve(sale_id: str, payment_id: str) -> c.RecordPaymentResult:
    return c.RecordPaymentResult(
        sale_id=sale_id,
        payment_id=payment_id,
        outcome=c.Outcome.APPROVED,
        tender=c.Tender.CARD,
        card=CARD,
        auth_code="OK1",
    )


def pay_in_full(
    ledger: Ledger, sale_id: str, merchant_id: str = MERCHANT_A, context: Context | None = None
) -> tuple[str, SaleResult]:
    """Requests the amount due and approves it: the sale completes. Returns the payment id."""
    payment_id = request_full_payment(ledger, sale_id, merchant_id)
    result = ledger.record_payment_result(context or ctx(merchant_id), approve(sale_id, payment_id))
    return payment_id, result


def transaction_of_events(db: Db) -> dict[tuple[uuid.UUID, int], str]:
    """The id of the transaction that inserted each event (PostgreSQL's xmin)."""
    query = SQL("SELECT originator_id, originator_version, xmin::text AS tx FROM {}").format(
        Identifier(db.schema, EVENTS_TABLE)
    )
    with psycopg.connect(db.url) as conn:
        rows = conn.execute(query).fetchall()
    return {(row[0], row[1]): row[2] for row in rows}


def transaction_of_command(db: Db, merchant_id: str, request_id: str) -> str:
    query = SQL("SELECT xmin::text FROM {} WHERE merchant_id = %s AND request_id = %s").format(
        Identifier(db.schema, COMMANDS_TABLE)
    )
    with psycopg.connect(db.url) as conn:
        row = conn.execute(query, (merchant_id, request_id)).fetchone()
    assert row is not None
    return str(row[0])


def topic_count(db: Db, topic: str) -> int:
    return sum(1 for row in db.events() if row.topic == topic)
