"""Every event class has an explicit `posledger.` topic, and every view either reads it or
says that it leaves it alone: a new event cannot be forgotten by a view without a test
failing here. Views read their stored topics from the classes they handle.
"""

from __future__ import annotations

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from ledger.domain.customer import Customer, ExternalIdClaim
from ledger.domain.inventory import StockItem
from ledger.domain.product import Product
from ledger.domain.sale import Sale
from projections.catalog import CatalogView
from projections.customers import CustomersView
from projections.inventory import InventoryView
from projections.orders import OrdersView
from projections.view import View

AGGREGATES: tuple[type[Aggregate], ...] = (Sale, StockItem, Product, Customer, ExternalIdClaim)
VIEWS: tuple[type[View], ...] = (OrdersView, InventoryView, CustomersView, CatalogView)


def event_classes(aggregate: type[Aggregate]) -> list[type]:
    """The aggregate's own event classes (not the library's bases nor its `Event` base)."""
    return [
        value
        for name, value in vars(aggregate).items()
        if isinstance(value, type)
        and issubclass(value, Aggregate.Event)
        and name != "Event"
        and value.__qualname__.startswith(aggregate.__name__ + ".")
    ]


ALL_EVENTS = [(a, e) for a in AGGREGATES for e in event_classes(a)]


def test_the_aggregates_have_the_events_we_know_of() -> None:
    # Guards the discovery above: a change in how events are declared must not empty it.
    assert {e.__name__ for e in event_classes(StockItem)} >= {
        "Created",
        "Sold",
        "Reserved",
        "ReservationReleased",
        "SoldFromReservation",
    }
    assert len(ALL_EVENTS) >= 25


@pytest.mark.parametrize(("aggregate", "event"), ALL_EVENTS, ids=lambda x: x.__qualname__)
def test_every_event_has_an_explicit_posledger_topic(aggregate: type, event: type) -> None:
    topic = get_topic(event)  # what the store records: `module:Class` unless named
    assert topic.startswith("posledger.")
    assert topic == event.TOPIC  # type: ignore[attr-defined]


def test_topics_are_unique() -> None:
    topics = [e.TOPIC for _, e in ALL_EVENTS]  # type: ignore[attr-defined]
    assert len(topics) == len(set(topics))


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__)
def test_each_view_reads_or_ignores_every_event(view: type[View]) -> None:
    for aggregate, event in ALL_EVENTS:
        handled = event in view.handles
        ignored = event in view.ignores or aggregate in view.ignores
        assert handled != ignored, f"{view.__name__}: {event.__qualname__} handled={handled}"
    for aggregate in AGGREGATES:
        if aggregate in view.ignores:
            # Ignoring a whole aggregate is only for one the view reads nothing of.
            assert not set(view.handles) & set(event_classes(aggregate)), view.__name__


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__)
def test_a_views_topics_are_those_of_the_events_it_handles(view: type[View]) -> None:
    topics = View.topics.fget(view)  # type: ignore[attr-defined]
    assert topics == tuple(e.TOPIC for e in view.handles)  # type: ignore[attr-defined]
    assert len(topics) == len(set(topics))
