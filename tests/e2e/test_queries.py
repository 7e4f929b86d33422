"""The query RPCs over the read views, end to end: filters, keyset pages, page size and
token validation, read-your-writes with `min_position`, and merchant isolation.

The server does not run the projection runner itself: `live` runs every view in a background
thread of the test process, the way `posledger serve --projections` does.
"""

from __future__ import annotations

import base64
import functools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.bootstrap import build_server, build_views
from ledger.store import Settings
from ledger.v1 import catalog_pb2 as catalog_pb
from ledger.v1 import customers_pb2 as customers_pb
from ledger.v1 import inventory_pb2 as inventory_pb
from ledger.v1 import sales_pb2 as pb
from projections.queries import ReadModels
from tests.e2e import api_client as api
from tests.e2e.api_client import Metadata, Stubs
from tests.e2e.conftest import MakeChannel

T = api.TIMEOUT


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
def live(ledger: Ledger) -> Iterator[None]:
    """Every view kept up to date in a background thread for the test."""
    with build_views(ledger).running():
        yield


@pytest.fixture
def q(live: None, stubs: Stubs) -> Stubs:
    """Stubs on a served ledger whose views are being kept up to date."""
    return stubs


# ---- helpers -----------------------------------------------------------------------------


def create(stubs: Stubs, md: Metadata | None = None, **overrides: Any) -> pb.CreateSaleResponse:
    request = api.create_sale_request(**overrides)
    return stubs.sales.CreateSale(request, timeout=T, metadata=md)


def pay(
    stubs: Stubs, sale: pb.Sale, md: Metadata | None = None, **result: Any
) -> pb.RecordPaymentResultResponse:
    """Pays the sale's whole amount due by card, completing it."""
    currency = {"currency_code": sale.currency_code}
    payment = api.request_payment(stubs.sales, sale.id, sale.amount_due, metadata=md, **currency)
    done = api.record_result(stubs.sales, sale.id, payment.payment.id, metadata=md, **result)
    assert done.sale.status == pb.SALE_STATUS_COMPLETED
    return done


def paid(
    stubs: Stubs, md: Metadata | None = None, **overrides: Any
) -> pb.RecordPaymentResultResponse:
    return pay(stubs, create(stubs, md, **overrides).sale, md)


def list_sales(stubs: Stubs, md: Metadata | None = None, **fields: Any) -> pb.ListSalesResponse:
    return stubs.sales.ListSales(pb.ListSalesRequest(**fields), timeout=T, metadata=md)


def all_sales(stubs: Stubs, md: Metadata | None = None, **fields: Any) -> list[pb.SaleSummary]:
    """Every page of a listing, following next_page_token."""
    found: list[pb.SaleSummary] = []
    token = ""
    for _ in range(100):
        page = list_sales(stubs, md, page_token=token, **fields)
        found.extend(page.sales)
        token = page.next_page_token
        if not token:
            return found
    raise AssertionError("more than 100 pages")


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def retry_delay_ms(error: grpc.RpcError) -> int | None:
    """The RetryInfo detail's delay of a failed call, if it has one."""
    assert isinstance(error, grpc.Call)
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return int(info.retry_delay.ToMilliseconds())
    return None


def invalid(call: Callable[[], object], field: str) -> api.RpcFailure:
    failure = api.expect_failure(call)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.fields == {field}, failure
    return failure


def product(stubs: Stubs, md: Metadata | None = None, **fields: Any) -> catalog_pb.Product:
    return api.create_product(stubs.catalog, metadata=md, **fields)


def stock_level(
    stubs: Stubs,
    product_id: str,
    location_id: str = "store-1",
    md: Metadata | None = None,
    **f: Any,
) -> inventory_pb.GetStockLevelResponse:
    request = inventory_pb.GetStockLevelRequest(product_id=product_id, location_id=location_id, **f)
    return stubs.inventory.GetStockLevel(request, timeout=T, metadata=md)


def movements(
    stubs: Stubs,
    product_id: str,
    location_id: str = "store-1",
    md: Metadata | None = None,
    **f: Any,
) -> inventory_pb.ListStockMovementsResponse:
    request = inventory_pb.ListStockMovementsRequest(
        product_id=product_id, location_id=location_id, **f
    )
    return stubs.inventory.ListStockMovements(request, timeout=T, metadata=md)


def summary(
    stubs: Stubs, customer_id: str, md: Metadata | None = None, **f: Any
) -> customers_pb.GetCustomerSummaryResponse:
    request = customers_pb.GetCustomerSummaryRequest(customer_id=customer_id, **f)
    return stubs.customers.GetCustomerSummary(request, timeout=T, metadata=md)


# ---- read your writes --------------------------------------------------------------------


