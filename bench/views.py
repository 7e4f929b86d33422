"""Benchmark: catch-up, rebuild and live-follow speed of the views (projections).

    /work/venv/bin/python bench/views.py --events 1000000        # the full figure
    /work/venv/bin/python bench/views.py --events 200000         # quick mode

Uses POSLEDGER_DATABASE_URL (default postgresql://root@127.0.0.1:5432/test) and a fresh
schema that it drops at the end unless --keep; --reuse SCHEMA measures again on a log kept
before (its views are dropped and built from position 0 again).

1. Generates a log: per generating process one merchant with a catalog, stock receipts at
   four locations and customers; then mostly bulk-imported sales (`import_sales`, 3 catalog
   lines and one card payment per order: 6 events), interleaved with live commands (sales
   paid by card, declined payments, canceled sales, refunds with restock, stock counts,
   price changes, customer updates).
2. Catch-up: each view from position 0 with `Projections.step()` until it reaches the head,
   each view in a process of its own (so its peak RSS is its own).
3. Rebuild: `Projections.rebuild(view)` of each view over the whole log, likewise.
4. Live follow: a runner (`Projections.run`) in its own process, and commands saved one at
   a time; the latency is from the command's save (its events committed) until the
   view's registry row reaches the command's log position.

--profile FILE runs the catch-up under cProfile (slower: its times are not the figures),
writes the stats to FILE and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import logging
import multiprocessing
import os
import platform
import pstats
import random
import re
import resource
import shlex
import signal
import statistics
import sys
import threading
import time
import traceback
import tracemalloc
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.sql import SQL, Identifier

from ledger.application import Context, Ledger
from ledger.bootstrap import build_views
from ledger.domain import commands as c
from ledger.domain import customer as cust
from ledger.domain import inventory as inv
from ledger.domain import product as prod
from ledger.domain.line_items import LineItem
from ledger.store import Settings
from projections.follow import CATCH_UP_PAGE
from projections.rebuild import REBUILD_PAGE
from projections.runner import Projections

DEFAULT_URL = "postgresql://root@127.0.0.1:5432/test"
VIEWS = ("orders", "inventory", "customers", "catalog")
LOCATIONS = ("store-1", "store-2", "store-3", "web")
CARD = c.CardInput(brand="visa", last4="4242", entry_method=c.EntryMethod.CONTACTLESS)
T = TypeVar("T")


def quiet() -> None:
    """Only warnings from the ledger's structured logs (the runner logs every view it holds)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def open_ledger(url: str, schema: str) -> Ledger:
    quiet()
    ledger: Ledger = Ledger.open(Settings(database_url=url, schema=schema, pool_size=4))
    return ledger


