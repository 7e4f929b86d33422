"""`posledger projections run|status|rebuild` and `serve --projections` as an operator runs
them: real subprocesses on the test's schema, real signals, and reads over gRPC.

Writes go through an in-process server (which runs no projections itself), so whatever
becomes visible in the views was applied by the subprocess under test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.bootstrap import build_views
from ledger.store import Settings
from ledger.v1 import catalog_pb2 as catalog_pb
from ledger.v1 import customers_pb2 as customers_pb
from ledger.v1 import inventory_pb2 as inventory_pb
from ledger.v1 import sales_pb2 as pb
from projections.runner import Projections
from tests.e2e import api_client as api
from tests.e2e.api_client import Stubs
from tests.e2e.test_cli import CLI, EXIT_TIMEOUT, ServeProcess, _json_lines, _run

T = api.TIMEOUT
STARTUP_TIMEOUT = 30.0
VIEWS = {"orders", "inventory", "customers", "catalog"}


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of a `posledger` process using this test's schema."""
    assert settings.database_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSLEDGER_")}
    env.update(
        POSLEDGER_DATABASE_URL=settings.database_url,
        POSLEDGER_DB_SCHEMA=settings.schema,
        COLUMNS="200",  # rich tables and messages on one line each
    )
    return env


@pytest.fixture(autouse=True)
def drop_view_schemas(settings: Settings) -> Iterator[None]:
    """Views live in schemas of their own (`<schema>__<view>_<generation>`): drop them too."""
    yield
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
            (f"{settings.schema}__",),
        ).fetchall()
        for (name,) in names:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(name)))


@pytest.fixture
def views(ledger: Ledger) -> Projections:
    views = build_views(ledger)
    views.ensure()
    return views


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def caught_up(views: Projections, ledger: Ledger) -> bool:
    stop = head(ledger)
    return all(views.live_schema(name)[1] >= stop for name in VIEWS)


class Runner:
    """`posledger projections run` in a subprocess; its JSON logs in a file."""

    def __init__(self, env: dict[str, str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr: IO[str] = stderr_path.open("w")
        self.process = subprocess.Popen(
            [*CLI, "projections", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            text=True,
        )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def holding(self) -> list[str]:
        """The views this runner logged it holds, in the order it took them."""
        return [
            r["view"] for r in _json_lines(self.stderr) if r.get("event") == "projection_holding"
        ]

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=EXIT_TIMEOUT)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=EXIT_TIMEOUT)

    def close(self) -> None:
        self.kill()
        self._stderr.close()


@pytest.fixture
def start_runner(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], Runner]]:
    started: list[Runner] = []

    def start() -> Runner:
        runner = Runner(cli_env, tmp_path / f"runner-{len(started)}.stderr")
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.close()