def test_every_mutating_response_carries_a_growing_position(ledger: Ledger, q: Stubs) -> None:
    """Each of the 19 mutating RPCs answers the log position of its command's last event."""
    positions: dict[str, int] = {}

    def record(name: str, position: int) -> None:
        assert position == head(ledger), f"{name}: not the position of its last event"
        positions[name] = position

    sales, catalog, customers, inventory = q.sales, q.catalog, q.customers, q.inventory
    request = api.create_sale_request()
    sale = sales.CreateSale(request, timeout=T)
    record("CreateSale", sale.position)
    sale_id = sale.sale.id
    added = sales.AddLineItem(api.add_line_item_request(sale_id), timeout=T)
    record("AddLineItem", added.position)
    removed = sales.RemoveLineItem(api.remove_line_item_request(sale_id, added.line_id), timeout=T)
    record("RemoveLineItem", removed.position)
    record(
        "AttachCustomer",
        sales.AttachCustomer(
            api.attach_customer_request(
                sale_id,
                customers.CreateCustomer(api.create_customer_request(), timeout=T).customer.id,
            ),
            timeout=T,
        ).position,
    )
    abandoned = sales.RequestPayment(api.request_payment_request(sale_id, 100), timeout=T)
    record("RequestPayment", abandoned.position)
    canceled = sales.CancelPayment(
        api.cancel_payment_request(sale_id, abandoned.payment.id), timeout=T
    )
    record("CancelPayment", canceled.position)
    payment = api.request_payment(sales, sale_id, canceled.sale.amount_due).payment
    recorded = sales.RecordPaymentResult(api.record_result_request(sale_id, payment.id), timeout=T)
    record("RecordPaymentResult", recorded.position)
    refunded = sales.RefundPayment(api.refund_request(sale_id, payment.id, 100), timeout=T)
    record("RefundPayment", refunded.position)
    voided = sales.CancelSale(api.cancel_sale_request(create(q).sale.id), timeout=T)
    record("CancelSale", voided.position)
    record("ImportSales", api.import_sales(sales, [[api.imported_order("web", "W-1")]]).position)

    beans = catalog.CreateProduct(api.create_product_request(), timeout=T)
    record("CreateProduct", beans.position)
    pid = beans.product.id
    updated = catalog.UpdateProduct(api.update_product_request(pid, {"price": 1300}), timeout=T)
    record("UpdateProduct", updated.position)
    record(
        "ReceiveStock",
        inventory.ReceiveStock(api.receive_stock_request(pid, 5), timeout=T).position,
    )
    record(
        "AdjustStock", inventory.AdjustStock(api.adjust_stock_request(pid, -1), timeout=T).position
    )
    record(
        "RecordStockCount",
        inventory.RecordStockCount(api.record_stock_count_request(pid, 3), timeout=T).position,
    )
    record(
        "TransferStock",
        inventory.TransferStock(api.transfer_stock_request(pid, 2), timeout=T).position,
    )
    record(
        "DiscontinueProduct",
        catalog.DiscontinueProduct(api.discontinue_product_request(pid), timeout=T).position,
    )
    ada = customers.CreateCustomer(api.create_customer_request(), timeout=T)
    record("CreateCustomer", ada.position)
    renamed = customers.UpdateCustomer(
        api.update_customer_request(ada.customer.id, {"name": "Ada King"}), timeout=T
    )
    record("UpdateCustomer", renamed.position)

    assert len(positions) == 19
    values = list(positions.values())
    assert values == sorted(values), "each command's events come after the previous ones"
    assert len(set(values)) == len(values)

    # A retried command answers its original position, where its effects are visible.
    replayed = sales.CreateSale(request, timeout=T)
    assert replayed.position == sale.position
    listed = list_sales(q, min_position=replayed.position)
    assert sale_id in {s.id for s in listed.sales}


def test_sales_read_your_writes_immediately(q: Stubs) -> None:
    for n in range(5):
        created = create(q, location_id=f"till-{n}")
        page = list_sales(q, location_id=f"till-{n}", min_position=created.position)
        assert page.position >= created.position
        assert [s.id for s in page.sales] == [created.sale.id]
        assert page.sales[0].status == pb.SALE_STATUS_OPEN

        done = pay(q, created.sale)
        page = list_sales(q, location_id=f"till-{n}", min_position=done.position)
        (row,) = page.sales
        assert row.status == pb.SALE_STATUS_COMPLETED
        assert row.version == done.sale.version
        assert row.paid_total == done.sale.total
        assert row.completed_at == done.sale.completed_at


def test_list_sales_shows_what_get_sale_shows(q: Stubs) -> None:
    customer = api.create_customer(q.customers).id
    created = create(
        q,
        customer_id=customer,
        note="table 4",
        line_items=[
            api.line_item(sku="A", quantity=2, unit_price=450, discount=100, tax_rate_ppm=88750),
            api.line_item(sku="B", name="Tea", quantity=3, unit_price=300),
        ],
    )
    done = pay(q, created.sale)
    refunded = api.refund(q.sales, created.sale.id, done.payment.id, 200)
    sale = refunded.sale

    (row,) = list_sales(q, min_position=refunded.position).sales

    assert row.id == sale.id
    assert row.version == sale.version
    assert row.status == sale.status == pb.SALE_STATUS_COMPLETED
    assert row.channel == sale.channel
    assert row.location_id == sale.location_id
    assert row.customer_id == customer
    assert row.currency_code == "USD"
    assert (row.subtotal, row.discount_total, row.tax_total, row.total) == (
        sale.subtotal,
        sale.discount_total,
        sale.tax_total,
        sale.total,
    )
    assert row.paid_total == sale.paid_total
    assert row.refunded_total == sale.refunded_total == 200
    assert row.amount_due == sale.amount_due == 0
    assert row.item_count == 5
    assert row.created_at == sale.created_at
    assert row.completed_at == sale.completed_at
    assert list(row.line_items) == list(sale.line_items)


def test_products_read_your_writes(q: Stubs) -> None:
    created = q.catalog.CreateProduct(api.create_product_request(), timeout=T)
    listed = q.catalog.ListProducts(
        catalog_pb.ListProductsRequest(min_position=created.position), timeout=T
    )
    assert list(listed.products) == [created.product]
    assert listed.position >= created.position

    updated = q.catalog.UpdateProduct(
        api.update_product_request(created.product.id, {"price": 1399, "name": "Beans"}),
        timeout=T,
    )
    listed = q.catalog.ListProducts(
        catalog_pb.ListProductsRequest(min_position=updated.position), timeout=T
    )
    assert list(listed.products) == [updated.product]

    gone = q.catalog.DiscontinueProduct(
        api.discontinue_product_request(created.product.id), timeout=T
    )
    listed = q.catalog.ListProducts(
        catalog_pb.ListProductsRequest(min_position=gone.position), timeout=T
    )
    assert list(listed.products) == [gone.product]
    assert listed.products[0].status == catalog_pb.PRODUCT_STATUS_DISCONTINUED


def test_stock_read_your_writes(q: Stubs) -> None:
    beans = product(q)
    expected = 0
    for quantity in (5, 7, 1):
        received = q.inventory.ReceiveStock(
            api.receive_stock_request(beans.id, quantity), timeout=T
        )
        expected += quantity
        level = stock_level(q, beans.id, min_position=received.position)
        assert level.stock_level.stock_item.on_hand == expected
        assert level.position >= received.position
        levels = q.inventory.ListStockLevels(
            inventory_pb.ListStockLevelsRequest(min_position=received.position), timeout=T
        )
        assert [lv.stock_item.on_hand for lv in levels.stock_levels] == [expected]
        moved = movements(q, beans.id, min_position=received.position)
        assert moved.movements[0].position == received.position
        assert moved.movements[0].on_hand_after == expected

    counted = q.inventory.RecordStockCount(api.record_stock_count_request(beans.id, 10), timeout=T)
    after_count = stock_level(q, beans.id, min_position=counted.position).stock_level
    assert after_count.stock_item.version == counted.stock_item.version
    assert after_count.stock_item.received == 13
    assert after_count.stock_item.last_count == 10
    assert after_count.stock_item.last_counted_at == counted.stock_item.last_counted_at
    assert after_count.stock_item.on_hand == 10
    assert after_count.stock_item.last_count_variance == -3


