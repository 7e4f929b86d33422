"""The interpreter's CPU per command of the hot-item sale flow, without gRPC.

One thread runs whole sales through the application (`Ledger`) against a real PostgreSQL:
CreateSale (one online line of one catalog product at one location), RequestPayment (which
reserves the item) and RecordPaymentResult (approved, which sells it). `time.process_time`
counts this process's CPU only (the group-commit writer's thread included, PostgreSQL's
not), so two trees compare on their Python cost without the server's threads, the
clients and the other processes of a loaded machine in the way.

    POSLEDGER_DATABASE_URL=postgresql://root@127.0.0.1:5432/test \\
      .venv/bin/python bench/application_flow.py --sales 2500
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commands import drop_schemas  # bench/commands.py

from ledger.application.context import Context
from ledger.bootstrap import open_ledger
from ledger.domain import commands as c
from ledger.domain import inventory as inv
from ledger.domain import product as prod
from ledger.store import Settings

CARD = c.CardInput(brand="visa", last4="4242", entry_method=c.EntryMethod.DIPPED)
HOT = c.LineItemInput(sku="HOT", name="", quantity=1, unit_price=None)  # the catalog's price


def ctx() -> Context:
    return Context(merchant_id="merchant-1", request_id=str(uuid.uuid4()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=2500, help="measured sales")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured sales first")
    args = parser.parse_args()
    url = os.environ.get("POSLEDGER_DATABASE_URL")
    if not url:
        parser.error("set POSLEDGER_DATABASE_URL")
    schema = f"bench_flow_{uuid.uuid4().hex[:8]}"
    ledger = open_ledger(Settings(database_url=url, schema=schema, pool_size=4))
    try:
        product = ledger.create_product(
            ctx(), prod.CreateProduct(sku="HOT", name="Hot", price=500, currency_code="USD")
        ).aggregate
        ledger.receive_stock(ctx(), inv.ReceiveStock(str(product.id), "store-1", 10**9))

        def sale() -> None:
            created = ledger.create_sale(
                ctx(),
                c.CreateSale(
                    location_id="store-1",
                    channel=c.Channel.ONLINE,
                    currency_code="USD",
                    line_items=(HOT,),
                ),
            ).sale
            requested = ledger.request_payment(
                ctx(),
                c.RequestPayment(
                    sale_id=str(created.id),
                    amount=created.amount_due,
                    currency_code="USD",
                    tender_types=(c.Tender.CARD,),
                    callback_url="https://pos.example.com/cb",
                    app_id="pos-app",
                    api_version="1.0",
                ),
            )
            ledger.record_payment_result(
                ctx(),
                c.RecordPaymentResult(
                    sale_id=str(created.id),
                    payment_id=requested.ids["payment_id"],
                    outcome=c.Outcome.APPROVED,
                    tender=c.Tender.CARD,
                    card=CARD,
                    processor_reference="proc-1",
                ),
            )

        for _ in range(args.warmup):
            sale()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(args.sales):
            sale()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        ledger.close()
        drop_schemas(url, schema)
    commands = 3 * args.sales
    print(
        f"{args.sales:,} sales ({commands:,} commands): {cpu / commands * 1000:.3f} ms of CPU"
        f" and {wall / commands * 1000:.3f} ms of wall time per command"
    )
    print(
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}:"
        f" {os.cpu_count()} cores, Python {platform.python_version()}."
    )


if __name__ == "__main__":
    main()
