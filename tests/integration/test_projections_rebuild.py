"""Rebuilding a view from the start of the log into a shadow copy, then switching to it.

The live generation keeps answering queries (and following the log) during a rebuild; the
switch is atomic; a rebuild that stops half way resumes; rows that no event can produce are
gone afterwards, and `verify` names them first.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.bootstrap import build_views
from ledger.domain import commands as c
from ledger.domain import customer as cust
from ledger.store import Settings
from projections import Projections
from projections import rebuild as rebuilding
from projections.queries import ReadModels, SaleFilters
from projections.view import Event
from tests.integration.catalog_support import (
    catalog_line,
    create_product,
    new_sale,
    pay_in_full,
    receive,
)
from tests.integration.conftest import CARD, MERCHANT_A, ctx
from tests.integration.projection_support import (
    LOCATIONS,
    assert_catalog_matches_domain,
    assert_customers_match_domain,
    assert_inventory_matches_domain,
    assert_orders_match_domain,
    catch_up,
    head,
    ready_projections,
    view_contents,
    view_rows,
)


@pytest.fixture
def projections(ledger: Ledger) -> Projections:
    """The ledger's views, set up (the `settings` fixture drops their schemas afterwards)."""
    return ready_projections(ledger)


def _generation(projections: Projections, view: str) -> int:
    (status,) = [s for s in projections.status() if s.view == view]
    return status.generation


def _import_orders(ledger: Ledger, count: int, skus: Sequence[str], start: int = 0) -> set[str]:
    """Completed sales in bulk (three sale events each, plus the stock they move)."""
    orders: list[c.ImportOrder | Any] = []
    for i in range(start, start + count):
        sku = skus[i % len(skus)]
        product = ledger.get_product_by_sku(MERCHANT_A, sku)
        orders.append(
            c.ImportOrder(
                channel="webshop",
                external_order_id=f"EXT-{i}",
                sales_channel=c.Channel.ONLINE,
                location_id=LOCATIONS[i % 2],
                currency_code="USD",
                line_items=(
                    c.LineItemInput(sku, "Item", 1 + i % 2, product.price, tax_rate_ppm=0),
                ),
                payments=(
                    c.ImportedPayment(
                        tender=c.Tender.CARD, amount=(1 + i % 2) * product.price, card=CARD
                    ),
                ),
            )
        )
    results = ledger.import_sales(ctx(), orders)
    assert all(r.sale_id for r in results)
    return {r.sale_id for r in results}


def _business(ledger: Ledger, imports: int = 0) -> tuple[list[str], set[str]]:
    """Products, stock, a customer, live sales and (optionally) many imported ones."""
    products = [create_product(ledger, sku=f"SKU-{i}") for i in range(3)]
    for product in products:
        receive(ledger, product, 100)
    customer = ledger.create_customer(ctx(), cust.CreateCustomer(name="Ann")).aggregate
    sales = set()
    for i, product in enumerate(products):
        sale = new_sale(ledger, catalog_line(sku=product.sku, quantity=1 + i))
        ledger.attach_customer(ctx(), c.AttachCustomer(str(sale.sale.id), str(customer.id)))
        pay_in_full(ledger, str(sale.sale.id))
        sales.add(str(sale.sale.id))
    if imports:
        sales |= _import_orders(ledger, imports, [p.sku for p in products])
    return [str(p.id) for p in products], sales


def _sale_listing(reads: ReadModels) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    token = ""
    while True:
        page = reads.list_sales(MERCHANT_A, SaleFilters(), page_size=500, page_token=token)
        rows.extend((r["sale_id"], r["status"], r["total"], r["paid_total"]) for r in page.rows)
        token = page.next_page_token
        if not token:
            return rows


def test_queries_keep_answering_while_a_rebuild_switches_generations(
    ledger: Ledger, projections: Projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sales = _business(ledger, imports=400)
    catch_up(projections)
    reads = ReadModels(projections)
    before = _sale_listing(reads)
    assert len(before) == len(sales)
    # Small shadow pages, so the copy is filled over several transactions while queries run.
    monkeypatch.setattr(rebuilding, "REBUILD_PAGE", 300)
    monkeypatch.setattr(rebuilding, "SWITCH_WITHIN", 100)

    stop = threading.Event()
    answers: list[list[tuple[Any, ...]]] = []
    errors: list[BaseException] = []

    def query() -> None:
        while not stop.is_set():
            try:
                answers.append(_sale_listing(reads))
            except BaseException as e:
                errors.append(e)

    thread = threading.Thread(target=query)
    thread.start()
    try:
        generations = [_generation(projections, "orders")]
        progress: list[tuple[int, int]] = []
        for _ in range(3):
            report = projections.rebuild(
                "orders", progress=lambda done, end: progress.append((done, end))
            )
            assert report.differences == []
            assert not report.resumed
            generations.append(_generation(projections, "orders"))
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
    assert generations == [1, 2, 3, 4]
    assert len(progress) > 3 * 2, "the shadow copy was filled page by page"
    assert len(answers) >= 3
    assert all(answer == before for answer in answers)
    assert _sale_listing(reads) == before
    with psycopg.connect(ledger.database_url) as conn:
        left = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
            (f"{ledger.ledger_recorder.datastore.schema}__orders_",),
        ).fetchall()
    assert left == [(f"{ledger.ledger_recorder.datastore.schema}__orders_4",)]


