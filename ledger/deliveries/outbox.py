"""The outbox: the event log itself, followed like a view, turned into delivery rows.

Events exist only for committed commands, so a command that rolled back delivers nothing,
and the follower misses nothing committed: a page of events, the follower's new position
and the delivery rows they make commit in one transaction (see projections/follow.py),
so each delivery is made exactly once. The write path is not touched at all.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.deliveries.changes import STOCK_EVENTS, Change, Kind, changes_of
from ledger.deliveries.store import DeliveryStore
from ledger.domain.customer import Customer
from ledger.domain.product import Product
from ledger.domain.sale import Sale
from ledger.event_log import EventLog
from projections import source
from projections.view import Event, View

DELIVERY_NAMESPACE = uuid.UUID("3f5b9a4e-8c1d-4f2a-b6e7-0d9c8b7a6f51")

PAYMENT_EVENTS: tuple[type, ...] = (
    Sale.PaymentApproved,
    Sale.PaymentApprovedAfterCancel,
    Sale.PaymentNotApproved,
    Sale.PaymentCanceled,
    Sale.PaymentExpired,
)


def _topics(events: tuple[type, ...], *kinds: Kind) -> dict[str, frozenset[Kind]]:
    return {event.TOPIC: frozenset(kinds) for event in events}  # type: ignore[attr-defined]


# Each topic, and the kinds of change it can make (a topic none subscribes to is skipped).
# Topics come from the event classes, so a renamed or new event cannot be missed silently.
TOPIC_KINDS: dict[str, frozenset[Kind]] = {
    **_topics(PAYMENT_EVENTS, Kind.PAYMENT_RESOLVED),
    **_topics((Sale.PaymentRefunded,), Kind.PAYMENT_RESOLVED, Kind.ORDER_REFUNDED),
    **_topics((Sale.Completed,), Kind.ORDER_COMPLETED),
    **_topics((Sale.Canceled,), Kind.ORDER_CANCELED),
    **_topics(STOCK_EVENTS, Kind.STOCK_CHANGED),
    **_topics(
        (Product.Created, Product.Updated, Product.Discontinued, Product.Reactivated),
        Kind.PRODUCT_CHANGED,
    ),
    **_topics((Customer.Created,), Kind.CUSTOMER_CREATED),
    **_topics((Customer.Updated,), Kind.CUSTOMER_CHANGED),
    **_topics((Customer.ConsentChanged,), Kind.CUSTOMER_CONSENT_CHANGED),
}


def delivery_id(target: str, change: Change) -> UUID:
    """The same delivery always has the same id: receivers deduplicate by it."""
    return uuid.uuid5(DELIVERY_NAMESPACE, f"{target}\x1f{change.id}")


def changes_at(log: EventLog, events: Sequence[Event]) -> list[Change]:
    """The changes a page of events makes, each from its aggregate as of that event.

    The aggregates are replayed from their stored histories in one query (short for sales,
    products and customers; a stock item's whole history is read, which a snapshot would
    shorten: see README, Deliveries).
    """
    wanted: dict[UUID, set[int]] = defaultdict(set)
    for e in events:
        wanted[e.originator_id].add(e.originator_version)
    # A copy at each version: the aggregate goes on changing with the next event.
    aggregates = source.states_at(log, wanted, copy.deepcopy)
    found = [
        (e, aggregate)
        for e in events
        if (aggregate := aggregates.get((e.originator_id, e.originator_version))) is not None
    ]
    product_ids = {str(getattr(aggregate, "product_id", "")) for _, aggregate in found}
    skus = _skus(log, product_ids - {""})
    result: list[Change] = []
    for e, aggregate in found:  # in the page's order: by position
        result += changes_of(e.position, e.event, aggregate, lambda p: skus.get(p, ""))
    return result


def _skus(log: EventLog, product_ids: set[str]) -> dict[str, str]:
    """Each product's sku (fixed when it is created: the product's id derives from it)."""
    created = log.events_of([UUID(p) for p in product_ids], topic=Product.Created.TOPIC)
    result = {}
    for stored in created:
        event = log.decode(stored)
        if isinstance(event, Product.Created):
            result[str(stored.originator_id)] = event.sku
    return result


class OutboxView(View):
    """Not a read model: its "rows" are the deliveries its page of events owes."""

    name = "outbox"
    topics = tuple(TOPIC_KINDS)

    def __init__(self, log: EventLog, store: DeliveryStore) -> None:
        self.log = log
        self.store = store

    def create(self, curs: Cursor[DictRow], schema: str) -> None:
        self.store.create_tables(curs)  # in the ledger's schema: never rebuilt

    def apply(self, curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        subscribed = self.store.subscribed_kinds(curs) | {Kind.PAYMENT_RESOLVED.value}
        events = [e for e in events if {k.value for k in TOPIC_KINDS[e.topic]} & subscribed]
        changes = changes_at(self.log, events)
        merchants = sorted({c.merchant_id for c in changes})
        subscriptions = self.store.subscriptions(curs, merchants) if merchants else []
        rows = []
        for change in changes:
            if change.kind is Kind.PAYMENT_RESOLVED:
                if change.callback_url:  # imported payments have none
                    rows.append(_row(change, change.callback_url, f"sale:{change.sale_id}"))
                continue
            for sub in subscriptions:
                if sub["merchant_id"] == change.merchant_id and change.kind.value in sub["kinds"]:
                    key = f"webhook:{sub['subscription_id']}:{change.subject_id}"
                    rows.append(_row(change, sub["url"], key, sub["subscription_id"]))
        self.store.add(curs, rows)


def _row(
    change: Change, url: str, ordering_key: str, subscription_id: UUID | None = None
) -> dict[str, Any]:
    target = f"sub:{subscription_id}" if subscription_id else "callback"
    the_id = delivery_id(target, change)
    body = change.body() | {"delivery_id": str(the_id)}
    return {
        "delivery_id": the_id,
        "merchant_id": change.merchant_id,
        "kind": change.kind.value,
        "change_id": change.id,
        "position": change.position,
        "idx": change.index,
        "url": url,
        "app_id": change.data.get("app_id", "") if subscription_id is None else "",
        "subscription_id": subscription_id,
        "ordering_key": ordering_key,
        "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
    }
