"""Stock reservations and the one stock arithmetic (`StockLevel.move`), without I/O.

The inventory view applies events through the same `StockLevel.move` as the aggregate; the
property test below holds a level rebuilt from the events (as the view does, from a row)
equal to the aggregate after any mix of movements and reservations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain.errors import RuleViolated
from ledger.domain.inventory import AdjustmentReason, StockItem, StockLevel

MERCHANT = "merchant-1"
PRODUCT_ID = "5b0e8f3c-1a2d-4e6f-9a7b-8c9d0e1f2a3b"


def given_stock(on_hand: int = 0) -> StockItem:
    item = StockItem.open(MERCHANT, PRODUCT_ID, "loc-1")
    if on_hand:
        item.receive(on_hand, "", "")
    item.collect_events()
    return item


def test_a_reservation_holds_units_without_moving_on_hand() -> None:
    item = given_stock(5)
    assert item.reserve("s-1", 3, may_oversell=False) == 0
    (event,) = item.collect_events()
    assert isinstance(event, StockItem.Reserved)
    assert (event.sale_id, event.quantity, event.short) == ("s-1", 3, 0)
    assert (item.on_hand, item.reserved, item.available) == (5, 3, 2)
    assert item.reservations == {"s-1": 3}


def test_reserving_more_than_available_is_refused_unless_it_may_oversell() -> None:
    item = given_stock(2)
    item.reserve("s-1", 1, may_oversell=False)
    with pytest.raises(RuleViolated) as refused:
        item.reserve("s-2", 2, may_oversell=False)
    assert refused.value.reason == "INSUFFICIENT_STOCK"
    assert item.reserved_for("s-2") == 0

    assert item.reserve("s-2", 3, may_oversell=True) == 2  # in store: 2 short, flagged
    assert (item.on_hand, item.reserved, item.available) == (2, 4, -2)
    assert item.shortfall(1) == 1  # nothing is available any more


def test_release_gives_back_at_most_what_the_sale_holds() -> None:
    item = given_stock(5)
    item.reserve("s-1", 2, may_oversell=False)
    item.release("s-1", 1, "line_removed")
    item.release("s-1", 9, "sale_canceled")
    item.release("s-unknown", 4, "sale_canceled")  # held nothing: records nothing
    events = item.collect_events()
    assert [type(e) for e in events] == [
        StockItem.Reserved,
        StockItem.ReservationReleased,
        StockItem.ReservationReleased,
    ]
    assert [e.quantity for e in events[1:]] == [1, 1]  # type: ignore[attr-defined]
    assert (item.reserved, item.reservations) == (0, {})


def test_a_sale_sells_from_its_reservation_or_directly() -> None:
    item = given_stock(5)
    item.reserve("s-1", 2, may_oversell=False)
    item.record_sale("s-1", 2)
    item.record_sale("s-old", 1)  # a sale from before reservations: sold directly
    _, from_reservation, direct = item.collect_events()
    assert isinstance(from_reservation, StockItem.SoldFromReservation)
    assert (from_reservation.quantity, from_reservation.released) == (2, 2)
    assert isinstance(direct, StockItem.Sold)
    assert (item.on_hand, item.reserved, item.sold, item.available) == (2, 0, 3, 2)


def test_a_transfer_never_moves_reserved_units() -> None:
    item = given_stock(3)
    item.reserve("s-1", 2, may_oversell=False)
    with pytest.raises(RuleViolated) as refused:
        item.transfer_out("t-1", 2, "loc-2", "")
    assert refused.value.reason == "INSUFFICIENT_STOCK"
    item.transfer_out("t-2", 1, "loc-2", "")
    assert (item.on_hand, item.available) == (2, 0)


def test_the_level_of_a_row_round_trips() -> None:
    level = StockLevel(on_hand=4, reserved=1, received=5, sold=1)
    assert StockLevel.of({**level.values(), "version": 3, "other": "x"}).values() == level.values()
    assert level.available == 3


# ---- random mixes: the aggregate and the view's arithmetic agree -----------------------------


@dataclass(frozen=True)
class Step:
    kind: str
    sale: int
    quantity: int


steps = st.builds(
    Step,
    st.sampled_from(["receive", "adjust", "count", "reserve", "oversell", "release", "sell"]),
    st.integers(0, 5),
    st.integers(1, 20),
)


def counters(level: StockLevel) -> dict[str, Any]:
    return level.values()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(steps, min_size=1, max_size=60))
def test_reserved_is_the_sum_of_open_reservations_and_the_view_agrees(script: list[Step]) -> None:
    item = StockItem.open(MERCHANT, PRODUCT_ID, "loc-1")
    events = list(item.collect_events())
    on_hand = 0
    for step in script:
        sale = f"sale-{step.sale}"
        match step.kind:
            case "receive":
                item.receive(step.quantity, "", "")
                on_hand += step.quantity
            case "adjust":
                item.adjust(-step.quantity, AdjustmentReason.DAMAGE, "")
                on_hand -= step.quantity
            case "count":
                item.count(step.quantity, "")
                on_hand = step.quantity
            case "reserve":
                available = item.available
                if step.quantity > max(available, 0):
                    with pytest.raises(RuleViolated):
                        item.reserve(sale, step.quantity, may_oversell=False)
                else:
                    item.reserve(sale, step.quantity, may_oversell=False)
                    # A channel that must not oversell never takes available below zero.
                    assert item.available >= 0 or available < 0
                    assert item.available == available - step.quantity
            case "oversell":
                item.reserve(sale, step.quantity, may_oversell=True)
            case "release":
                item.release(sale, step.quantity, "payments_ended")
            case "sell":
                reserved, held = item.reserved, item.reserved_for(sale)
                item.record_sale(sale, step.quantity)
                on_hand -= step.quantity
                assert item.reserved == reserved - held  # the sale's reservation ends
                assert item.reserved_for(sale) == 0
        events.extend(item.collect_events())
        assert item.reserved == sum(item.reservations.values())
        assert all(units > 0 for units in item.reservations.values())
        assert item.on_hand == on_hand
        assert item.available == item.on_hand - item.reserved

    # The view's way: a fresh level, every event after the creation through `move`.
    level = StockLevel()
    for event in events[1:]:
        level.move(event)
    assert counters(level) == counters(item)
    # And the aggregate replayed from its events is the live one.
    replayed = None
    for event in events:
        replayed = event.mutate(replayed)
    assert isinstance(replayed, StockItem)
    assert counters(replayed) == counters(item)
    assert replayed.reservations == item.reservations
