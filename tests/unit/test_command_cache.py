"""The command cache keeps the aggregates in use live and the rest pickled, so a full cache
gives the garbage collector little to walk; what comes back from either tier is the
aggregate as it was put."""

from __future__ import annotations

import gc
import pickle
from typing import Any
from uuid import uuid4

import pytest

from ledger.application.command_cache import CommandCache
from ledger.domain import commands as c
from ledger.domain.inventory import StockItem
from ledger.domain.sale import Sale
from ledger.heap import freeze_startup_objects

MUG = c.LineItemInput(sku="MUG", name="Mug", quantity=2, unit_price=500, tax_rate_ppm=0)


def paid_sale() -> Sale:
    sale = Sale.create(
        merchant_id="merchant-1",
        location_id="store-1",
        channel=c.Channel.ONLINE,
        currency_code="USD",
        line_items=(MUG,),
    )
    payment_id = sale.request_payment(
        amount=600,
        currency_code="USD",
        tender_types=[c.Tender.CARD],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
        note="",
        state="st",
    )
    sale.record_payment_result(
        c.RecordPaymentResult(
            sale_id=str(sale.id),
            payment_id=payment_id,
            outcome=c.Outcome.APPROVED,
            tender=c.Tender.CARD,
            card=c.CardInput(brand="visa", last4="4242", entry_method=c.EntryMethod.DIPPED),
            processor_reference="proc-1",
        )
    )
    sale.collect_events()
    return sale


def state(value: Any) -> Any:
    """Everything an object holds, attribute by attribute, down to plain values."""
    if isinstance(value, dict):
        return {k: state(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [state(v) for v in value]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return (type(value), state(vars(value)))
    return value


def test_the_aggregates_in_use_stay_live() -> None:
    cache, sale = CommandCache(live=2), paid_sale()
    cache.put(sale.id, sale)
    entry = cache.get(sale.id)
    assert entry is not None
    assert entry.aggregate is sale  # commands take a copy of their own (LedgerBase._find)
    assert entry.version == sale.version


def test_what_goes_cold_comes_back_as_it_was_put() -> None:
    cache, sale = CommandCache(live=2), paid_sale()
    kept = state(sale)
    cache.put(sale.id, sale)
    for _ in range(2):  # two more in use: the sale is the least recently used, and cools
        other = paid_sale()
        cache.put(other.id, other)
    sale.attach_customer("customer-1")  # a change after it cooled is not in the cache
    entry = cache.get(sale.id)
    assert entry is not None
    assert entry.aggregate is not sale
    assert type(entry.aggregate) is Sale
    assert state(entry.aggregate) == kept
    assert entry.version == sale.version - 1
    assert (entry.aggregate.paid_total, entry.aggregate.amount_due) == (600, 400)
    assert cache.get(sale.id) is entry  # live again: it is in use


def test_reservations_of_a_stock_item_come_back_from_the_cold() -> None:
    cache, item = CommandCache(live=1), StockItem.open("merchant-1", str(uuid4()), "store-1")
    item.receive(5, "", "")
    item.reserve("sale-1", 3, may_oversell=False)
    item.collect_events()
    cache.put(item.id, item)
    cache.put(uuid4(), None)  # cools the item
    entry = cache.get(item.id)
    assert entry is not None
    assert entry.aggregate is not item
    loaded = entry.aggregate
    assert (loaded.on_hand, loaded.reserved, loaded.reservations) == (5, 3, {"sale-1": 3})


@pytest.mark.parametrize("live", [1, 10])
def test_an_older_version_never_replaces_a_newer_one(live: int) -> None:
    cache, sale = CommandCache(live=live), paid_sale()
    older = pickle.loads(pickle.dumps(sale))
    sale.attach_customer("customer-1")
    sale.collect_events()
    cache.put(sale.id, sale)
    cache.put(uuid4(), None)  # with one live entry, the sale is cold now
    cache.put(sale.id, older)
    entry = cache.get(sale.id)
    assert entry is not None
    assert entry.version == sale.version == older.version + 1


def test_absence_is_kept_in_either_tier() -> None:
    cache, missing = CommandCache(live=1), uuid4()
    cache.put(missing, None)
    cache.put(uuid4(), None)
    entry = cache.get(missing)
    assert entry is not None
    assert entry.version == 0
    assert entry.aggregate is None


def test_the_least_recently_used_go_once_the_cache_is_full() -> None:
    cache = CommandCache(maxsize=3, live=1)
    ids = [uuid4() for _ in range(5)]
    for aggregate_id in ids:
        cache.put(aggregate_id, None)
    assert [cache.get(i) is not None for i in ids] == [False, False, True, True, True]
    cache.evict(ids[2:4])
    assert [cache.get(i) is not None for i in ids[2:]] == [False, False, True]


def test_a_full_cache_gives_the_collector_little_to_walk() -> None:
    cache = CommandCache(live=10)
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(500):
        sale = paid_sale()
        cache.put(sale.id, sale)
    del sale
    gc.collect()
    # Live, these 500 sales are about 5,000 tracked objects (10 each); cold, they are bytes.
    assert len(gc.get_objects()) - before < 250


def test_freezing_moves_the_objects_of_startup_out_of_every_collection() -> None:
    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 1000  # this process's modules, classes, functions
        assert gc.get_count()[0] < 100
    finally:
        gc.unfreeze()
