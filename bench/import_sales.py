"""Benchmark: bulk ImportSales over a real gRPC channel into PostgreSQL.

    .venv/bin/python bench/import_sales.py [--orders 20000] [--batch 500] [--products 50]

Uses POSLEDGER_DATABASE_URL (or the embedded PostgreSQL) and a fresh schema that it drops
afterwards. Every order has 3 catalog lines and one card payment, so it records 3 sale
events plus a stock event per line. It imports every order twice: the second pass must
report only duplicates and write nothing. Prints orders/s and events/s for each pass.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg
from psycopg.sql import SQL, Identifier

from ledger.application import Context, Ledger
from ledger.bootstrap import build_server
from ledger.domain import product as p
from ledger.store import Settings, database_url
from ledger.v1 import sales_pb2 as pb
from ledger.v1 import sales_pb2_grpc


def orders(count: int, products: int, run: str) -> Iterator[pb.ImportedOrder]:
    for i in range(count):
        skus = [f"SKU-{(i + k) % products}" for k in range(3)]
        total_ppm = 0
        lines = []
        for k, sku in enumerate(skus):
            quantity = 1 + (i + k) % 3
            lines.append(pb.LineItemInput(sku=sku, name=sku, quantity=quantity))
            total_ppm += quantity * (100 + (i + k) % products)
        yield pb.ImportedOrder(
            channel="webshop" if i % 2 else "marketplace",
            external_order_id=f"{run}-{i}",
            sales_channel=pb.SALES_CHANNEL_ONLINE,
            location_id="warehouse-1",
            currency_code="USD",
            line_items=lines,
            payments=[
                pb.ImportedPayment(
                    tender=pb.TENDER_TYPE_CARD,
                    amount=total_ppm,
                    card=pb.CardDetails(
                        brand="visa", last4="4242", entry_method=pb.CARD_ENTRY_METHOD_ON_FILE
                    ),
                    processor_reference=f"ch_{i}",
                )
            ],
        )


def batches(count: int, products: int, batch: int, run: str) -> Iterator[pb.ImportSalesRequest]:
    pending: list[pb.ImportedOrder] = []
    for order in orders(count, products, run):
        pending.append(order)
        if len(pending) == batch:
            yield pb.ImportSalesRequest(orders=pending)
            pending = []
    if pending:
        yield pb.ImportSalesRequest(orders=pending)


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--products", type=int, default=50)
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env()
    settings = Settings(database_url=database_url(settings), schema=schema)
    ledger = Ledger.open(settings)
    try:
        for n in range(args.products):
            ledger.create_product(
                Context("dev", f"p{n}"),
                p.CreateProduct(
                    sku=f"SKU-{n}", name=f"Product {n}", price=100 + n, currency_code="USD"
                ),
            )
        server = build_server(ledger)
        server.start()
        print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.python_version()}")
        print(f"orders: {args.orders}, batch: {args.batch}, products: {args.products}")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sales_pb2_grpc.SalesServiceStub(channel)
            for label in ("first import", "re-import"):
                before = head(ledger)
                started = time.perf_counter()
                response = stub.ImportSales(batches(args.orders, args.products, args.batch, "o"))
                elapsed = time.perf_counter() - started
                events = head(ledger) - before
                print(
                    f"{label}: {elapsed:.2f} s, {args.orders / elapsed:,.0f} orders/s, "
                    f"{events / elapsed:,.0f} events/s ({events} events; imported "
                    f"{response.imported}, duplicates {response.duplicates}, "
                    f"conflicts {response.conflicts}, rejected {response.rejected})"
                )
        server.stop(1)
    finally:
        ledger.close()
        with psycopg.connect(database_url(settings), autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA {} CASCADE").format(Identifier(schema)))


if __name__ == "__main__":
    main()