def max_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def in_child(fn: Callable[..., T], *args: Any) -> T:
    """Runs `fn(*args)` in a fresh process, so its memory peak is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(reporting, fn, *args).result()


def reporting(fn: Callable[..., T], *args: Any) -> T:
    """Calls `fn` in a child process; a failure comes back as text (not every error pickles)."""
    try:
        return fn(*args)
    except Exception as e:
        raise RuntimeError(traceback.format_exc()) from e


# ---- generating the log ----------------------------------------------------------------------


@dataclass
class Catalog:
    ids: dict[str, str]  # sku -> product id
    prices: dict[str, tuple[int, int]]  # sku -> (price, tax rate ppm)
    customers: list[str]


class Generator:
    """One merchant's traffic: set-up, bulk imports and a mix of live commands."""

    def __init__(self, ledger: Ledger, worker: int, products: int, customers: int) -> None:
        self.ledger = ledger
        self.merchant = f"bench-{worker}"
        self.worker = worker
        self.rnd = random.Random(worker)
        self.requests = itertools.count()
        self.run = uuid.uuid4().hex[:8]  # request ids of every run differ
        self.orders = itertools.count()
        self.products = products
        self.customer_count = customers
        self.catalog = Catalog({}, {}, [])
        self.live_commands = 0

    def ctx(self) -> Context:
        self.live_commands += 1
        return Context(self.merchant, f"bench-{self.worker}-{self.run}-{next(self.requests)}")

    def set_up(self) -> None:
        for n in range(self.products):
            sku = f"SKU-{n:04d}"
            price = self.rnd.randint(100, 5000)
            tax = self.rnd.choice((0, 70_000, 190_000))
            product = self.ledger.create_product(
                self.ctx(),
                prod.CreateProduct(
                    sku=sku,
                    name=f"Product {n}",
                    price=price,
                    currency_code="USD",
                    tax_rate_ppm=tax,
                    barcode=f"BC-{self.worker}-{n:05d}",
                    category=f"category-{n % 7}",
                ),
            ).aggregate
            self.catalog.ids[sku] = str(product.id)
            self.catalog.prices[sku] = (price, tax)
            for location in LOCATIONS:
                self.ledger.receive_stock(
                    self.ctx(),
                    inv.ReceiveStock(str(product.id), location, 10_000, reference=f"PO-{n}"),
                )
        for n in range(self.customer_count):
            created = self.ledger.create_customer(
                self.ctx(),
                cust.CreateCustomer(
                    name=f"Customer {n}",
                    email=f"customer{n}@example.com",
                    marketing_consent=n % 2 == 0,
                    consent_channel=c.Channel.IN_STORE if n % 2 == 0 else None,
                    tags=("bench",),
                ),
            )
            self.catalog.customers.append(str(created.aggregate.id))

    def _lines(self, count: int) -> list[tuple[str, int]]:
        skus = self.rnd.sample(sorted(self.catalog.ids), count)
        return [(sku, self.rnd.randint(1, 3)) for sku in skus]

    def _total(self, lines: list[tuple[str, int]]) -> int:
        total = 0
        for sku, quantity in lines:
            price, tax = self.catalog.prices[sku]
            item = c.LineItemInput(sku, sku, quantity, unit_price=price, tax_rate_ppm=tax)
            total += LineItem.new(item).total_amount
        return total

    def import_batch(self, count: int) -> int:
        orders: list[c.ImportOrder | Any] = []
        for _ in range(count):
            n = next(self.orders)
            lines = self._lines(3)
            online = n % 2 == 0
            orders.append(
                c.ImportOrder(
                    channel="webshop" if online else "marketplace",
                    external_order_id=f"{self.merchant}-{n}",
                    sales_channel=c.Channel.ONLINE if online else c.Channel.MARKETPLACE,
                    location_id=self.rnd.choice(LOCATIONS),
                    currency_code="USD",
                    line_items=tuple(
                        c.LineItemInput(sku, f"Item {sku}", q, unit_price=None) for sku, q in lines
                    ),
                    payments=(
                        c.ImportedPayment(
                            c.Tender.CARD, self._total(lines), CARD, f"A{n}", f"ch_{n}"
                        ),
                    ),
                    customer_id=(self.rnd.choice(self.catalog.customers) if n % 3 == 0 else ""),
                )
            )
        results = self.ledger.import_sales(Context(self.merchant), orders)
        bad = [r for r in results if r.status != "imported"]
        assert not bad, bad[:3]
        return count

    def live_sale(self, *, pay: bool = True) -> Any:
        lines = self._lines(2)
        result = self.ledger.create_sale(
            self.ctx(),
            c.CreateSale(
                location_id=self.rnd.choice(LOCATIONS[:3]),
                channel=c.Channel.IN_STORE,
                currency_code="USD",
                line_items=tuple(
                    c.LineItemInput(sku, f"Item {sku}", q, unit_price=None) for sku, q in lines
                ),
                customer_id=self.rnd.choice(self.catalog.customers)
                if self.rnd.random() < 0.5
                else "",
            ),
        )
        if not pay:
            return result
        sale_id = str(result.sale.id)
        requested = self.ledger.request_payment(
            self.ctx(),
            c.RequestPayment(
                sale_id=sale_id,
                amount=result.sale.amount_due,
                currency_code="USD",
                tender_types=(c.Tender.CARD,),
                callback_url="https://pay.example.com/callback",
                app_id="bench",
                api_version="1.0",
            ),
        )
        payment_id = requested.ids["payment_id"]
        if self.rnd.random() < 0.1:  # declined, then paid by a second card
            self.ledger.record_payment_result(
                self.ctx(),
                c.RecordPaymentResult(
                    sale_id=sale_id,
                    payment_id=payment_id,
                    outcome=c.Outcome.DECLINED,
                    tender=c.Tender.CARD,
                    card=CARD,
                    error_code="insufficient_funds",
                ),
            )
            payment_id = self.ledger.request_payment(
                self.ctx(),
                c.RequestPayment(
                    sale_id=sale_id,
                    amount=result.sale.amount_due,
                    currency_code="USD",
                    tender_types=(c.Tender.CARD,),
                    callback_url="https://pay.example.com/callback",
                    app_id="bench",
                    api_version="1.0",
                ),
            ).ids["payment_id"]
        paid = self.ledger.record_payment_result(
            self.ctx(),
            c.RecordPaymentResult(
                sale_id=sale_id,
                payment_id=payment_id,
                outcome=c.Outcome.APPROVED,
                tender=c.Tender.CARD,
                card=CARD,
                auth_code="A1B2C3",
                processor_reference=f"proc-{sale_id[:8]}",
            ),
        )
        if self.rnd.random() < 0.3:  # one unit of the first line comes back
            line = paid.sale.line_items[0]
            paid = self.ledger.refund_payment(
                self.ctx(),
                c.RefundPayment(
                    sale_id=sale_id,
                    payment_id=payment_id,
                    amount=line.total_amount // line.quantity,
                    reason="returned",
                    restock_items=(c.RestockItem(line.line_id, 1),),
                ),
            )
        return paid

    def live_mix(self, sales: int) -> None:
        """A few live commands of every kind, between two import batches."""
        for _ in range(sales):
            self.live_sale()
        canceled = self.live_sale(pay=False)
        self.ledger.cancel_sale(self.ctx(), c.CancelSale(str(canceled.sale.id), "walked out"))
        sku = self.rnd.choice(sorted(self.catalog.ids))
        self.ledger.record_stock_count(
            self.ctx(),
            inv.RecordStockCount(
                self.catalog.ids[sku], self.rnd.choice(LOCATIONS), self.rnd.randint(0, 10_000)
            ),
        )
        self.change_price()
        self.rename_customer()

    def change_price(self) -> Any:
        sku = self.rnd.choice(sorted(self.catalog.ids))
        price, tax = self.catalog.prices[sku]
        price = price + 50 if price <= 150 else price + self.rnd.choice((-50, 50))
        outcome = self.ledger.update_product(
            self.ctx(), prod.UpdateProduct(self.catalog.ids[sku], (("price", price),))
        )
        self.catalog.prices[sku] = (price, tax)
        return outcome

    def rename_customer(self) -> Any:
        customer = self.rnd.choice(self.catalog.customers)
        return self.ledger.update_customer(
            self.ctx(),
            cust.UpdateCustomer(
                customer, (("name", f"Customer {self.run}-{next(self.requests)}"),)
            ),
        )

    def receive(self) -> Any:
        sku = self.rnd.choice(sorted(self.catalog.ids))
        return self.ledger.receive_stock(
            self.ctx(),
            inv.ReceiveStock(self.catalog.ids[sku], self.rnd.choice(LOCATIONS), 24, "PO-live"),
        )


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def generate(
    worker: int, workers: int, url: str, schema: str, target: int, args: dict[str, int]
) -> dict[str, Any]:
    """Writes one merchant's share of the log until the log holds `target` events."""
    ledger = open_ledger(url, schema)
    started = time.perf_counter()
    gen = Generator(ledger, worker, args["products"], args["customers"])
    gen.set_up()
    imported = 0
    try:
        reported = 0
        while (remaining := target - (position := head(ledger))) > 0:
            if worker == 0 and position - reported >= 100_000:
                reported = position
                rate = position / (time.perf_counter() - started)
                print(f"  generating: {position:,} events, {rate:,.0f} events/s", flush=True)
            # Smaller batches near the end, so the log overshoots the target only a little.
            count = max(1, min(args["batch"], remaining // (6 * workers)))
            imported += gen.import_batch(count)
            gen.live_mix(max(1, count * args["live_per_1000"] // 1000))
    finally:
        ledger.close()
    return {
        "worker": worker,
        "orders": imported,
        "live_commands": gen.live_commands,
        "seconds": time.perf_counter() - started,
    }


# ---- the views ---------------------------------------------------------------------------------


def reset_view(url: str, schema: str, view: str) -> None:
    """Forgets a view: drops its registry row and every generation, so it starts at 0."""
    pattern = re.compile(re.escape(f"{schema}__{view}_") + r"\d+")
    with psycopg.connect(url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()]
        for name in names:
            if pattern.fullmatch(name):
                conn.execute(SQL("DROP SCHEMA {} CASCADE").format(Identifier(name)))
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".projection_views',)
        ).fetchone()
        if exists and exists[0]:
            conn.execute(
                SQL("DELETE FROM {} WHERE view = %s").format(
                    Identifier(schema, "projection_views")
                ),
                (view,),
            )


def view_rows(projections: Projections, view: str) -> dict[str, int]:
    schema, _ = projections.live_schema(view)
    counts = {}
    with psycopg.connect(projections.url) as conn:
        for table in projections.views[view].tables:
            row = conn.execute(SQL("SELECT count(*) FROM {}").format(Identifier(schema, table)))
            counts[table] = int(row.fetchone()[0])  # type: ignore[index]
    return counts


def catch_up(url: str, schema: str, view: str, trace: bool, profile: str) -> dict[str, Any]:
    """One view from position 0 to the head, in pages, as a runner that is far behind."""
    reset_view(url, schema, view)
    ledger = open_ledger(url, schema)
    projections = build_views(ledger)
    projections.ensure()
    stop = head(ledger)
    rss_before = max_rss_mib()
    if trace:
        tracemalloc.start()
    profiler = cProfile.Profile() if profile else None
    cpu = cpu_seconds()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    events = pages = 0
    while True:
        n = projections.step(projections.views[view])
        events += n
        pages += 1
        if n < CATCH_UP_PAGE:  # a short page reaches the head taken when it started
            break
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    assert projections.live_schema(view)[1] >= stop
    if profiler:
        profiler.dump_stats(f"{profile}.{view}")
    result = {
        "view": view,
        "position": stop,
        "events": events,
        "pages": pages,
        "seconds": seconds,
        "cpu": cpu,
        "rss_before": rss_before,
        "rss_peak": max_rss_mib(),
        "traced_peak": traced,
        "rows": view_rows(projections, view),
    }
    ledger.close()
    return result


def rebuild(url: str, schema: str, view: str, trace: bool) -> dict[str, Any]:
    ledger = open_ledger(url, schema)
    projections = build_views(ledger)
    projections.ensure()
    rss_before = max_rss_mib()
    if trace:
        tracemalloc.start()
    cpu = cpu_seconds()
    started = time.perf_counter()
    report = projections.rebuild(view, verify=False)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    result = {
        "view": view,
        "position": report.position,
        "events": report.events,
        "seconds": seconds,
        "cpu": cpu,
        "rss_before": rss_before,
        "rss_peak": max_rss_mib(),
        "traced_peak": traced,
        "rows": view_rows(projections, view),
    }
    ledger.close()
    return result


def run_views(
    url: str, schema: str, ready: MpEvent, done: MpEvent, results: Queue[dict[str, float]]
) -> None:
    """A projections runner in its own process, as `posledger projections run` is."""
    ledger = open_ledger(url, schema)
    stop = threading.Event()

    def stop_when_done() -> None:
        done.wait()
        stop.set()

    threading.Thread(target=stop_when_done, daemon=True).start()
    cpu = cpu_seconds()
    build_views(ledger).run(stop, ready.set)
    ledger.close()
    results.put({"rss_peak": max_rss_mib(), "cpu": cpu_seconds() - cpu})


def live_follow(url: str, schema: str, samples: int) -> dict[str, Any]:
    """Commands one at a time; how long until the view they change shows them."""
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    results: Queue[dict[str, float]] = context.Queue()
    runner = context.Process(
        target=run_views, args=(url, schema, ready, done, results), name="runner"
    )
    runner.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the runner did not start")
        ledger = open_ledger(url, schema)
        gen = Generator(ledger, worker=0, products=0, customers=0)
        load_catalog(ledger, gen)
        # The moment each save returns (its transaction committed), before the command
        # builds its answer: the latency is measured from there.
        committed: list[float] = []
        save = ledger.save

        def timed_save(*args: Any, **kwargs: Any) -> Any:
            recordings = save(*args, **kwargs)
            committed.append(time.perf_counter())
            return recordings

        ledger.save = timed_save  # type: ignore[method-assign]
        kinds: list[tuple[str, Callable[[], Any]]] = [
            ("orders", lambda: gen.live_sale(pay=False)),
            ("inventory", gen.receive),
            ("catalog", gen.change_price),
            ("customers", gen.rename_customer),
        ]
        registry = Identifier(schema, "projection_views")
        latencies: dict[str, list[float]] = {name: [] for name, _ in kinds}
        commands: list[float] = []
        order: list[tuple[float, int, str]] = []  # (latency, sample number, view)
        with psycopg.connect(url, autocommit=True) as conn:
            poll = SQL("SELECT position FROM {} WHERE view = %s").format(registry)
            # Warm-up, not measured: one command of each kind, each waited for.
            warm_up = time.perf_counter()
            for view, command in kinds:
                position = command().position
                while (conn.execute(poll, (view,)).fetchone() or [0])[0] < position:
                    if time.perf_counter() - warm_up > 600:
                        raise RuntimeError("the runner did not catch up in 10 minutes")
                    time.sleep(0.01)
            warm_up = time.perf_counter() - warm_up
            previous = head(ledger)
            for i in range(samples):
                view, command = kinds[i % len(kinds)]
                sent = time.perf_counter()
                outcome = command()
                commands.append(time.perf_counter() - sent)
                saved = committed[-1]
                position = outcome.position
                assert position > previous, "every command records an event"
                previous = position
                while True:
                    row = conn.execute(poll, (view,), prepare=True).fetchone()
                    if row and row[0] >= position:
                        break
                    if time.perf_counter() - saved > 60:
                        raise RuntimeError(f"{view} did not reach {position} in 60 s")
                    time.sleep(0.0005)
                latencies[view].append(time.perf_counter() - saved)
                order.append((latencies[view][-1], i, view))
                time.sleep(0.01)  # commands arrive apart, not back to back
        ledger.close()
        done.set()
        runner_stats = results.get(timeout=30)
    finally:
        done.set()
        runner.join(30)
    every = [x for values in latencies.values() for x in values]
    return {
        "samples": len(every),
        "all": summary(every),
        "per_view": {view: summary(values) for view, values in latencies.items()},
        "command": summary(commands),
        "runner": runner_stats,
        "slowest": sorted(order, reverse=True)[:3],
        "warm_up": warm_up,
    }


def load_catalog(ledger: Ledger, gen: Generator) -> None:
    """The products and customers merchant `bench-0` created, from the views."""
    projections = build_views(ledger)
    catalog, _ = projections.live_schema("catalog")
    customers, _ = projections.live_schema("customers")
    with psycopg.connect(projections.url) as conn:
        for sku, product_id, price, tax in conn.execute(
            SQL(
                "SELECT sku, product_id, price, tax_rate_ppm FROM {} WHERE merchant_id = %s"
            ).format(Identifier(catalog, "products")),
            (gen.merchant,),
        ):
            gen.catalog.ids[sku] = str(product_id)
            gen.catalog.prices[sku] = (price, tax)
        for (customer_id,) in conn.execute(
            SQL("SELECT customer_id FROM {} WHERE merchant_id = %s").format(
                Identifier(customers, "customers")
            ),
            (gen.merchant,),
        ):
            gen.catalog.customers.append(customer_id)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[max(0, round(0.95 * len(ordered)) - 1)],
        "max_ms": 1000 * ordered[-1],
    }


# ---- reporting ---------------------------------------------------------------------------------


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def log_counts(url: str, schema: str) -> tuple[int, list[tuple[str, int]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            SQL("SELECT topic, count(*) FROM {} GROUP BY topic ORDER BY 2 DESC").format(
                Identifier(schema, "ledger_events")
            )
        ).fetchall()
    topics = [(str(t), int(n)) for t, n in rows]
    return sum(n for _, n in topics), topics


def statistics_state(url: str, schema: str) -> str:
    """Whether the planner has statistics for the events table (autovacuum may be off)."""
    with psycopg.connect(url) as conn:
        autovacuum = conn.execute("SHOW autovacuum").fetchone()
        row = conn.execute(
            "SELECT greatest(last_analyze, last_autoanalyze) FROM pg_stat_user_tables"
            " WHERE schemaname = %s AND relname = 'ledger_events'",
            (schema,),
        ).fetchone()
    analyzed = row[0] if row else None
    return f"autovacuum {autovacuum[0] if autovacuum else '?'}, " + (
        f"last analyzed {analyzed:%Y-%m-%d %H:%M:%S}" if analyzed else "never analyzed"
    )


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def print_profile(path: str) -> None:
    files = [f"{path}.{view}" for view in VIEWS if Path(f"{path}.{view}").exists()]
    if not files:
        return
    stats = pstats.Stats(files[0], stream=io.StringIO())
    for f in files[1:]:
        stats.add(f)
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(25)
        print(f"\n-- catch-up profile, all views, top 25 by {key} --")
        print("\n".join(out.getvalue().splitlines()[4:]))


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=200_000, help="log size to generate")
    parser.add_argument("--workers", type=int, default=2, help="generating processes")
    parser.add_argument("--batch", type=int, default=2000, help="orders per import_sales call")
    parser.add_argument("--products", type=int, default=200, help="products per merchant")
    parser.add_argument("--customers", type=int, default=300, help="customers per merchant")
    parser.add_argument("--live-per-1000", type=int, default=3, help="live sales per 1,000 orders")
    parser.add_argument("--samples", type=int, default=200, help="live-follow commands")
    parser.add_argument("--reuse", metavar="SCHEMA", help="measure a log kept with --keep")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python heap peak")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the catch-up into FILE.*")
    parser.add_argument("--skip", default="", help="comma list of: catchup,rebuild,live")
    parser.add_argument("--views", default=",".join(VIEWS), help="comma list of views to measure")
    parser.add_argument(
        "--analyze", action="store_true", help="ANALYZE the events table before measuring"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    views = [v for v in args.views.split(",") if v]
    assert set(views) <= set(VIEWS), f"views are {', '.join(VIEWS)}"
    # Stopped with SIGTERM, still drop the schema (unless --keep).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    url = os.environ.get("POSLEDGER_DATABASE_URL") or DEFAULT_URL
    schema = args.reuse or f"bench_{uuid.uuid4().hex[:8]}"
    command = shlex.join([Path(sys.executable).name, "bench/views.py", *sys.argv[1:]])
    print(f"command:  {command}")
    print(
        f"machine:  {platform.node()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, PostgreSQL {server_version(url)}"
    )
    print(f"database: {re.sub(r'//[^@/]*@', '//', url)} schema {schema}")
    try:
        if not args.reuse:
            started = time.perf_counter()
            open_ledger(url, schema).close()  # creates the tables once
            options = {
                "products": args.products,
                "customers": args.customers,
                "batch": args.batch,
                "live_per_1000": args.live_per_1000,
            }
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
                futures = [
                    pool.submit(
                        reporting, generate, w, args.workers, url, schema, args.events, options
                    )
                    for w in range(args.workers)
                ]
                made = [f.result() for f in futures]
            seconds = time.perf_counter() - started
            total, topics = log_counts(url, schema)
            orders = sum(m["orders"] for m in made)
            live = sum(m["live_commands"] for m in made)
            print(
                f"\ngenerated {total:,} events in {seconds:.0f} s ({total / seconds:,.0f} events/s,"
                f" {args.workers} processes): {orders:,} imported orders, {live:,} live commands"
            )
        if args.analyze:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(SQL("ANALYZE {}").format(Identifier(schema, "ledger_events")))
        total, topics = log_counts(url, schema)
        print(
            f"log: {total:,} events; " + ", ".join(f"{t.split('.')[-1]} {n:,}" for t, n in topics)
        )
        print(f"events table statistics: {statistics_state(url, schema)}")

        if "catchup" not in skip:
            print(f"\nCatch-up from position 0 (Projections.step, pages of {CATCH_UP_PAGE:,})")
            results = []
            for view in views:
                print(f"  {view}: starting, {load()}")
                results.append(
                    in_child(catch_up, url, schema, view, args.tracemalloc, args.profile or "")
                )
            print_table(results, total)
            if args.profile:
                print_profile(args.profile)

        if "rebuild" not in skip:
            print(
                "\nRebuild of each view over the whole log"
                f" (Projections.rebuild, pages of {REBUILD_PAGE:,})"
            )
            results = []
            for view in views:
                print(f"  {view}: starting, {load()}")
                results.append(in_child(rebuild, url, schema, view, args.tracemalloc))
            print_table(results, total)

        if "live" not in skip:
            print(f"\nLive follow: starting, {load()}")
            live_result = live_follow(url, schema, args.samples)
            print(
                f"\nLive follow: runner in its own process, {live_result['samples']} commands"
                " one at a time; from the command's save (committed) to the view at its position"
            )
            print(f"{'view':<10} {'n':>4} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
            rows = [*live_result["per_view"].items(), ("all", live_result["all"])]
            for name, s in rows:
                print(
                    f"{name:<10} {s['n']:>4} {s['median_ms']:>10.1f} {s['p95_ms']:>8.1f}"
                    f" {s['max_ms']:>8.1f}"
                )
            s = live_result["command"]
            print(
                f"(the commands themselves: median {s['median_ms']:.1f} ms, p95 {s['p95_ms']:.1f}"
                f" ms; runner peak RSS {live_result['runner']['rss_peak']:.0f} MiB)"
            )
            slowest = ", ".join(
                f"#{i} {view} {1000 * seconds:.1f} ms"
                for seconds, i, view in live_result["slowest"]
            )
            print(
                f"(slowest samples: {slowest};"
                f" warm-up, not measured: {live_result['warm_up']:.1f} s)"
            )
    finally:
        if args.keep:
            print(f"\nkept schema {schema} (measure again with --reuse {schema})")
        else:
            with psycopg.connect(url, autocommit=True) as conn:
                names = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")]
                for name in names:
                    if name == schema or name.startswith(f"{schema}__"):
                        conn.execute(SQL("DROP SCHEMA {} CASCADE").format(Identifier(name)))


def print_table(results: list[dict[str, Any]], total: int) -> None:
    """One row per view (each measured in a process of its own), and the sum."""
    print(
        f"{'view':<10} {'events read':>12} {'seconds':>8} {'log ev/s':>9} {'read ev/s':>9}"
        f" {'cpu %':>6} {'RSS MiB':>8} {'heap MiB':>8}  rows"
    )
    for r in results:
        rows = ", ".join(f"{t} {n:,}" for t, n in r["rows"].items())
        print(
            f"{r['view']:<10} {r['events']:>12,} {r['seconds']:>8.1f}"
            f" {total / r['seconds']:>9,.0f} {r['events'] / r['seconds']:>9,.0f}"
            f" {100 * r['cpu'] / r['seconds']:>6.0f} {mib(r['rss_peak']):>8}"
            f" {mib(r['traced_peak']):>8}  {rows}"
        )
    wall = sum(r["seconds"] for r in results)
    read = sum(r["events"] for r in results)
    print(
        f"{'all':<10} {read:>12,} {wall:>8.1f} {total / wall:>9,.0f} {read / wall:>9,.0f}"
        f"{'':>6} {max(r['rss_peak'] for r in results):>8,.0f}"
    )
    print(
        "  (RSS when each process started measuring: "
        + ", ".join(f"{r['view']} {r['rss_before']:.0f}" for r in results)
        + f" MiB; {load()})"
    )


if __name__ == "__main__":
    main()