def test_a_rebuild_keeps_up_with_writers_and_a_live_runner(
    ledger: Ledger, projections: Projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    products, sales = _business(ledger, imports=300)
    monkeypatch.setattr(rebuilding, "REBUILD_PAGE", 200)
    monkeypatch.setattr(rebuilding, "SWITCH_WITHIN", 50)
    skus = [ledger.get_product(MERCHANT_A, p).sku for p in products]
    more: set[str] = set()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(10):
                more.update(_import_orders(ledger, 5, skus, start=1000 + 5 * i))
                sale = new_sale(ledger, catalog_line(sku=skus[i % 3]))
                pay_in_full(ledger, str(sale.sale.id))
                more.add(str(sale.sale.id))
        except BaseException as e:
            errors.append(e)

    with projections.running():
        writer = threading.Thread(target=write)
        writer.start()
        for name in ("orders", "inventory"):
            assert projections.rebuild(name).differences == []
        writer.join(60)
        assert errors == []
        for name in projections.views:
            assert projections.wait_for(name, head(ledger), 10)
    assert _generation(projections, "orders") == 2
    assert_orders_match_domain(ledger, projections, MERCHANT_A, sales | more)
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, products)
    for name in projections.views:
        assert projections.rebuild(name, verify=True).differences == []


def _plant(projections: Projections, view: str, table: str, row: dict[str, Any]) -> None:
    schema, _ = projections.live_schema(view)
    columns = SQL(", ").join(map(Identifier, row))
    values = SQL(", ").join([SQL("%s")] * len(row))
    with psycopg.connect(projections.url, autocommit=True) as conn:
        conn.execute(
            SQL("INSERT INTO {} ({}) VALUES ({})").format(
                Identifier(schema, table), columns, values
            ),
            list(row.values()),
        )


NOW = datetime(2020, 1, 1, tzinfo=UTC)


def _fake_sale(sale_id: uuid.UUID) -> dict[str, Any]:
    money = dict.fromkeys(
        ["subtotal", "discount_total", "tax_total", "total", "paid_total", "refunded_total",
         "pending_total", "amount_due", "tip_total", "item_count"],
        100,
    )  # fmt: skip
    return {
        "sale_id": sale_id,
        "merchant_id": MERCHANT_A,
        "version": 1,
        "position": 1,
        "status": "completed",
        "channel": "in_store",
        "location_id": "loc-1",
        "customer_id": "",
        "currency_code": "USD",
        **money,
        "external_order_id": "",
        "import_channel": "",
        "created_at": NOW,
        "updated_at": NOW,
    }


def test_rows_no_event_produced_are_reported_by_verify_and_gone_after_a_rebuild(
    ledger: Ledger, projections: Projections
) -> None:
    products, sales = _business(ledger)
    catch_up(projections)
    reads = ReadModels(projections)
    honest = _sale_listing(reads)

    fake = uuid.uuid4()
    _plant(projections, "orders", "orders", _fake_sale(fake))
    assert fake in {row[0] for row in _sale_listing(reads)}
    _plant(projections, "catalog", "products", {
        "product_id": uuid.uuid4(), "merchant_id": MERCHANT_A, "version": 1, "sku": "FAKE",
        "name": "Fake", "price": 1, "currency_code": "USD", "tax_rate_ppm": 0, "barcode": "",
        "category": "", "status": "active", "discontinue_reason": "", "created_at": NOW,
        "updated_at": NOW,
    })  # fmt: skip
    _plant(projections, "customers", "customer_spend", {
        "merchant_id": MERCHANT_A, "customer_id": "ghost", "currency_code": "USD",
        "orders": 9, "spend": 999, "refunds": 0,
    })  # fmt: skip
    # A doctored row: same key, different numbers.
    schema, _ = projections.live_schema("inventory")
    with psycopg.connect(projections.url, autocommit=True) as conn:
        conn.execute(
            SQL("UPDATE {} SET on_hand = on_hand + 1000").format(Identifier(schema, "stock_levels"))
        )

    expected = {
        "orders": ["orders: 1 rows only in live"],
        "catalog": ["products: 1 rows only in live"],
        "customers": ["customer_spend: 1 rows only in live"],
        "inventory": [
            "stock_levels: 3 rows only in live",
            "stock_levels: 3 rows missing from live",
        ],
    }
    for name, differences in expected.items():
        report = projections.rebuild(name, verify=True)
        assert report.differences == differences, name
        assert report.generation == 2
    for name in expected:  # a second rebuild finds the planted rows gone for good
        assert projections.rebuild(name, verify=True).differences == []

    assert _sale_listing(reads) == honest
    assert fake not in {r["sale_id"] for r in view_rows(projections, "orders", "orders")}
    assert_orders_match_domain(ledger, projections, MERCHANT_A, sales)
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, products)
    assert_catalog_matches_domain(ledger, projections, MERCHANT_A, products)
    customers = [r["customer_id"] for r in view_rows(projections, "customers", "customers")]
    assert_customers_match_domain(ledger, projections, MERCHANT_A, customers, sales)


