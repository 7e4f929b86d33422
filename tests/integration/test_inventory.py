"""Stock against the real event store: movements, transfers, and the stock that sales move.

Sales are never blocked by stock: a completed sale records the units sold at its location in
the same transaction as its completion, and a refund that returns goods puts them back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import pytest
from eventsourcing.application import project_aggregate

from ledger.application import Context, Ledger, Outcome
from ledger.domain import commands as c
from ledger.domain import inventory as d
from ledger.domain import product as prod
from ledger.domain.errors import (
    InvalidRequest,
    NotFound,
    RequestIdReused,
    RuleViolated,
    VersionConflict,
)
from ledger.domain.inventory import AdjustmentReason, StockItem, stock_item_id
from ledger.domain.sale import SaleStatus
from ledger.store import Settings
from tests.integration.catalog_support import (
    MUG_PRICE,
    MUG_TAX_PPM,
    MUG_UNIT_TOTAL,
    approve,
    catalog_line,
    create_product,
    new_sale,
    pay_in_full,
    receive,
    request_full_payment,
    stock,
    topic_count,
    transaction_of_command,
    transaction_of_events,
)
from tests.integration.conftest import (
    COFFEE,
    MERCHANT_A,
    MERCHANT_B,
    Db,
    ctx,
    failures,
    new_request_id,
    race,
    request_payment_cmd,
    successes,
)

# ---- stock commands ---------------------------------------------------------------------------


def test_movements_add_up_at_each_location(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    pid = str(mug.id)
    assert ledger.get_stock_item(MERCHANT_A, pid, "loc-1") is None  # nothing moved yet

    receive(ledger, mug, 10)
    ledger.adjust_stock(ctx(), d.AdjustStock(pid, "loc-1", -2, AdjustmentReason.DAMAGE, "broken"))
    counted = ledger.record_stock_count(ctx(), d.RecordStockCount(pid, "loc-1", 7, "shelf"))
    receive(ledger, mug, 4, "loc-2")

    item = stock(ledger, mug)
    assert item.id == stock_item_id(MERCHANT_A, pid, "loc-1")
    assert (item.on_hand, item.received, item.adjusted) == (7, 10, -2)
    assert (item.last_count, item.last_count_variance, item.count_variance) == (7, -1, -1)
    assert item.last_counted_at == counted.aggregate.last_counted_at
    assert item.last_counted_at is not None
    assert stock(ledger, mug, "loc-2").on_hand == 4
    assert db.topics(item.id) == [
        "posledger.StockItemCreated",
        "posledger.StockReceived",
        "posledger.StockAdjusted",
        "posledger.StockCounted",
    ]
    adjusted, count = db.events(item.id)[2:]
    assert (adjusted.state["quantity"], adjusted.state["reason"]) == (-2, "damage")
    assert (count.state["counted_quantity"], count.state["expected_quantity"]) == (7, 8)


def test_transfer_moves_units_atomically(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 10, "warehouse")
    cmd = d.TransferStock(str(mug.id), "warehouse", "shop", 6, reference="TR-1")
    context = ctx()

    outcome = ledger.transfer_stock(context, cmd)

    source, target = outcome.aggregates
    assert (source.location_id, source.on_hand, source.transferred_out) == ("warehouse", 4, 6)
    assert (target.location_id, target.on_hand, target.transferred_in) == ("shop", 6, 6)
    assert stock(ledger, mug, "warehouse").on_hand == 4
    assert stock(ledger, mug, "shop").on_hand == 6
    out = db.events(source.id)[-1]
    into = db.events(target.id)[-1]
    assert (out.topic, into.topic) == (
        "posledger.StockTransferredOut",
        "posledger.StockTransferredIn",
    )
    assert out.state["transfer_id"] == into.state["transfer_id"] == outcome.ids["transfer_id"]
    # Both sides and the command's record were committed in one transaction.
    tx = transaction_of_events(db)
    assert tx[(source.id, source.version)] == tx[(target.id, target.version)]
    assert tx[(source.id, source.version)] == transaction_of_command(
        db, MERCHANT_A, context.request_id
    )


def test_transfer_of_more_than_on_hand_moves_nothing(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 3, "warehouse")
    before = (db.event_count(), db.command_count())

    with pytest.raises(RuleViolated) as error:
        ledger.transfer_stock(ctx(), d.TransferStock(str(mug.id), "warehouse", "shop", 4))

    assert error.value.reason == "INSUFFICIENT_STOCK"
    assert (db.event_count(), db.command_count()) == before
    assert stock(ledger, mug, "warehouse").on_hand == 3
    assert ledger.get_stock_item(MERCHANT_A, str(mug.id), "shop") is None


def test_racing_transfers_never_move_more_than_on_hand(ledger: Ledger) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 5, "warehouse")
    move = d.TransferStock(str(mug.id), "warehouse", "shop", 3)

    outcomes = race(*[partial(ledger.transfer_stock, ctx(), move) for _ in range(3)])

    assert len(successes(outcomes)) == 1
    assert all(
        isinstance(e, RuleViolated) and e.reason == "INSUFFICIENT_STOCK" for e in failures(outcomes)
    )
    assert stock(ledger, mug, "warehouse").on_hand == 2
    assert stock(ledger, mug, "shop").on_hand == 3


def test_retried_stock_commands_are_answered_from_the_record(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    pid = str(mug.id)
    receipt = d.ReceiveStock(pid, "loc-1", 10)
    adjustment = d.AdjustStock(pid, "loc-1", -1, AdjustmentReason.THEFT)
    count = d.RecordStockCount(pid, "loc-1", 8)
    commands: list[Callable[[Context], Outcome]] = [
        lambda context: ledger.receive_stock(context, receipt),
        lambda context: ledger.adjust_stock(context, adjustment),
        lambda context: ledger.record_stock_count(context, count),
    ]
    contexts = [ctx() for _ in commands]
    first = [run(context) for run, context in zip(commands, contexts, strict=True)]
    transfer_ctx = ctx()
    transfer = d.TransferStock(pid, "loc-1", "loc-2", 5)
    moved = ledger.transfer_stock(transfer_ctx, transfer)
    before = (db.event_count(), db.command_count())

    again = [run(context) for run, context in zip(commands, contexts, strict=True)]
    moved_again = ledger.transfer_stock(transfer_ctx, transfer)

    assert (db.event_count(), db.command_count()) == before
    assert all(o.replayed for o in [*again, moved_again])
    assert [o.aggregate.version for o in again] == [o.aggregate.version for o in first] == [2, 3, 4]
    assert [o.aggregate.on_hand for o in again] == [10, 9, 8]  # as first answered
    assert moved_again.ids == moved.ids
    assert [(a.id, a.version, a.on_hand) for a in moved_again.aggregates] == [
        (a.id, a.version, a.on_hand) for a in moved.aggregates
    ]
    assert [a.location_id for a in moved_again.aggregates] == ["loc-1", "loc-2"]
    assert stock(ledger, mug, "loc-1").on_hand == 3
    assert stock(ledger, mug, "loc-2").on_hand == 5
    with pytest.raises(RequestIdReused):
        ledger.transfer_stock(transfer_ctx, replace(transfer, quantity=1))


def test_stale_expected_version_is_a_conflict(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    pid = str(mug.id)
    receive(ledger, mug, 10)  # the item is at version 2
    before = (db.event_count(), db.command_count())
    stale = Context(MERCHANT_A, new_request_id(), expected_version=1)

    with pytest.raises(VersionConflict):
        ledger.adjust_stock(stale, d.AdjustStock(pid, "loc-1", 1, AdjustmentReason.CORRECTION))
    with pytest.raises(VersionConflict):
        ledger.record_stock_count(stale, d.RecordStockCount(pid, "loc-1", 1))
    with pytest.raises(VersionConflict):  # nothing moved at loc-2: it has no version 1
        ledger.record_stock_count(stale, d.RecordStockCount(pid, "loc-2", 1))

    assert (db.event_count(), db.command_count()) == before
    current = Context(MERCHANT_A, new_request_id(), expected_version=2)
    counted = ledger.record_stock_count(current, d.RecordStockCount(pid, "loc-1", 9))
    assert (counted.aggregate.version, counted.aggregate.on_hand) == (3, 9)


def test_another_merchants_product_and_stock_look_missing(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger, MERCHANT_A)
    pid = str(mug.id)
    receive(ledger, mug, 5)
    before = (db.event_count(), db.command_count())
    foreign = ctx(MERCHANT_B)

    for attempt in (
        partial(ledger.get_stock_item, MERCHANT_B, pid, "loc-1"),
        partial(ledger.receive_stock, foreign, d.ReceiveStock(pid, "loc-1", 1)),
        partial(
            ledger.adjust_stock, foreign, d.AdjustStock(pid, "loc-1", -5, AdjustmentReason.LOSS)
        ),
        partial(ledger.record_stock_count, foreign, d.RecordStockCount(pid, "loc-1", 0)),
        partial(ledger.transfer_stock, foreign, d.TransferStock(pid, "loc-1", "loc-2", 1)),
        partial(ledger.receive_stock, ctx(), d.ReceiveStock(str(stock(ledger, mug).id), "x", 1)),
    ):
        with pytest.raises(NotFound) as error:
            attempt()
        assert error.value.reason == "PRODUCT_NOT_FOUND"

    assert (db.event_count(), db.command_count()) == before
    assert stock(ledger, mug).on_hand == 5
    # Merchant B's own product with the same sku has its own stock.
    other = create_product(ledger, MERCHANT_B)
    receive(ledger, other, 2, merchant_id=MERCHANT_B)
    assert stock(ledger, other, merchant_id=MERCHANT_B).on_hand == 2
    assert stock(ledger, mug).on_hand == 5


def test_invalid_stock_commands_write_nothing(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    pid = str(mug.id)
    before = (db.event_count(), db.command_count())

    with pytest.raises(InvalidRequest) as received:
        ledger.receive_stock(ctx(), d.ReceiveStock(pid, "", 0))
    with pytest.raises(InvalidRequest) as adjusted:
        ledger.adjust_stock(ctx(), d.AdjustStock(pid, "loc-1", 0, None))
    with pytest.raises(InvalidRequest) as moved:
        ledger.transfer_stock(ctx(), d.TransferStock(pid, "loc-1", "loc-1", 1))
    with pytest.raises(InvalidRequest) as got:
        ledger.get_stock_item(MERCHANT_A, "mug", "")

    assert [v.field for v in received.value.violations] == ["location_id", "quantity"]
    assert [v.field for v in adjusted.value.violations] == ["quantity", "reason"]
    assert [v.field for v in moved.value.violations] == ["to_location_id"]
    assert [v.field for v in got.value.violations] == ["product_id", "location_id"]
    assert (db.event_count(), db.command_count()) == before


# ---- sales priced from the catalog ------------------------------------------------------------


def test_catalog_lines_take_price_tax_and_product_from_the_catalog(ledger: Ledger) -> None:
    mug = create_product(ledger)
    bowl = create_product(ledger, sku="BOWL-1", price=900, tax_rate_ppm=0)

    sale = new_sale(
        ledger,
        catalog_line("MUG-1", 2),
        catalog_line("BOWL-1", 1, unit_price=850),  # a price given wins, the rate is the catalog's
        catalog_line("MUG-1", 1, tax_rate_ppm=0),  # a rate given wins, the price is the catalog's
        COFFEE,  # not in the catalog: an open item with its own price
    ).sale

    lines = [(i.sku, i.unit_price, i.tax_rate_ppm, i.product_id) for i in sale.line_items]
    assert lines == [
        ("MUG-1", MUG_PRICE, MUG_TAX_PPM, str(mug.id)),
        ("BOWL-1", 850, 0, str(bowl.id)),
        ("MUG-1", MUG_PRICE, 0, str(mug.id)),
        ("COF-1", 450, 0, ""),
    ]
    assert sale.total == 2 * MUG_UNIT_TOTAL + 850 + MUG_PRICE + 900
    # Adding a line prices it the same way.
    added = ledger.add_line_item(ctx(), c.AddLineItem(str(sale.id), catalog_line("MUG-1", 1)))
    line = added.sale.line_items[-1]
    assert (line.unit_price, line.tax_rate_ppm, line.product_id) == (
        MUG_PRICE,
        MUG_TAX_PPM,
        str(mug.id),
    )


def test_lines_the_catalog_cannot_price_are_refused(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    create_product(ledger, sku="EUR-1", currency_code="EUR")
    ledger.discontinue_product(ctx(), prod.DiscontinueProduct(str(mug.id), "gone"))
    sale_id = str(new_sale(ledger, COFFEE).sale.id)
    before = (db.event_count(), db.command_count())

    for line, reason in (
        (catalog_line("NOPE-1"), "UNKNOWN_SKU"),
        (catalog_line("MUG-1"), "PRODUCT_DISCONTINUED"),
        (catalog_line("MUG-1", unit_price=100), "PRODUCT_DISCONTINUED"),
        (catalog_line("EUR-1"), "CURRENCY_MISMATCH"),
    ):
        with pytest.raises(RuleViolated) as created:
            new_sale(ledger, line)
        with pytest.raises(RuleViolated) as added:
            ledger.add_line_item(ctx(), c.AddLineItem(sale_id, line))
        assert created.value.reason == added.value.reason == reason

    assert (db.event_count(), db.command_count()) == before
    # Another merchant's catalog is not ours: its sku is unknown here.
    create_product(ledger, MERCHANT_B, sku="B-ONLY")
    with pytest.raises(RuleViolated) as foreign:
        new_sale(ledger, catalog_line("B-ONLY"))
    assert foreign.value.reason == "UNKNOWN_SKU"


def test_completion_sells_stock_at_the_sale_location_in_the_same_transaction(
    ledger: Ledger, db: Db
) -> None:
    mug = create_product(ledger)
    bowl = create_product(ledger, sku="BOWL-1", price=900)
    receive(ledger, mug, 10, "loc-1")
    receive(ledger, mug, 10, "loc-2")
    sale = new_sale(
        ledger,
        catalog_line("MUG-1", 2),
        catalog_line("BOWL-1", 1),
        catalog_line("MUG-1", 1),
        COFFEE,
    ).sale
    sale_id = str(sale.id)
    payment_id = request_full_payment(ledger, sale_id)
    # Requesting the payment reserves the units; on-hand moves when the sale completes.
    assert (stock(ledger, mug).on_hand, stock(ledger, mug).reserved) == (10, 3)
    assert (stock(ledger, bowl).on_hand, stock(ledger, bowl).reserved) == (0, 1)
    context = ctx()

    done = ledger.record_payment_result(context, approve(sale_id, payment_id)).sale

    assert done.status is SaleStatus.COMPLETED
    mugs, bowls = stock(ledger, mug), stock(ledger, bowl)
    assert (mugs.on_hand, mugs.sold) == (7, 3)  # both mug lines, as one movement
    assert (bowls.on_hand, bowls.sold) == (-1, 1)  # never received: on hand goes negative
    assert stock(ledger, mug, "loc-2").on_hand == 10
    assert (mugs.reserved, bowls.reserved) == (0, 0)
    (sold,) = [r for r in db.events(mugs.id) if r.topic == "posledger.StockSoldFromReservation"]
    assert (sold.state["sale_id"], sold.state["quantity"], sold.state["released"]) == (
        sale_id,
        3,
        3,
    )
    # In store, the bowl nobody had received was sold anyway, and the line says so.
    assert done.oversold == {done.line_items[1].line_id: 1}
    completed = db.events(sale_id)[-1]
    assert completed.topic == "posledger.SaleCompleted"
    tx = transaction_of_events(db)
    sale_tx = tx[(done.id, done.version)]
    assert tx[(mugs.id, mugs.version)] == sale_tx
    assert tx[(bowls.id, bowls.version)] == sale_tx
    assert transaction_of_command(db, MERCHANT_A, context.request_id) == sale_tx
    assert topic_count(db, "posledger.StockSoldFromReservation") == 2
    # A retry of the completing request moves nothing again.
    again = ledger.record_payment_result(context, approve(sale_id, payment_id))
    assert again.replayed
    assert stock(ledger, mug).on_hand == 7
    assert topic_count(db, "posledger.StockSoldFromReservation") == 2


def test_sale_at_another_location_moves_that_locations_stock(ledger: Ledger) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 5, "loc-1")
    sale_id = str(new_sale(ledger, catalog_line("MUG-1", 2), location_id="loc-2").sale.id)

    pay_in_full(ledger, sale_id)

    assert stock(ledger, mug, "loc-1").on_hand == 5
    assert (stock(ledger, mug, "loc-2").on_hand, stock(ledger, mug, "loc-2").sold) == (-2, 2)


def test_open_or_canceled_sales_move_no_stock(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 5)
    open_id = str(new_sale(ledger, catalog_line("MUG-1", 2)).sale.id)
    canceled_id = str(new_sale(ledger, catalog_line("MUG-1", 1)).sale.id)
    ledger.cancel_sale(ctx(), c.CancelSale(canceled_id, "changed mind"))
    request_full_payment(ledger, open_id)

    assert stock(ledger, mug).on_hand == 5
    assert topic_count(db, "posledger.StockSold") == 0


def test_refund_with_restock_returns_units_to_the_sale_location(ledger: Ledger, db: Db) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 10)
    sale = new_sale(ledger, catalog_line("MUG-1", 3), COFFEE).sale
    sale_id = str(sale.id)
    mug_line, coffee_line = (i.line_id for i in sale.line_items)
    payment_id, _ = pay_in_full(ledger, sale_id)
    assert stock(ledger, mug).on_hand == 7
    context = ctx()

    refunded = ledger.refund_payment(
        context,
        c.RefundPayment(
            sale_id, payment_id, 2 * MUG_UNIT_TOTAL, "two back", "", (c.RestockItem(mug_line, 2),)
        ),
    )

    item = stock(ledger, mug)
    assert (item.on_hand, item.returned, item.sold) == (9, 2, 3)
    (returned,) = [r for r in db.events(item.id) if r.topic == "posledger.StockReturned"]
    assert returned.state["refund_id"] == refunded.ids["refund_id"]
    assert returned.state["quantity"] == 2
    tx = transaction_of_events(db)
    assert tx[(item.id, item.version)] == tx[(refunded.sale.id, refunded.sale.version)]
    assert tx[(item.id, item.version)] == transaction_of_command(db, MERCHANT_A, context.request_id)

    # Only what was sold and not yet returned; never open items; nothing moves on refusal.
    before = (db.event_count(), db.command_count())
    for restock, reason in (
        (c.RestockItem(mug_line, 2), "RESTOCK_EXCEEDS_SOLD"),
        (c.RestockItem(coffee_line, 1), "LINE_NOT_STOCKED"),
    ):
        with pytest.raises(RuleViolated) as error:
            ledger.refund_payment(
                ctx(), c.RefundPayment(sale_id, payment_id, 1, "", "", (restock,))
            )
        assert error.value.reason == reason
    assert (db.event_count(), db.command_count()) == before
    # A refund of money alone moves no stock.
    ledger.refund_payment(ctx(), c.RefundPayment(sale_id, payment_id, 100))
    assert stock(ledger, mug).on_hand == 9


def test_restock_from_a_sale_not_completed_is_refused(ledger: Ledger) -> None:
    mug = create_product(ledger)
    sale = new_sale(ledger, catalog_line("MUG-1", 2)).sale
    sale_id = str(sale.id)
    part = ledger.request_payment(ctx(), request_payment_cmd(sale_id, 500)).ids["payment_id"]
    ledger.record_payment_result(ctx(), approve(sale_id, part))

    with pytest.raises(RuleViolated) as error:
        ledger.refund_payment(
            ctx(),
            c.RefundPayment(
                sale_id, part, 500, "", "", (c.RestockItem(sale.line_items[0].line_id, 1),)
            ),
        )
    assert error.value.reason == "SALE_NOT_COMPLETED"
    # The part paid holds the sale's units; nothing was sold or returned.
    item = stock(ledger, mug)
    assert (item.on_hand, item.reserved, item.sold, item.returned) == (0, 2, 0, 0)


def test_concurrent_sales_of_one_product_all_land(ledger: Ledger, db: Db) -> None:
    """As many completions at once as the server has workers (16): every one lands."""
    mug = create_product(ledger)
    receive(ledger, mug, 1000)
    quantities = [1 + n % 4 for n in range(16)]
    all_sales: list[str] = []
    for _ in range(2):
        pending = []
        for quantity in quantities:
            sale_id = str(new_sale(ledger, catalog_line("MUG-1", quantity)).sale.id)
            pending.append((sale_id, request_full_payment(ledger, sale_id)))

        outcomes = race(
            *[partial(ledger.record_payment_result, ctx(), approve(s, p)) for s, p in pending]
        )

        assert failures(outcomes) == []
        assert all(r.sale.status is SaleStatus.COMPLETED for r in successes(outcomes))
        all_sales.extend(s for s, _ in pending)

    item = stock(ledger, mug)
    assert item.sold == 2 * sum(quantities)
    assert item.on_hand == 1000 - 2 * sum(quantities)
    rows = db.events(item.id)
    # Created, received, then each sale's reservation and its sale.
    assert [r.originator_version for r in rows] == list(range(1, 4 * len(quantities) + 3))
    sold = [r for r in rows if r.topic == "posledger.StockSoldFromReservation"]
    assert sorted(r.state["sale_id"] for r in sold) == sorted(all_sales)
    assert sorted(r.state["quantity"] for r in sold) == sorted(quantities * 2)
    assert (item.reserved, item.reservations) == (0, {})


def test_concurrent_sales_with_expected_versions_are_not_blocked_by_stock(
    ledger: Ledger, db: Db
) -> None:
    """A sale's expected version is about the sale: another sale moving the same stock item
    at the same moment is no reason to refuse it."""
    mug = create_product(ledger)
    pending = []
    for _ in range(8):
        sale_id = str(new_sale(ledger, catalog_line("MUG-1", 1)).sale.id)
        payment_id = request_full_payment(ledger, sale_id)
        version = ledger.get_sale(MERCHANT_A, sale_id).version
        pending.append((sale_id, payment_id, version))

    outcomes = race(
        *[
            partial(
                ledger.record_payment_result,
                Context(MERCHANT_A, new_request_id(), expected_version=version),
                approve(sale_id, payment_id),
            )
            for sale_id, payment_id, version in pending
        ]
    )

    assert failures(outcomes) == []
    assert [r.sale.version for r in successes(outcomes)] == [v + 2 for _, _, v in pending]
    assert stock(ledger, mug).sold == 8
    assert topic_count(db, "posledger.StockSoldFromReservation") == 8
    # The sale's own version still counts: a stale one is refused, moving nothing.
    sale_id = str(new_sale(ledger, catalog_line("MUG-1", 1)).sale.id)
    payment_id = request_full_payment(ledger, sale_id)
    stale = Context(MERCHANT_A, new_request_id(), expected_version=1)
    with pytest.raises(VersionConflict):
        ledger.record_payment_result(stale, approve(sale_id, payment_id))
    assert stock(ledger, mug).sold == 8


def test_stock_item_loads_the_same_from_a_snapshot(ledger: Ledger, settings: Settings) -> None:
    mug = create_product(ledger)
    for _ in range(104):
        receive(ledger, mug, 1)
    live = stock(ledger, mug)
    assert live.version == 105
    assert ledger.snapshots is not None
    snapshots = list(ledger.snapshots.get(live.id))
    assert [s.originator_version for s in snapshots] == [100]

    fresh = Ledger.open(settings)  # nothing in memory: loads from the snapshot and after
    try:
        loaded = fresh.get_stock_item(MERCHANT_A, str(mug.id), "loc-1")
    finally:
        fresh.close()

    assert isinstance(loaded, StockItem)
    assert (loaded.version, loaded.on_hand, loaded.received) == (105, 104, 104)
    assert {k: v for k, v in vars(loaded).items() if k != "_pending_events"} == {
        k: v for k, v in vars(live).items() if k != "_pending_events"
    }


def test_a_snapshot_is_the_state_the_log_replays_to(ledger: Ledger) -> None:
    """Snapshots are taken from the stock item in hand right after its save, not read back
    from the store: that state must be what a replay of its events up to there gives."""
    mug = create_product(ledger)
    receive(ledger, mug, 1000)
    for _ in range(50):  # a reservation and a sale each: past the interval of 100
        pay_in_full(ledger, str(new_sale(ledger, catalog_line("MUG-1", 2)).sale.id))
    item_id = stock(ledger, mug).id
    assert ledger.snapshots is not None
    snapshots = list(ledger.snapshots.get(item_id))
    assert [s.originator_version for s in snapshots] == [100]

    taken = snapshots[0]
    replayed = project_aggregate(None, ledger.events.get(item_id, lte=taken.originator_version))
    assert isinstance(replayed, StockItem)
    assert replayed.version == taken.originator_version
    assert taken.state == StockItem.Snapshot.take(replayed).state
    assert taken.state["sold"] == replayed.sold > 0
