"""Helpers for the projection tests (integration tier): views against the domain they show.

A view's tables live in schemas of their own (`<base>__<view>_<generation>`), next to the
ledger's schema, so the tests drop those as well as the ledger's schema when they finish.
Every comparison here reads the view's tables directly and the domain through the ledger's
own commands and repository, never through the view code under test.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.bootstrap import build_views
from ledger.domain.customer import Customer
from ledger.domain.product import Product
from ledger.domain.sale import Sale
from ledger.store import Settings
from projections import Projections

LOCATIONS = ("loc-1", "loc-2")
VIEW_NAMES = ("orders", "inventory", "customers", "catalog")


def drop_schemas(url: str, base: str) -> None:
    """Drops the ledger's schema and every generation of its views."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR starts_with(nspname, %s)",
            (base, f"{base}__"),
        ).fetchall()
        for (name,) in names:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(name)))


@contextmanager
def fresh_ledger(database_url: str, pool_size: int = 4) -> Iterator[Ledger]:
    """A ledger in a schema of its own, dropped (with its views) afterwards."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    ledger = Ledger.open(Settings(database_url=database_url, schema=schema, pool_size=pool_size))
    try:
        yield ledger
    finally:
        ledger.close()
        drop_schemas(database_url, schema)


def ready_projections(ledger: Ledger) -> Projections:
    projections = build_views(ledger)
    projections.ensure()
    return projections


def catch_up(projections: Projections, page_size: int = 1000) -> None:
    """Steps every view until it has applied the whole committed log."""
    for view in projections.views.values():
        while projections.step(view, page_size):
            pass


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


# ---- reading the views -----------------------------------------------------------------------


def _rows(url: str, schema: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        query = SQL("SELECT * FROM {}").format(Identifier(schema, table))
        return conn.execute(query).fetchall()


def view_rows(projections: Projections, view: str, table: str) -> list[dict[str, Any]]:
    """Every row of one table of the view's live generation."""
    schema, _ = projections.live_schema(view)
    return _rows(projections.url, schema, table)


def view_contents(projections: Projections, view: str) -> dict[str, list[str]]:
    """Each table of the view's live generation as a sorted list of rendered rows."""
    return {
        table: sorted(repr(sorted(row.items())) for row in view_rows(projections, view, table))
        for table in projections.views[view].tables
    }


def all_contents(projections: Projections) -> dict[str, dict[str, list[str]]]:
    return {name: view_contents(projections, name) for name in projections.views}


def assert_rebuild_matches(projections: Projections) -> None:
    """Every view equals a fresh rebuild from the start of the log, by `--verify` and by rows."""
    for name in projections.views:
        before = view_contents(projections, name)
        generation = _generation(projections, name)
        report = projections.rebuild(name, verify=True)
        assert report.differences == [], f"{name}: {report.differences}"
        assert _generation(projections, name) == generation + 1
        assert view_contents(projections, name) == before, f"{name} differs from its rebuild"


def _generation(projections: Projections, view: str) -> int:
    schema, _ = projections.live_schema(view)
    return int(schema.rsplit("_", 1)[1])


# ---- the domain, for comparison --------------------------------------------------------------


def assert_orders_match_domain(
    ledger: Ledger, projections: Projections, merchant_id: str, sale_ids: set[str]
) -> None:
    """The orders view holds exactly these sales, each as the Sale aggregate says."""
    rows = {str(r["sale_id"]): r for r in view_rows(projections, "orders", "orders")}
    assert set(rows) == sale_ids
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in view_rows(projections, "orders", "order_lines"):
        lines[str(line["sale_id"])].append(line)
    for sale_id in sale_ids:
        sale = ledger.get_sale(merchant_id, sale_id)
        row = rows[sale_id]
        expected = {
            "merchant_id": merchant_id,
            "version": sale.version,
            "status": sale.status.value,
            "customer_id": sale.customer_id,
            "currency_code": sale.currency_code,
            "subtotal": sale.subtotal,
            "discount_total": sale.discount_total,
            "tax_total": sale.tax_total,
            "total": sale.total,
            "paid_total": sale.paid_total,
            "refunded_total": sale.refunded_total,
            "pending_total": sale.pending_total,
            "amount_due": sale.amount_due,
            "tip_total": sale.tip_total,
            "item_count": sum(line.quantity for line in sale.line_items),
            "external_order_id": sale.external_order_id,
            "import_channel": sale.import_channel,
            "created_at": sale.created_on,
            "updated_at": sale.modified_on,
            "completed_at": sale.completed_at,
            "canceled_at": sale.canceled_at,
        }
        assert {k: row[k] for k in expected} == expected, f"sale {sale_id}"
        got = [
            (str(r["line_id"]), r["quantity"], r["unit_price"], r["total_amount"])
            for r in sorted(lines[sale_id], key=lambda r: r["line_no"])
        ]
        want = [
            (line.line_id, line.quantity, line.unit_price, line.total_amount)
            for line in sale.line_items
        ]
        assert got == want, f"lines of sale {sale_id}"