def test_an_interrupted_rebuild_resumes_where_it_stopped(
    ledger: Ledger, projections: Projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    products, sales = _business(ledger, imports=200)
    catch_up(projections)
    before = view_contents(projections, "inventory")
    monkeypatch.setattr(rebuilding, "REBUILD_PAGE", 100)
    monkeypatch.setattr(rebuilding, "SWITCH_WITHIN", 50)
    view = projections.views["inventory"]
    original = view.apply
    calls: list[int] = []

    def apply(curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        calls.append(len(events))
        if len(calls) == 3:  # the third page of the shadow copy: half written, then a crash
            original(curs, schema, events[: len(events) // 2])
            raise RuntimeError("rebuild interrupted")
        original(curs, schema, events)

    monkeypatch.setattr(view, "apply", apply)
    with pytest.raises(RuntimeError, match="interrupted"):
        projections.rebuild("inventory")
    monkeypatch.setattr(view, "apply", original)

    (status,) = [s for s in projections.status() if s.view == "inventory"]
    assert status.rebuilding
    assert status.generation == 1
    # The live view went on answering from the old generation meanwhile.
    assert view_contents(projections, "inventory") == before
    reads = ReadModels(projections)
    assert len(reads.list_stock_levels(MERCHANT_A).rows) == len(before["stock_levels"])

    receive(ledger, ledger.get_product(MERCHANT_A, products[0]), 5)  # the log moves on
    end = head(ledger)
    progress: list[int] = []
    report = projections.rebuild("inventory", verify=True, progress=lambda p, _: progress.append(p))
    assert report.resumed
    assert (report.generation, report.position) == (2, end)
    assert report.differences == []
    # It went on after the two pages it had saved, not from the start of the log.
    total = len(view_rows(projections, "inventory", "stock_movements")) + len(
        view_rows(projections, "inventory", "stock_levels")
    )
    assert report.events == total - sum(calls[:2])
    assert progress[0] > 0
    assert progress[-1] == end
    (status,) = [s for s in projections.status() if s.view == "inventory"]
    assert not status.rebuilding
    assert (status.generation, status.position) == (2, end)
    catch_up(projections)
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, products)
    assert_orders_match_domain(ledger, projections, MERCHANT_A, sales)


def test_two_rebuilds_of_one_view_at_once_run_one_after_the_other(
    ledger: Ledger, projections: Projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two operators (or a retrying script) rebuild the same view: nothing counts twice."""
    products, sales = _business(ledger, imports=150)
    catch_up(projections)
    before = {name: view_contents(projections, name) for name in ("customers", "inventory")}
    monkeypatch.setattr(rebuilding, "REBUILD_PAGE", 20)
    monkeypatch.setattr(rebuilding, "SWITCH_WITHIN", 10)
    reports: list[Any] = []

    def rebuild(name: str) -> None:
        try:
            # Each rebuild from a process (a ledger, a pool) of its own.
            other = Ledger.open(_settings_of(ledger))
            try:
                reports.append(build_views(other).rebuild(name))
            finally:
                other.close()
        except BaseException as e:
            reports.append(e)

    threads = [
        threading.Thread(target=rebuild, args=(name,))
        for name in ("customers", "customers", "inventory", "inventory")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(r, rebuilding.RebuildReport) for r in reports), reports
    assert sorted(r.generation for r in reports) == [2, 2, 3, 3]
    for name, contents in before.items():
        assert view_contents(projections, name) == contents
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, products)
    customers = [r["customer_id"] for r in view_rows(projections, "customers", "customers")]
    assert_customers_match_domain(ledger, projections, MERCHANT_A, customers, sales)


def _settings_of(ledger: Ledger) -> Settings:
    return Settings(
        database_url=ledger.database_url,
        schema=ledger.ledger_recorder.datastore.schema,
        pool_size=4,
    )
