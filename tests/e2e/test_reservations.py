"""Reservations over the wire: reserved and available on every stock read, the refusal of
a sale that a channel cannot cover, and the flag of an in-store sale that oversold."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from ledger.application import Ledger
from ledger.bootstrap import build_views
from ledger.v1 import inventory_pb2 as ipb
from ledger.v1 import sales_pb2 as pb
from tests.e2e import api_client as api
from tests.e2e.api_client import Stubs

T = api.TIMEOUT


@pytest.fixture
def live(ledger: Ledger) -> Iterator[None]:
    with build_views(ledger).running():
        yield


def catalog_sale(stubs: Stubs, sku: str, quantity: int, channel: int) -> pb.Sale:
    line = api.line_item(sku=sku, quantity=quantity, unit_price=None)
    return api.create_sale(stubs.sales, channel=channel, line_items=[line, line])


def level(stubs: Stubs, product_id: str, min_position: int) -> ipb.StockItem:
    request = ipb.GetStockLevelRequest(
        product_id=product_id, location_id="store-1", min_position=min_position
    )
    return stubs.inventory.GetStockLevel(request, timeout=T).stock_level.stock_item


def test_reserved_and_available_on_items_and_levels_and_the_refusal(
    live: None, stubs: Stubs
) -> None:
    product = api.create_product(stubs.catalog, sku="LAMP-1", price=2500)
    api.receive_stock(stubs.inventory, product.id, 5)
    first = catalog_sale(stubs, "LAMP-1", 2, pb.SALES_CHANNEL_ONLINE)  # 2 lines of 2

    requested = api.request_payment(stubs.sales, first.id, first.amount_due)

    item = api.get_stock_item(stubs.inventory, product.id)
    assert (item.on_hand, item.reserved, item.available) == (5, 4, 1)
    assert level(stubs, product.id, requested.position) == item
    listed = stubs.inventory.ListStockLevels(
        ipb.ListStockLevelsRequest(product_id=product.id, min_position=requested.position),
        timeout=T,
    ).stock_levels
    assert [(lv.stock_item.reserved, lv.stock_item.available) for lv in listed] == [(4, 1)]

    second = catalog_sale(stubs, "LAMP-1", 1, pb.SALES_CHANNEL_MARKETPLACE)  # needs 2
    refused = api.expect_failure(
        lambda: api.request_payment(stubs.sales, second.id, second.amount_due)
    )
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (refused.reason, refused.domain) == ("INSUFFICIENT_STOCK", "posledger")
    assert refused.fields == {"line_items[0]", "line_items[1]"}
    assert {v.reason for v in refused.violations} == {"INSUFFICIENT_STOCK"}
    assert api.get_sale(stubs.sales, second.id).pending_total == 0

    # The first sale completes: its reservation becomes the sale.
    done = api.record_result(stubs.sales, first.id, requested.payment.id)
    assert done.sale.status == pb.SALE_STATUS_COMPLETED
    sold = level(stubs, product.id, done.position)
    assert (sold.on_hand, sold.reserved, sold.available, sold.sold) == (1, 0, 1, 4)


def test_an_in_store_sale_oversells_flagged(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog, sku="VASE-1", price=900)
    api.receive_stock(stubs.inventory, product.id, 1)
    sale = catalog_sale(stubs, "VASE-1", 1, pb.SALES_CHANNEL_IN_STORE)

    flagged = api.request_payment(stubs.sales, sale.id, sale.amount_due).sale

    assert flagged.oversold
    assert [line.oversold_quantity for line in flagged.line_items] == [0, 1]
    item = api.get_stock_item(stubs.inventory, product.id)
    assert (item.on_hand, item.reserved, item.available) == (1, 2, -1)