STOCK_COUNTERS = (
    "on_hand", "received", "sold", "returned", "adjusted", "transferred_in", "transferred_out",
    "count_variance", "last_count", "last_count_variance", "last_counted_at", "version",
    "reserved",
)  # fmt: skip


def assert_inventory_matches_domain(
    ledger: Ledger, projections: Projections, merchant_id: str, product_ids: list[str]
) -> None:
    """Every stock level equals the StockItem; its movements are its events, once each."""
    rows = {
        (r["product_id"], r["location_id"]): r
        for r in view_rows(projections, "inventory", "stock_levels")
    }
    movements: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for m in view_rows(projections, "inventory", "stock_movements"):
        movements[m["stock_item_id"]].append(m)
    expected_keys = set()
    for product_id in product_ids:
        for location in LOCATIONS:
            item = ledger.get_stock_item(merchant_id, product_id, location)
            if item is None:
                continue
            expected_keys.add((product_id, location))
            row = rows.get((product_id, location))
            assert row is not None, f"no stock level for {product_id} at {location}"
            want = {k: getattr(item, k) for k in STOCK_COUNTERS}
            assert {k: row[k] for k in STOCK_COUNTERS} == want, f"{product_id} at {location}"
            moved = sorted(movements[item.id], key=lambda m: m["position"])
            # One movement per event after the item's creation, never one twice.
            assert len(moved) == item.version - 1
            if moved:
                assert moved[-1]["on_hand_after"] == item.on_hand
    assert set(rows) == expected_keys


def assert_catalog_matches_domain(
    ledger: Ledger, projections: Projections, merchant_id: str, product_ids: list[str]
) -> None:
    rows = {str(r["product_id"]): r for r in view_rows(projections, "catalog", "products")}
    assert set(rows) == set(product_ids)
    for product_id in product_ids:
        product: Product = ledger.get_product(merchant_id, product_id)
        row = rows[product_id]
        want = {
            "version": product.version,
            "sku": product.sku,
            "name": product.name,
            "price": product.price,
            "tax_rate_ppm": product.tax_rate_ppm,
            "status": "discontinued" if product.is_discontinued else "active",
            "updated_at": product.modified_on,
        }
        assert {k: row[k] for k in want} == want, f"product {product_id}"


def assert_customers_match_domain(
    ledger: Ledger,
    projections: Projections,
    merchant_id: str,
    customer_ids: list[str],
    sale_ids: set[str],
) -> None:
    """Profiles equal the Customer aggregates; purchase figures add up from the sales.

    A completed sale counts for the customer it names; a refund for the customer the sale
    named when the refund was made (read from the sale's own events).
    """
    rows = {r["customer_id"]: r for r in view_rows(projections, "customers", "customers")}
    assert set(rows) == set(customer_ids)
    for customer_id in customer_ids:
        profile: Customer = ledger.get_customer(merchant_id, customer_id)
        row = rows[customer_id]
        want = {
            "version": profile.version,
            "name": profile.name,
            "email": profile.email,
            "marketing_consent": profile.marketing_consent,
            "consent_channel": profile.consent_channel,
            "tags": profile.tags,
        }
        assert {k: row[k] for k in want} == want, f"customer {customer_id}"

    orders: dict[tuple[str, str], int] = defaultdict(int)
    spend: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for sale_id in sale_ids:
        sale = ledger.get_sale(merchant_id, sale_id)
        customer = ""
        for event in ledger.events.get(uuid.UUID(sale_id)):
            if isinstance(event, (Sale.Created, Sale.CustomerAttached)):
                customer = event.customer_id
            elif isinstance(event, Sale.Completed) and customer:
                orders[customer, sale.currency_code] += 1
                spend[customer, sale.currency_code][0] += 1
                spend[customer, sale.currency_code][1] += sale.total
            elif isinstance(event, Sale.PaymentRefunded) and customer:
                spend[customer, sale.currency_code][2] += event.amount
    got_spend = {
        (r["customer_id"], r["currency_code"]): [r["orders"], r["spend"], r["refunds"]]
        for r in view_rows(projections, "customers", "customer_spend")
    }
    assert got_spend == dict(spend)
    got_orders = {
        r["customer_id"]: r["order_count"]
        for r in view_rows(projections, "customers", "customer_stats")
    }
    want_orders: dict[str, int] = defaultdict(int)
    for (customer, _), n in orders.items():
        want_orders[customer] += n
    assert got_orders == dict(want_orders)