def status_rows(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """`posledger projections status`, parsed: view → column → cell."""
    done = _run(env, "projections", "status")
    assert done.returncode == 0, done.stderr
    rows = [
        [cell.strip() for cell in line.strip().strip("┃│").split("┃" if "┃" in line else "│")]
        for line in done.stdout.splitlines()
        if line.startswith(("┃", "│"))
    ]
    header, *body = rows
    assert header == [
        "view",
        "runner",
        "generation",
        "position",
        "head",
        "lag (events)",
        "lag (s)",
        "rebuild",
    ], done.stdout
    return {row[0]: dict(zip(header, row, strict=True)) for row in body}


# ---- writes ------------------------------------------------------------------------------


def sell(stubs: Stubs, sku: str, quantity: int, **overrides: Any) -> pb.RecordPaymentResultResponse:
    """A completed sale of `quantity` units of a catalog product."""
    request = api.create_sale_request(
        line_items=[api.line_item(sku=sku, quantity=quantity, unit_price=None)], **overrides
    )
    sale = stubs.sales.CreateSale(request, timeout=T).sale
    payment = api.request_payment(stubs.sales, sale.id, sale.total).payment
    return api.record_result(stubs.sales, sale.id, payment.id)


def receive(stubs: Stubs, product_id: str, quantity: int) -> int:
    request = api.receive_stock_request(product_id, quantity)
    return stubs.inventory.ReceiveStock(request, timeout=T).position


def on_hand(stubs: Stubs, product_id: str, min_position: int) -> int:
    request = inventory_pb.GetStockLevelRequest(
        product_id=product_id, location_id="store-1", min_position=min_position
    )
    return stubs.inventory.GetStockLevel(request, timeout=T).stock_level.stock_item.on_hand


def movement_positions(stubs: Stubs, product_id: str, min_position: int) -> list[int]:
    request = inventory_pb.ListStockMovementsRequest(
        product_id=product_id, location_id="store-1", page_size=500, min_position=min_position
    )
    response = stubs.inventory.ListStockMovements(request, timeout=T)
    assert response.next_page_token == ""
    return [m.position for m in response.movements]


def assert_views_equal_a_rebuild(views: Projections) -> None:
    """Every view equals one rebuilt from the log: nothing applied twice or missed."""
    for name in sorted(VIEWS):
        report = views.rebuild(name, verify=True)
        assert report.differences == [], (name, report.differences)


# ---- status ------------------------------------------------------------------------------


def test_status_shows_each_view_with_position_head_and_lag(
    ledger: Ledger, stubs: Stubs, views: Projections, cli_env: dict[str, str]
) -> None:
    beans = api.create_product(stubs.catalog)
    receive(stubs, beans.id, 3)
    sell(stubs, beans.sku, 1)
    now = head(ledger)
    assert now > 0

    behind = status_rows(cli_env)

    assert set(behind) == VIEWS
    for name, row in behind.items():
        assert row["generation"] == "1", row
        assert row["position"] == "0", row
        assert row["head"] == str(now), row
        assert row["lag (events)"] == str(now), row
        assert float(row["lag (s)"]) >= 0, row
        assert row["rebuild"] == "", name

    for view in views.views.values():
        while views.step(view):
            pass
    current = status_rows(cli_env)

    for row in current.values():
        assert (row["position"], row["head"], row["lag (events)"]) == (str(now), str(now), "0")
        assert row["lag (s)"] == "0.0"
        assert row["runner"] == "none"  # nobody follows them: visible, not silent

    with views.running():
        followed = status_rows(cli_env)
    assert {row["runner"] for row in followed.values()} == {"following"}


# ---- rebuild -----------------------------------------------------------------------------

REBUILT = re.compile(
    r"Rebuilt orders \(generation (\d+)\) up to position (\d+): (\d+) events in ([\d.]+) s\."
)


def test_rebuild_with_verify_switches_to_an_equal_copy(
    ledger: Ledger, stubs: Stubs, views: Projections, cli_env: dict[str, str]
) -> None:
    beans = api.create_product(stubs.catalog)
    for n in range(4):
        sell(stubs, beans.sku, n + 1, location_id=f"till-{n}")
    walk_in = api.create_customer(stubs.customers, name="Walk-in").id
    open_sale = api.create_sale(stubs.sales, customer_id=walk_in)
    with views.running():
        eventually(lambda: caught_up(views, ledger), "views catch up")
        before = stubs.sales.ListSales(pb.ListSalesRequest(), timeout=T)

        done = _run(cli_env, "projections", "rebuild", "orders", "--verify")

        assert done.returncode == 0, done.stderr
        message = " ".join(done.stderr.split())
        assert "The rebuilt view equals the live view." in message
        assert "difference" not in message
        found = REBUILT.search(message)
        assert found, message
        generation, position, events, seconds = found.groups()
        assert generation == "2"
        assert int(position) == head(ledger)
        assert int(events) > 0
        assert 0 <= float(seconds) < 60
        assert views.live_schema("orders") == (
            f"{ledger.ledger_recorder.datastore.schema}__orders_2",
            int(position),
        )
        rows = status_rows(cli_env)
        assert rows["orders"]["generation"] == "2"
        assert rows["inventory"]["generation"] == "1"

        # Queries now read the new generation: the same answer, and it keeps following.
        after = stubs.sales.ListSales(pb.ListSalesRequest(), timeout=T)
        assert list(after.sales) == list(before.sales)
        assert len(after.sales) == 5
        paid = api.request_payment(stubs.sales, open_sale.id, open_sale.total)
        done_sale = api.record_result(stubs.sales, open_sale.id, paid.payment.id)
        listed = stubs.sales.ListSales(
            pb.ListSalesRequest(customer_id=walk_in, min_position=done_sale.position), timeout=T
        )
        assert [s.status for s in listed.sales] == [pb.SALE_STATUS_COMPLETED]


def test_rebuild_verify_reports_a_live_view_that_drifted(
    ledger: Ledger, stubs: Stubs, views: Projections, cli_env: dict[str, str]
) -> None:
    sale, _ = api.paid_sale(stubs.sales)
    for view in views.views.values():
        while views.step(view):
            pass
    schema, _ = views.live_schema("orders")
    with ledger.ledger_recorder.datastore.transaction(commit=True) as curs:
        curs.execute(SQL("UPDATE {} SET total = total + 1").format(Identifier(schema, "orders")))

    done = _run(cli_env, "projections", "rebuild", "orders", "--verify")

    message = " ".join(done.stderr.split())
    assert "difference: orders: 1 rows only in live" in message, message
    assert "difference: orders: 1 rows missing from live" in message, message
    assert "equals the live view" not in message
    # The rebuilt copy, computed from the log, is what queries read now (served queries
    # need a runner following the view).
    with views.running():
        (row,) = stubs.sales.ListSales(pb.ListSalesRequest(), timeout=T).sales
    assert row.total == sale.total


def test_rebuild_of_an_unknown_view_fails(cli_env: dict[str, str]) -> None:
    done = _run(cli_env, "projections", "rebuild", "ordres")

    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "No view 'ordres'" in message
    assert "catalog, customers, inventory, orders" in message


# ---- run ---------------------------------------------------------------------------------


def test_run_keeps_views_up_to_date_and_stops_on_sigterm(
    ledger: Ledger,
    stubs: Stubs,
    views: Projections,
    start_runner: Callable[[], Runner],
) -> None:
    beans = api.create_product(stubs.catalog)
    receive(stubs, beans.id, 10)  # written before the runner starts: it catches up
    runner = start_runner()
    eventually(lambda: set(runner.holding()) == VIEWS, "the runner holds every view", 30)

    ada = stubs.customers.CreateCustomer(api.create_customer_request(), timeout=T)
    sold = sell(stubs, beans.sku, 3, customer_id=ada.customer.id)
    # The in-process server waits (bounded) for the subprocess to apply the sale.
    assert on_hand(stubs, beans.id, sold.position) == 7
    listed = stubs.sales.ListSales(pb.ListSalesRequest(min_position=sold.position), timeout=T)
    assert [s.id for s in listed.sales] == [sold.sale.id]
    found = stubs.customers.ListCustomers(
        customers_pb.ListCustomersRequest(min_position=sold.position), timeout=T
    )
    assert [c.customer.id for c in found.customers] == [ada.customer.id]
    renamed = stubs.catalog.UpdateProduct(
        api.update_product_request(beans.id, {"name": "Beans"}), timeout=T
    )
    products = stubs.catalog.ListProducts(
        catalog_pb.ListProductsRequest(min_position=renamed.position), timeout=T
    )
    assert [p.name for p in products.products] == ["Beans"]
    eventually(lambda: caught_up(views, ledger), "every view reaches the head")

    assert runner.terminate() == 0, runner.stderr
    assert "projections_running" in [r.get("event") for r in _json_lines(runner.stderr)]

    # Stopped, it applies nothing more.
    later = receive(stubs, beans.id, 1)
    time.sleep(0.3)
    assert views.live_schema("inventory")[1] < later
    assert {s.view: s for s in views.status()}["inventory"].lag_events > 0


def test_a_second_runner_is_a_standby_that_takes_over_when_the_first_dies(
    ledger: Ledger,
    stubs: Stubs,
    views: Projections,
    start_runner: Callable[[], Runner],
) -> None:
    beans = api.create_product(stubs.catalog)
    first, second = start_runner(), start_runner()  # started together
    eventually(
        lambda: set(first.holding()) | set(second.holding()) == VIEWS,
        "the two runners hold every view between them",
        30,
    )
    time.sleep(1.2)  # a standby retries its locks every second or so: give it a chance
    assert not set(first.holding()) & set(second.holding()), "a view held twice"
    assert len(first.holding()) + len(second.holding()) == len(VIEWS)

    position = 0
    for _ in range(6):
        position = receive(stubs, beans.id, 2)
    for _ in range(2):
        position = sell(stubs, beans.sku, 1).position
    assert on_hand(stubs, beans.id, position) == 10
    # 6 receipts, and each sale's reservation and its sale.
    assert len(set(movement_positions(stubs, beans.id, position))) == 10
    eventually(lambda: caught_up(views, ledger), "every view reaches the head")

    # Kill (no clean shutdown) whichever holds the inventory view.
    holder, standby = (first, second) if "inventory" in first.holding() else (second, first)
    taken_over = set(VIEWS) - set(standby.holding())
    assert "inventory" in taken_over
    holder.process.kill()
    holder.process.wait(timeout=EXIT_TIMEOUT)

    for _ in range(3):
        position = receive(stubs, beans.id, 5)
    customer = api.create_customer(stubs.customers).id
    position = sell(stubs, beans.sku, 4, customer_id=customer).position
    assert on_hand(stubs, beans.id, position) == 10 + 15 - 4
    assert len(set(movement_positions(stubs, beans.id, position))) == 15
    listed = stubs.sales.ListSales(pb.ListSalesRequest(min_position=position), timeout=T)
    assert len(listed.sales) == 3
    eventually(lambda: set(standby.holding()) == VIEWS, "the standby holds every view")
    assert standby.alive()
    eventually(lambda: caught_up(views, ledger), "every view reaches the head")

    assert_views_equal_a_rebuild(views)
    assert standby.terminate() == 0, standby.stderr


# ---- serve -------------------------------------------------------------------------------


def test_serve_with_projections_reads_your_writes_over_the_wire(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    process = ServeProcess(cli_env, tmp_path / "serve.stderr", "--projections")
    channel = grpc.insecure_channel(f"127.0.0.1:{process.port}")
    try:
        process.wait_until_serving(channel)
        stubs = Stubs.on(channel)
        for n in range(3):
            created = stubs.catalog.CreateProduct(
                api.create_product_request(sku=f"SKU-{n}", barcode=""), timeout=T
            )
            products = stubs.catalog.ListProducts(
                catalog_pb.ListProductsRequest(min_position=created.position), timeout=T
            )
            assert [p.sku for p in products.products][-1] == f"SKU-{n}"
            received = stubs.inventory.ReceiveStock(
                api.receive_stock_request(created.product.id, 5), timeout=T
            )
            assert on_hand(stubs, created.product.id, received.position) == 5
            levels = stubs.inventory.ListStockLevels(
                inventory_pb.ListStockLevelsRequest(min_position=received.position), timeout=T
            )
            assert len(levels.stock_levels) == n + 1
            ada = stubs.customers.CreateCustomer(
                api.create_customer_request(name=f"Customer {n}"), timeout=T
            )
            done = sell(stubs, f"SKU-{n}", 2, customer_id=ada.customer.id)
            assert on_hand(stubs, created.product.id, done.position) == 3
            summary = stubs.customers.GetCustomerSummary(
                customers_pb.GetCustomerSummaryRequest(
                    customer_id=ada.customer.id, min_position=done.position
                ),
                timeout=T,
            ).summary
            assert summary.order_count == 1
            assert [(s.currency_code, s.spend) for s in summary.spend] == [("USD", done.sale.total)]
            sales = stubs.sales.ListSales(
                pb.ListSalesRequest(min_position=done.position), timeout=T
            ).sales
            assert sales[0].id == done.sale.id
            assert sales[0].status == pb.SALE_STATUS_COMPLETED
            assert len(sales) == n + 1
        assert process.terminate() == 0, process.stderr
    finally:
        channel.close()
        process.kill()
    records = _json_lines(process.stderr)
    serving = next(r for r in records if r.get("event") == "serving")
    assert serving["projections"] is True
    assert {r["view"] for r in records if r.get("event") == "projection_holding"} == VIEWS
    assert not [r for r in records if r.get("status") not in (None, "OK")], "every RPC was OK"


def test_serve_without_projections_reads_what_a_separate_runner_applies(
    ledger: Ledger,
    views: Projections,
    cli_env: dict[str, str],
    tmp_path: Path,
    start_runner: Callable[[], Runner],
) -> None:
    process = ServeProcess(cli_env, tmp_path / "serve.stderr", "--no-projections")
    channel = grpc.insecure_channel(f"127.0.0.1:{process.port}")
    try:
        process.wait_until_serving(channel)
        stubs = Stubs.on(channel)
        created = stubs.sales.CreateSale(api.create_sale_request(), timeout=T)
        time.sleep(0.5)
        assert views.live_schema("orders")[1] < created.position, "serve applied it itself"
        # No runner follows the views: a query says so rather than answer a stale page.
        failure = api.expect_failure(
            lambda: stubs.sales.ListSales(pb.ListSalesRequest(), timeout=T)
        )
        assert failure.code == grpc.StatusCode.UNAVAILABLE, failure
        assert failure.reason == "VIEWS_NOT_RUNNING", failure

        runner = start_runner()
        eventually(lambda: "orders" in runner.holding(), "the runner holds the orders view")
        assert views.wait_for("orders", created.position, 60), "the runner applied nothing"
        listed = stubs.sales.ListSales(
            pb.ListSalesRequest(min_position=created.position), timeout=T
        )
        assert [s.id for s in listed.sales] == [created.sale.id]
        assert process.terminate() == 0, process.stderr
    finally:
        channel.close()
        process.kill()
    serving = next(r for r in _json_lines(process.stderr) if r.get("event") == "serving")
    assert serving["projections"] is False