def test_customer_summary_read_your_writes(q: Stubs) -> None:
    created = q.customers.CreateCustomer(api.create_customer_request(), timeout=T)
    ada = created.customer
    first = summary(q, ada.id, min_position=created.position)
    assert first.summary.customer == ada
    assert first.summary.order_count == 0
    assert list(first.summary.spend) == []

    done = paid(q, customer_id=ada.id)
    after = summary(q, ada.id, min_position=done.position).summary
    assert after.order_count == 1
    assert [(s.currency_code, s.orders, s.spend) for s in after.spend] == [
        ("USD", 1, done.sale.total)
    ]

    updated = q.customers.UpdateCustomer(
        api.update_customer_request(ada.id, {"name": "Ada King"}), timeout=T
    )
    listed = q.customers.ListCustomers(
        customers_pb.ListCustomersRequest(min_position=updated.position), timeout=T
    )
    assert [c.customer.name for c in listed.customers] == ["Ada King"]
    assert listed.customers[0].customer == updated.customer
    assert listed.customers[0].order_count == 1


def test_imports_read_your_writes(q: Stubs) -> None:
    response = api.import_sales(
        q.sales, [[api.imported_order("webshop", f"W-{n}") for n in range(3)]]
    )
    assert response.imported == 3

    listed = list_sales(q, min_position=response.position, channel=pb.SALES_CHANNEL_ONLINE)

    assert {s.external_order_id for s in listed.sales} == {"W-0", "W-1", "W-2"}
    assert {s.status for s in listed.sales} == {pb.SALE_STATUS_COMPLETED}


# ---- min_position that is not reached ---------------------------------------------------


def test_a_view_behind_min_position_answers_unavailable_with_retry_info(
    ledger: Ledger, make_channel: MakeChannel
) -> None:
    views = build_views(ledger)
    views.ensure()
    # A server whose reads give up quickly, and no runner: the views stay where they are.
    impatient = build_server(ledger, "127.0.0.1:0", reads=ReadModels(views, wait_seconds=0.3))
    impatient.start()
    try:
        stubs = Stubs.on(make_channel(impatient))
        beans = stubs.catalog.CreateProduct(api.create_product_request(), timeout=T)
        received = stubs.inventory.ReceiveStock(
            api.receive_stock_request(beans.product.id, 4), timeout=T
        )
        ada = stubs.customers.CreateCustomer(api.create_customer_request(), timeout=T)
        sale = create(stubs, customer_id=ada.customer.id)
        position = max(received.position, ada.position, sale.position)
        pid = beans.product.id
        calls: dict[str, Callable[[], object]] = {
            "ListSales": lambda: list_sales(stubs, min_position=position),
            "ListProducts": lambda: stubs.catalog.ListProducts(
                catalog_pb.ListProductsRequest(min_position=position), timeout=T
            ),
            "ListCustomers": lambda: stubs.customers.ListCustomers(
                customers_pb.ListCustomersRequest(min_position=position), timeout=T
            ),
            "GetCustomerSummary": lambda: summary(stubs, ada.customer.id, min_position=position),
            "ListStockLevels": lambda: stubs.inventory.ListStockLevels(
                inventory_pb.ListStockLevelsRequest(min_position=position), timeout=T
            ),
            "GetStockLevel": lambda: stock_level(stubs, pid, min_position=position),
            "ListStockMovements": lambda: movements(stubs, pid, min_position=position),
        }
        for name, call in calls.items():
            started = time.monotonic()
            try:
                call()
            except grpc.RpcError as error:
                failure = api.failure(error)
                delay = retry_delay_ms(error)
            else:
                raise AssertionError(f"{name} answered before its view caught up")
            waited = time.monotonic() - started
            assert failure.code == grpc.StatusCode.UNAVAILABLE, (name, failure)
            assert failure.reason == "VIEW_NOT_CAUGHT_UP", name
            assert failure.domain == "posledger", name
            assert str(position) in failure.message, name
            assert delay is not None, f"{name}: no RetryInfo detail"
            assert delay > 0, name
            assert 0.25 <= waited < 5, (name, waited)

        # Without min_position the same queries answer at once, from the stale views.
        assert list(list_sales(stubs).sales) == []
        assert (
            list(
                stubs.inventory.ListStockLevels(
                    inventory_pb.ListStockLevelsRequest(), timeout=T
                ).stock_levels
            )
            == []
        )

        # Once the views catch up, every one of them answers, with the new data.
        with views.running():
            # The server's reads wait only 0.3 s: let the runner catch up first (it may be
            # slow to start on a loaded machine).
            for view in views.views:
                assert views.wait_for(view, position, 30), view
            for name, call in calls.items():
                assert call() is not None, name
            assert [s.id for s in list_sales(stubs, min_position=position).sales] == [sale.sale.id]
            assert (
                stock_level(stubs, pid, min_position=position).stock_level.stock_item.on_hand == 4
            )
    finally:
        impatient.stop(0)


def test_min_position_must_not_be_negative(q: Stubs) -> None:
    beans = product(q)
    ada = api.create_customer(q.customers)
    calls: list[Callable[[], object]] = [
        lambda: list_sales(q, min_position=-1),
        lambda: q.catalog.ListProducts(catalog_pb.ListProductsRequest(min_position=-1), timeout=T),
        lambda: q.customers.ListCustomers(
            customers_pb.ListCustomersRequest(min_position=-1), timeout=T
        ),
        lambda: summary(q, ada.id, min_position=-1),
        lambda: q.inventory.ListStockLevels(
            inventory_pb.ListStockLevelsRequest(min_position=-1), timeout=T
        ),
        lambda: stock_level(q, beans.id, min_position=-1),
        lambda: movements(q, beans.id, min_position=-1),
    ]
    for call in calls:
        invalid(call, "min_position")


# ---- pages ------------------------------------------------------------------------------


def _listings(stubs: Stubs, pid: str) -> dict[str, Callable[..., Any]]:
    """Each paginated query as f(page_size=..., page_token=...)."""
    return {
        "sales": lambda **f: list_sales(stubs, **f),
        "products": lambda **f: stubs.catalog.ListProducts(
            catalog_pb.ListProductsRequest(**f), timeout=T
        ),
        "customers": lambda **f: stubs.customers.ListCustomers(
            customers_pb.ListCustomersRequest(**f), timeout=T
        ),
        "stock_levels": lambda **f: stubs.inventory.ListStockLevels(
            inventory_pb.ListStockLevelsRequest(**f), timeout=T
        ),
        "movements": lambda **f: movements(stubs, pid, **f),
    }


def _token(listing: str, key: list[Any]) -> str:
    raw = json.dumps([listing, key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_page_size_is_bounded_on_every_listing(q: Stubs) -> None:
    beans = product(q)
    received = q.inventory.ReceiveStock(api.receive_stock_request(beans.id, 1), timeout=T)
    create(q)
    api.create_customer(q.customers)
    list_sales(q, min_position=received.position + 2)  # every view has caught up

    for name, listing in _listings(q, beans.id).items():
        for size in (501, -1, 2**31 - 1, -(2**31)):
            failure = invalid(functools.partial(listing, page_size=size), "page_size")
            assert "500" in failure.violation("page_size").description, name
        assert listing(page_size=500).next_page_token == "", name
        assert listing(page_size=1).next_page_token == "", name
        assert listing(page_size=0).next_page_token == "", name


def test_page_size_zero_means_fifty(q: Stubs) -> None:
    orders = [api.imported_order("webshop", f"W-{n:03}") for n in range(57)]
    response = api.import_sales(q.sales, [orders])
    assert response.imported == 57

    first = list_sales(q, min_position=response.position)
    assert len(first.sales) == 50
    assert first.next_page_token
    second = list_sales(q, page_token=first.next_page_token)
    assert len(second.sales) == 7
    assert second.next_page_token == ""
    ids = [s.id for s in [*first.sales, *second.sales]]
    assert len(set(ids)) == 57
    assert len(list_sales(q, page_size=500).sales) == 57


def test_garbage_and_foreign_page_tokens_are_invalid_arguments(q: Stubs) -> None:
    beans = product(q)
    for n in range(3):
        api.receive_stock(q.inventory, beans.id, 1, location_id=f"store-{n}")
        api.receive_stock(q.inventory, beans.id, 1)  # store-1: more than one movement
        api.create_customer(q.customers, name=f"Customer {n}")
        product(q, sku=f"SKU-{n}", barcode="")
        last = create(q)
    list_sales(q, min_position=last.position)
    listings = _listings(q, beans.id)

    # A real token of each listing, from its first page of one.
    tokens = {name: listing(page_size=1).next_page_token for name, listing in listings.items()}
    assert all(tokens.values()), tokens

    garbage = [
        "garbage",
        "!!!!",
        "=",
        "a",
        base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
        base64.urlsafe_b64encode(b"{}").decode(),
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
        base64.urlsafe_b64encode(b'"sales"').decode(),
        _token("nothing", [1]),
        "x" * 2000,
    ]
    for name, listing in listings.items():
        for token in garbage:
            invalid(functools.partial(listing, page_token=token), "page_token")
        for other, token in tokens.items():
            if other != name:
                failure = invalid(functools.partial(listing, page_token=token), "page_token")
                assert token not in failure.message
        # A token of the right listing whose key has the wrong shape.
        invalid(functools.partial(listing, page_token=_token(name, [])), "page_token")
        # The listing's own token still works.
        assert listing(page_size=1, page_token=tokens[name]) is not None


def test_forged_tokens_with_wrongly_typed_keys_are_invalid_not_internal(q: Stubs) -> None:
    beans = product(q)
    received = q.inventory.ReceiveStock(api.receive_stock_request(beans.id, 1), timeout=T)
    list_sales(q, min_position=received.position)
    listings = _listings(q, beans.id)
    forged: dict[str, list[list[Any]]] = {
        "sales": [["not a time", "not a uuid"], ["2024-01-01T00:00:00Z", "not a uuid"], [1, 2]],
        "products": [[{"a": 1}], ["nul\x00"], [None]],
        "customers": [[[1], [2]]],
        "stock_levels": [[{"x": 1}, [2]]],
        "movements": [["not a number"], [1.5e300], [2**70], [True]],
    }
    for name, keys in forged.items():
        for key in keys:
            failure = api.expect_failure(
                functools.partial(listings[name], page_token=_token(name, key))
            )
            assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, (name, key, failure)
            assert failure.fields == {"page_token"}, (name, key, failure)


def test_filters_with_nul_characters_are_invalid_arguments_not_internal(q: Stubs) -> None:
    beans = product(q)
    bad = "a\x00b"
    calls: dict[str, Callable[[], object]] = {
        "location_id": lambda: list_sales(q, location_id=bad),
        "customer_id": lambda: list_sales(q, customer_id=bad),
        "query": lambda: q.catalog.ListProducts(
            catalog_pb.ListProductsRequest(query=bad), timeout=T
        ),
        "category": lambda: q.catalog.ListProducts(
            catalog_pb.ListProductsRequest(category=bad), timeout=T
        ),
        "tag": lambda: q.customers.ListCustomers(
            customers_pb.ListCustomersRequest(tag=bad), timeout=T
        ),
        "product_id": lambda: q.inventory.ListStockLevels(
            inventory_pb.ListStockLevelsRequest(product_id=bad), timeout=T
        ),
    }
    for field, call in calls.items():
        invalid(call, field)
    invalid(
        lambda: q.customers.ListCustomers(customers_pb.ListCustomersRequest(query=bad), timeout=T),
        "query",
    )
    invalid(lambda: stock_level(q, beans.id, bad), "location_id")
    invalid(lambda: movements(q, beans.id, bad), "location_id")
    invalid(
        lambda: q.inventory.ListStockLevels(
            inventory_pb.ListStockLevelsRequest(location_id=bad), timeout=T
        ),
        "location_id",
    )


def test_sales_pages_are_newest_first_without_gaps_or_repeats(q: Stubs) -> None:
    created = [create(q, note=f"#{n}") for n in range(7)]
    newest_first = [c.sale.id for c in reversed(created)]
    list_sales(q, min_position=created[-1].position)

    pages = []
    token = ""
    while True:
        page = list_sales(q, page_size=3, page_token=token)
        pages.append([s.id for s in page.sales])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == newest_first

    # A sale recorded meanwhile does not shift the later pages of a listing under way.
    first = list_sales(q, page_size=3)
    newer = create(q, note="newer")
    rest = list_sales(
        q, page_size=10, page_token=first.next_page_token, min_position=newer.position
    )
    assert [s.id for s in rest.sales] == newest_first[3:]
    assert list_sales(q, page_size=1).sales[0].id == newer.sale.id


# ---- ListSales filters -------------------------------------------------------------------


def test_list_sales_filters(q: Stubs) -> None:
    c1 = api.create_customer(q.customers, name="One").id
    c2 = api.create_customer(q.customers, name="Two").id
    open_sale = create(q, location_id="store-1", customer_id=c1).sale
    done = paid(q, location_id="store-2", customer_id=c1).sale
    phone = paid(q, location_id="store-1", channel=pb.SALES_CHANNEL_PHONE, customer_id=c2).sale
    canceled = api.cancel_sale(q.sales, create(q, location_id="store-2").sale.id)
    eur = paid(q, location_id="store-3", currency_code="EUR").sale
    imported = api.import_sales(q.sales, [[api.imported_order("webshop", "W-1", customer_id=c2)]])
    list_sales(q, min_position=imported.position)
    web = imported.outcomes[0].sale_id

    def ids(**filters: Any) -> list[str]:
        return [s.id for s in all_sales(q, page_size=2, **filters)]

    everything = [web, eur.id, canceled.id, phone.id, done.id, open_sale.id]
    assert ids() == everything
    assert ids(status=pb.SALE_STATUS_OPEN) == [open_sale.id]
    assert ids(status=pb.SALE_STATUS_COMPLETED) == [web, eur.id, phone.id, done.id]
    assert ids(status=pb.SALE_STATUS_CANCELED) == [canceled.id]
    assert ids(status=pb.SALE_STATUS_REFUNDED) == []
    assert ids(channel=pb.SALES_CHANNEL_PHONE) == [phone.id]
    assert ids(channel=pb.SALES_CHANNEL_ONLINE) == [web]
    assert ids(channel=pb.SALES_CHANNEL_IN_STORE) == [eur.id, canceled.id, done.id, open_sale.id]
    assert ids(location_id="store-1") == [phone.id, open_sale.id]
    assert ids(location_id="store-2") == [canceled.id, done.id]
    assert ids(location_id="nowhere") == []
    assert ids(customer_id=c1) == [done.id, open_sale.id]
    assert ids(customer_id=c2) == [web, phone.id]
    assert ids(customer_id=c1, status=pb.SALE_STATUS_COMPLETED, location_id="store-2") == [done.id]
    assert ids(customer_id=c1, location_id="store-3") == []

    # A sale refunded in full moves to REFUNDED.
    payment = api.get_sale(q.sales, eur.id).payments[0]
    back = api.refund(q.sales, eur.id, payment.id, eur.total)
    assert back.sale.status == pb.SALE_STATUS_REFUNDED
    refunded = list_sales(q, status=pb.SALE_STATUS_REFUNDED, min_position=back.position)
    assert [(s.id, s.refunded_total) for s in refunded.sales] == [(eur.id, eur.total)]


def test_list_sales_time_range(q: Stubs) -> None:
    sales = []
    for n in range(4):
        sales.append(create(q, note=f"#{n}"))
        time.sleep(0.01)
    list_sales(q, min_position=sales[-1].position)
    at = [s.sale.created_at.ToDatetime(tzinfo=UTC) for s in sales]
    ids = [s.sale.id for s in sales]
    assert at == sorted(at)

    def between(after: datetime | None = None, before: datetime | None = None) -> list[str]:
        fields: dict[str, Any] = {}
        if after is not None:
            fields["created_after"] = ts(after)
        if before is not None:
            fields["created_before"] = ts(before)
        return [s.id for s in list_sales(q, **fields).sales]

    assert between(after=at[1]) == [ids[3], ids[2], ids[1]], "created_after is inclusive"
    assert between(before=at[2]) == [ids[1], ids[0]], "created_before is exclusive"
    assert between(after=at[1], before=at[3]) == [ids[2], ids[1]]
    assert between(after=at[3] + timedelta(microseconds=1)) == []
    assert between(before=at[0]) == []
    assert between(after=at[2], before=at[1]) == []
    assert between(after=datetime(1970, 1, 1, tzinfo=UTC)) == ids[::-1]


def test_list_sales_rejects_unknown_enum_values(q: Stubs) -> None:
    invalid(lambda: list_sales(q, status=99), "status")
    invalid(lambda: list_sales(q, channel=42), "channel")


# ---- merchant isolation ------------------------------------------------------------------


def test_every_query_sees_only_the_callers_merchant(
    q: Stubs, two_merchants: tuple[Metadata, Metadata]
) -> None:
    a, b = two_merchants
    a_beans = product(q, a, sku="COF-250", name="Beans of A")
    b_beans = product(q, b, sku="COF-250", name="Beans of B")
    ada = api.create_customer(q.customers, metadata=a, name="Ada of A")
    a_sale = paid(q, a, customer_id=ada.id, line_items=[api.line_item(sku="COF-250", quantity=2)])
    api.receive_stock(q.inventory, a_beans.id, 10, metadata=a)
    # B cannot use A's customer id on its own sale: for B it does not exist.
    foreign_customer = api.expect_failure(
        lambda: paid(q, b, customer_id=ada.id, currency_code="EUR")
    )
    assert (foreign_customer.code, foreign_customer.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    b_sale = paid(q, b, currency_code="EUR")
    last = q.inventory.ReceiveStock(api.receive_stock_request(b_beans.id, 3), timeout=T, metadata=b)
    pos = last.position

    a_sales = list_sales(q, a, min_position=pos).sales
    b_sales = list_sales(q, b, min_position=pos).sales
    assert [s.id for s in a_sales] == [a_sale.sale.id]
    assert [s.id for s in b_sales] == [b_sale.sale.id]
    assert list(list_sales(q, b, customer_id=ada.id).sales) == []
    assert list_sales(q, a, status=pb.SALE_STATUS_COMPLETED).sales[0].id == a_sale.sale.id

    a_products = q.catalog.ListProducts(
        catalog_pb.ListProductsRequest(query="COF"), timeout=T, metadata=a
    )
    assert [p.name for p in a_products.products] == ["Beans of A"]
    b_products = q.catalog.ListProducts(catalog_pb.ListProductsRequest(), timeout=T, metadata=b)
    assert [p.name for p in b_products.products] == ["Beans of B"]

    a_customers = q.customers.ListCustomers(
        customers_pb.ListCustomersRequest(), timeout=T, metadata=a
    ).customers
    assert [c.customer.id for c in a_customers] == [ada.id]
    assert (
        list(
            q.customers.ListCustomers(
                customers_pb.ListCustomersRequest(), timeout=T, metadata=b
            ).customers
        )
        == []
    )
    ada_summary = summary(q, ada.id, a).summary
    assert ada_summary.order_count == 1
    assert [(s.currency_code, s.spend) for s in ada_summary.spend] == [("USD", a_sale.sale.total)]
    foreign = api.expect_failure(lambda: summary(q, ada.id, b))
    missing = api.expect_failure(lambda: summary(q, str(uuid.uuid4()), b))
    assert foreign.code == missing.code == grpc.StatusCode.NOT_FOUND
    assert foreign.reason == missing.reason

    a_levels = q.inventory.ListStockLevels(
        inventory_pb.ListStockLevelsRequest(), timeout=T, metadata=a
    ).stock_levels
    b_levels = q.inventory.ListStockLevels(
        inventory_pb.ListStockLevelsRequest(), timeout=T, metadata=b
    ).stock_levels
    assert [(lv.stock_item.product_id, lv.stock_item.on_hand) for lv in a_levels] == [
        (a_beans.id, 8)
    ]
    assert [(lv.stock_item.product_id, lv.stock_item.on_hand) for lv in b_levels] == [
        (b_beans.id, 3)
    ]
    assert stock_level(q, a_beans.id, md=a).stock_level.stock_item.on_hand == 8
    for product_id in (a_beans.id, str(uuid.uuid4())):
        failure = api.expect_failure(functools.partial(stock_level, q, product_id, md=b))
        assert failure.code == grpc.StatusCode.NOT_FOUND, failure
    # Newest first: received, sold, and the sale's reservation (no effect on on-hand).
    assert [m.quantity for m in movements(q, a_beans.id, md=a).movements] == [10, -2, 0]
    assert list(movements(q, a_beans.id, md=b).movements) == []
    negative = inventory_pb.ListStockLevelsRequest(negative_only=True)
    assert list(q.inventory.ListStockLevels(negative, timeout=T, metadata=b).stock_levels) == []

    # A page token of merchant A's listing leaks nothing to B: B's next page is B's own.
    more_a = [create(q, a).position for _ in range(2)]
    first = list_sales(q, a, page_size=1, min_position=max(more_a))
    assert first.next_page_token
    assert [s.id for s in list_sales(q, b, page_token=first.next_page_token).sales] in (
        [],
        [b_sale.sale.id],
    )
    assert a_sale.sale.id not in {
        s.id for s in list_sales(q, b, page_token=first.next_page_token).sales
    }


# ---- customer summaries ------------------------------------------------------------------


def test_customer_summary_figures(q: Stubs) -> None:
    ada = api.create_customer(q.customers, tags=["vip"])
    grace = api.create_customer(q.customers, name="Grace Hopper", email="grace@example.com")
    lines = [api.line_item(quantity=1, unit_price=1000)]
    first = paid(q, customer_id=ada.id, line_items=lines)
    second = paid(q, customer_id=ada.id, line_items=[api.line_item(quantity=1, unit_price=2001)])
    euro = paid(
        q,
        customer_id=ada.id,
        currency_code="EUR",
        channel=pb.SALES_CHANNEL_PHONE,
        line_items=[api.line_item(quantity=3, unit_price=500)],
    )
    create(q, customer_id=ada.id)  # open: not a purchase
    api.cancel_sale(q.sales, create(q, customer_id=ada.id).sale.id)  # canceled: not either
    back = api.refund(q.sales, second.sale.id, second.payment.id, 501)
    back_again = api.refund(q.sales, euro.sale.id, euro.payment.id, 1500)
    web = api.import_sales(q.sales, [[api.imported_order("webshop", "W-9", customer_id=ada.id)]])
    assert web.imported == 1
    web_sale = api.get_sale(q.sales, web.outcomes[0].sale_id)

    s = summary(q, ada.id, min_position=web.position).summary

    assert s.customer == api.get_customer(q.customers, ada.id)
    assert s.order_count == 4
    spend = {x.currency_code: x for x in s.spend}
    assert [x.currency_code for x in s.spend] == ["EUR", "USD"]
    usd_spend = first.sale.total + second.sale.total + web_sale.total
    assert (spend["USD"].orders, spend["USD"].spend, spend["USD"].refunds) == (3, usd_spend, 501)
    assert spend["USD"].average_basket == usd_spend // 3
    assert (spend["EUR"].orders, spend["EUR"].spend, spend["EUR"].refunds) == (
        1,
        euro.sale.total,
        1500,
    )
    assert spend["EUR"].average_basket == euro.sale.total
    assert back.sale.refunded_total == 501
    assert back_again.sale.status == pb.SALE_STATUS_REFUNDED
    assert s.first_purchase_at == first.sale.completed_at
    assert s.last_purchase_at == web_sale.completed_at
    assert s.first_purchase_at.ToDatetime() < s.last_purchase_at.ToDatetime()
    assert set(s.channels) == {
        pb.SALES_CHANNEL_IN_STORE,
        pb.SALES_CHANNEL_PHONE,
        pb.SALES_CHANNEL_ONLINE,
    }
    assert len(s.channels) == 3

    # A customer who bought nothing has an empty summary, not an error.
    g = summary(q, grace.id).summary
    assert g.customer.id == grace.id
    assert (g.order_count, list(g.spend), list(g.channels)) == (0, [], [])
    assert not g.HasField("first_purchase_at")
    assert not g.HasField("last_purchase_at")

    # ListCustomers carries the same summaries.
    listed = q.customers.ListCustomers(customers_pb.ListCustomersRequest(), timeout=T).customers
    assert [c.customer.name for c in listed] == ["Ada Lovelace", "Grace Hopper"]
    assert listed[0] == s
    assert listed[1] == g
    vip = q.customers.ListCustomers(customers_pb.ListCustomersRequest(tag="vip"), timeout=T)
    assert [c.customer.id for c in vip.customers] == [ada.id]


def test_customer_summary_of_unknown_or_malformed_ids(q: Stubs) -> None:
    missing = api.expect_failure(lambda: summary(q, str(uuid.uuid4())))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert missing.reason == "CUSTOMER_NOT_FOUND"
    invalid(lambda: summary(q, "not-a-uuid"), "customer_id")
    invalid(lambda: summary(q, ""), "customer_id")


def test_list_customers_query_and_pages(q: Stubs) -> None:
    names = ["Zoe Quinn", "ada lovelace", "Adam Smith", "Bob Ada", "Carol Danvers"]
    created = [
        q.customers.CreateCustomer(
            api.create_customer_request(name=name, email=f"{name.split()[0].lower()}@ex.com"),
            timeout=T,
        )
        for name in names
    ]
    pos = max(c.position for c in created)

    def found(query: str = "", **f: Any) -> list[str]:
        request = customers_pb.ListCustomersRequest(query=query, min_position=pos, **f)
        return [c.customer.name for c in q.customers.ListCustomers(request, timeout=T).customers]

    everyone = found(page_size=500)
    assert sorted(everyone) == sorted(names)
    assert found("ADA") == [n for n in everyone if "ada" in n.lower()]
    assert set(found("ADA")) == {"ada lovelace", "Adam Smith", "Bob Ada"}
    assert found("carol@") == ["Carol Danvers"], "the start of an email"
    assert found("ex.com") == [], "email matches only at the start"
    assert found("%") == []
    assert found("_") == []

    token = ""
    paged: list[str] = []
    while True:
        request = customers_pb.ListCustomersRequest(page_size=2, page_token=token)
        page = q.customers.ListCustomers(request, timeout=T)
        paged.extend(c.customer.name for c in page.customers)
        token = page.next_page_token
        if not token:
            break
    assert paged == everyone


# ---- stock -------------------------------------------------------------------------------


def test_stock_movements_newest_first_with_on_hand_after(q: Stubs) -> None:
    beans = product(q)
    api.receive_stock(q.inventory, beans.id, 10, reference="PO-7", note="pallet")
    api.adjust_stock(
        q.inventory, beans.id, -2, reason=inventory_pb.ADJUSTMENT_REASON_THEFT, note="gone"
    )
    sold = paid(q, line_items=[api.line_item(sku=beans.sku, quantity=3, unit_price=None)])
    line = sold.sale.line_items[0]
    assert line.product_id == beans.id
    returned = api.refund(
        q.sales,
        sold.sale.id,
        sold.payment.id,
        line.total_amount,
        restock_items=[pb.RestockItem(line_id=line.line_id, quantity=1)],
    )
    api.record_stock_count(q.inventory, beans.id, 4, note="shelf count")
    moved = api.transfer_stock(q.inventory, beans.id, 3, to_location_id="store-2")

    page = movements(q, beans.id, min_position=moved.position)

    got = [(m.kind, m.quantity, m.on_hand_after) for m in page.movements]
    assert got == [
        (inventory_pb.MOVEMENT_KIND_TRANSFERRED_OUT, -3, 1),
        (inventory_pb.MOVEMENT_KIND_COUNTED, -2, 4),
        (inventory_pb.MOVEMENT_KIND_RETURNED, 1, 6),
        (inventory_pb.MOVEMENT_KIND_SOLD, -3, 5),
        (inventory_pb.MOVEMENT_KIND_RESERVED, 0, 8),
        (inventory_pb.MOVEMENT_KIND_ADJUSTED, -2, 8),
        (inventory_pb.MOVEMENT_KIND_RECEIVED, 10, 10),
    ]
    reserved = [(m.reserved, m.reserved_after) for m in page.movements]
    assert reserved == [(0, 0), (0, 0), (0, 0), (-3, 0), (3, 3), (0, 0), (0, 0)]
    positions = [m.position for m in page.movements]
    assert positions == sorted(positions, reverse=True)
    # The transfer's last event is the receiving end's.
    assert positions[0] < moved.position
    by_kind = {m.kind: m for m in page.movements}
    assert by_kind[inventory_pb.MOVEMENT_KIND_RECEIVED].reference == "PO-7"
    assert by_kind[inventory_pb.MOVEMENT_KIND_RECEIVED].note == "pallet"
    adjusted = by_kind[inventory_pb.MOVEMENT_KIND_ADJUSTED]
    assert (adjusted.reason, adjusted.note) == (inventory_pb.ADJUSTMENT_REASON_THEFT, "gone")
    assert by_kind[inventory_pb.MOVEMENT_KIND_SOLD].sale_id == sold.sale.id
    assert by_kind[inventory_pb.MOVEMENT_KIND_RETURNED].sale_id == sold.sale.id
    assert by_kind[inventory_pb.MOVEMENT_KIND_RETURNED].reference == returned.refund.id
    assert by_kind[inventory_pb.MOVEMENT_KIND_COUNTED].note == "shelf count"
    assert by_kind[inventory_pb.MOVEMENT_KIND_TRANSFERRED_OUT].other_location_id == "store-2"
    for m in page.movements:
        assert m.HasField("occurred_at")

    there = movements(q, beans.id, "store-2").movements
    assert [(m.kind, m.quantity, m.on_hand_after, m.other_location_id) for m in there] == [
        (inventory_pb.MOVEMENT_KIND_TRANSFERRED_IN, 3, 3, "store-1")
    ]
    assert there[0].position == moved.position

    # The level agrees with the last movement and with the aggregate.
    level = stock_level(q, beans.id).stock_level
    item = api.get_stock_item(q.inventory, beans.id)
    assert level.stock_item.on_hand == item.on_hand == 1
    for name in (
        "version",
        "received",
        "sold",
        "returned",
        "adjusted",
        "transferred_in",
        "transferred_out",
        "count_variance",
        "last_count",
        "last_count_variance",
        "last_counted_at",
        "reserved",
        "available",
    ):
        assert getattr(level.stock_item, name) == getattr(item, name), name
    assert level.last_movement_at == page.movements[0].occurred_at

    # Pages of movements, newest first.
    pages: list[int] = []
    token = ""
    while True:
        chunk = movements(q, beans.id, page_size=4, page_token=token)
        pages.append(len(chunk.movements))
        token = chunk.next_page_token
        if not token:
            break
    assert pages == [4, 3]


def test_negative_only_shows_oversold_items(q: Stubs) -> None:
    beans = product(q, sku="BEANS")
    milk = product(q, sku="MILK", barcode="")
    cups = product(q, sku="CUPS", barcode="")
    api.receive_stock(q.inventory, beans.id, 2)
    api.receive_stock(q.inventory, milk.id, 5)
    api.receive_stock(q.inventory, cups.id, 1, location_id="store-2")
    oversold = paid(
        q,
        line_items=[
            api.line_item(sku="BEANS", quantity=3, unit_price=None),
            api.line_item(sku="MILK", quantity=5, unit_price=None),
        ],
    )
    elsewhere = paid(
        q,
        location_id="store-2",
        line_items=[api.line_item(sku="CUPS", quantity=4, unit_price=None)],
    )
    pos = max(oversold.position, elsewhere.position)

    def levels(**f: Any) -> list[tuple[str, str, int]]:
        request = inventory_pb.ListStockLevelsRequest(min_position=pos, **f)
        return [
            (lv.stock_item.location_id, lv.stock_item.product_id, lv.stock_item.on_hand)
            for lv in q.inventory.ListStockLevels(request, timeout=T).stock_levels
        ]

    assert sorted(levels(negative_only=True)) == sorted(
        [("store-1", beans.id, -1), ("store-2", cups.id, -3)]
    )
    assert levels(negative_only=True, location_id="store-2") == [("store-2", cups.id, -3)]
    assert levels(negative_only=True, product_id=milk.id) == []
    assert levels(product_id=milk.id) == [("store-1", milk.id, 0)]
    assert len(levels()) == 3
    assert [loc for loc, _, _ in levels()] == ["store-1", "store-1", "store-2"]

    # Counting the shelf fixes it, and the item leaves the list.
    counted = q.inventory.RecordStockCount(api.record_stock_count_request(beans.id, 0), timeout=T)
    request = inventory_pb.ListStockLevelsRequest(negative_only=True, min_position=counted.position)
    fixed = q.inventory.ListStockLevels(request, timeout=T).stock_levels
    assert [lv.stock_item.product_id for lv in fixed] == [cups.id]


def test_stock_level_of_an_item_that_never_moved_is_not_found(q: Stubs) -> None:
    beans = product(q)
    failure = api.expect_failure(lambda: stock_level(q, beans.id, "store-9"))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "STOCK_LEVEL_NOT_FOUND"
    assert list(movements(q, beans.id, "store-9").movements) == []


# ---- catalog -----------------------------------------------------------------------------


def test_list_products_query_matches_sku_prefix_barcode_and_name(q: Stubs) -> None:
    made = [
        product(q, sku="COF-250", name="Coffee beans 250 g", barcode="4006381333931"),
        product(q, sku="COF-1000", name="Coffee beans 1 kg", barcode="4006381333948"),
        product(q, sku="TEA-GRN", name="Green tea", barcode="5012345678900", category="tea"),
        product(q, sku="MUG", name="Mug with COFFEE print", barcode="", category="merch"),
        product(q, sku="X_1", name="100% arabica", barcode="", category="coffee"),
    ]
    gone = q.catalog.DiscontinueProduct(api.discontinue_product_request(made[1].id), timeout=T)
    pos = gone.position

    def skus(query: str = "", **f: Any) -> list[str]:
        request = catalog_pb.ListProductsRequest(query=query, min_position=pos, **f)
        return [p.sku for p in q.catalog.ListProducts(request, timeout=T).products]

    assert skus() == sorted(p.sku for p in made)
    assert skus("COF-") == ["COF-1000", "COF-250"], "sku prefix"
    assert skus("COF-2") == ["COF-250"]
    assert skus("4006381333931") == ["COF-250"], "exact barcode"
    assert skus("400638133393") == [], "a barcode matches only exactly"
    assert skus("coffee") == ["COF-1000", "COF-250", "MUG"], "name, case-insensitive"
    assert skus("BEANS 1") == ["COF-1000"]
    assert skus("tea") == ["TEA-GRN"]
    assert skus("250") == ["COF-250"], "any part of the name"
    assert skus("%") == ["X_1"], "a literal %, not a wildcard"
    assert skus("X_") == ["X_1"]
    assert skus("_") == [], "a literal _, not a wildcard"
    assert skus("nothing like it") == []
    assert skus(status=catalog_pb.PRODUCT_STATUS_DISCONTINUED) == ["COF-1000"]
    assert skus("COF", status=catalog_pb.PRODUCT_STATUS_ACTIVE) == ["COF-250", "MUG"]
    assert skus(category="coffee") == ["COF-1000", "COF-250", "X_1"]
    assert skus(category="tea") == ["TEA-GRN"]

    paged: list[str] = []
    token = ""
    while True:
        request = catalog_pb.ListProductsRequest(page_size=2, page_token=token)
        page = q.catalog.ListProducts(request, timeout=T)
        paged.extend(p.sku for p in page.products)
        token = page.next_page_token
        if not token:
            break
    assert paged == skus()
    invalid(lambda: skus(status=7), "status")
