"""Events turned into the changes receivers are given: given a history, then its changes.

Every history goes through the event store's own transcoding first, so the changes are
the ones a follower of the stored log would make.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Mapper, UUIDAsHex
from eventsourcing.utils import get_topic
from hypothesis import given
from hypothesis import strategies as st

from ledger.deliveries.changes import SUBSCRIBABLE, Change, Kind, changes_of
from ledger.domain.commands import (
    CardInput,
    Channel,
    EntryMethod,
    LineItemInput,
    Outcome,
    RecordPaymentResult,
    Tender,
)
from ledger.domain.customer import Actor, CreateCustomer, Customer
from ledger.domain.inventory import AdjustmentReason, StockItem
from ledger.domain.product import CreateProduct, Product
from ledger.domain.sale import Sale

MERCHANT = "merchant-1"
PRODUCT = "5b0e8f3c-1a2d-4e6f-9a7b-8c9d0e1f2a3b"
VISA = CardInput(brand="visa", last4="4242", entry_method=EntryMethod.DIPPED)
MUG = LineItemInput(
    sku="MUG", name="Mug", quantity=1, unit_price=1000, tax_rate_ppm=0, product_id=PRODUCT
)
APP = Actor(app_id="pos-app", key_id="key-1")


def stored_and_decoded(events: Sequence[Any]) -> list[CanMutateAggregate[UUID]]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[UUID] = Mapper(transcoder=transcoder)
    decoded = []
    for event in events:
        again = mapper.to_domain_event(mapper.to_stored_event(event))
        assert isinstance(again, CanMutateAggregate)
        decoded.append(again)
    return decoded


def sku_of(product_id: str) -> str:
    return {PRODUCT: "MUG-01"}.get(product_id, "")


def changes(events: Sequence[Any], first_position: int = 1) -> list[Change]:
    """Each event at the next position, with its aggregate replayed up to it."""
    result: list[Change] = []
    aggregate: Any = None
    for offset, event in enumerate(stored_and_decoded(events)):
        aggregate = event.mutate(aggregate)
        result += changes_of(first_position + offset, event, aggregate, sku_of)
    return result


def new_sale() -> Sale:
    return Sale.create(
        merchant_id=MERCHANT,
        location_id="store-1",
        channel=Channel.IN_STORE,
        currency_code="EUR",
        line_items=(MUG,),
        external_order_id="order-7",
    )


def request(sale: Sale, amount: int = 1000) -> str:
    return sale.request_payment(
        amount=amount,
        currency_code="EUR",
        tender_types=[Tender.CARD, Tender.CASH],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
        state="opaque-42",
    )


def approve(sale: Sale, payment_id: str) -> None:
    sale.record_payment_result(
        RecordPaymentResult(
            sale_id=str(sale.id),
            payment_id=payment_id,
            outcome=Outcome.APPROVED,
            tender=Tender.CARD,
            card=VISA,
            auth_code="A1",
            processor_reference="proc-1",
        )
    )


# ---- payments and orders --------------------------------------------------------------------


def test_approved_payment_gives_its_result_owed_to_the_callback_then_the_order_completed() -> None:
    sale = new_sale()
    payment_id = request(sale)
    approve(sale, payment_id)
    got = changes(sale.collect_events())  # created, requested, approved, completed
    assert [c.kind for c in got] == [Kind.PAYMENT_RESOLVED, Kind.ORDER_COMPLETED]
    payment, order = got
    assert payment.position == 3
    assert payment.merchant_id == MERCHANT
    assert payment.callback_url == "https://pos.example.com/cb"
    assert payment.sale_id == str(sale.id)
    assert payment.subject_id == payment_id
    assert payment.data == {
        "payment_id": payment_id,
        "sale_id": str(sale.id),
        "outcome": "approved",
        "amount": 1000,
        "approved_amount": 1000,
        "tip_amount": 0,
        "refunded_amount": 0,
        "owed_amount": 0,
        "currency_code": "EUR",
        "tender": "card",
        "card": {"brand": "visa", "last4": "4242", "entry_method": "dipped"},
        "auth_code": "A1",
        "processor_reference": "proc-1",
        "error_code": "",
        "cancel_reason": "",
        "state": "opaque-42",
        "app_id": "pos-app",
    }
    assert order.position == 4
    assert order.data["status"] == "completed"
    assert order.data["total"] == 1000
    assert order.data["paid_total"] == 1000
    assert order.data["line_items"][0]["sku"] == "MUG"
    assert order.callback_url == ""  # only a payment's result goes to its callback


def test_declined_failed_and_canceled_results_each_resolve_their_payment() -> None:
    for outcome in (Outcome.DECLINED, Outcome.FAILED, Outcome.CANCELED):
        sale = new_sale()
        payment_id = request(sale)
        sale.record_payment_result(
            RecordPaymentResult(
                sale_id=str(sale.id),
                payment_id=payment_id,
                outcome=outcome,
                tender=Tender.CARD,
                error_code="E42",
            )
        )
        (got,) = changes(sale.collect_events())
        assert got.kind is Kind.PAYMENT_RESOLVED
        assert got.data["outcome"] == outcome.value
        assert got.data["error_code"] == "E42"
        assert got.data["approved_amount"] == 0


def test_merchant_cancel_of_a_pending_payment_resolves_it_as_canceled_with_the_reason() -> None:
    sale = new_sale()
    payment_id = request(sale)
    sale.cancel_payment(payment_id, "customer left")
    (got,) = changes(sale.collect_events())
    assert got.data["outcome"] == "canceled"
    assert got.data["cancel_reason"] == "customer left"


def test_an_approval_after_a_cancel_is_delivered_as_owed_back() -> None:
    sale = new_sale()
    payment_id = request(sale)
    sale.cancel_payment(payment_id, "terminal timed out")
    approve(sale, payment_id)  # the terminal took the money after all
    canceled, late = changes(sale.collect_events())
    assert canceled.data["outcome"] == "canceled"
    assert late.kind is Kind.PAYMENT_RESOLVED
    assert late.callback_url == "https://pos.example.com/cb"
    assert (late.data["outcome"], late.data["owed_amount"]) == ("approved_after_cancel", 1000)


def test_an_expiry_and_an_approval_after_it_are_delivered_to_the_callback() -> None:
    sale = new_sale()
    payment_id = sale.request_payment(
        amount=1000,
        currency_code="EUR",
        tender_types=[Tender.CARD],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
        expires_after=timedelta(minutes=5),
    )
    sale.expire_payment(payment_id, datetime.now(UTC) + timedelta(minutes=6))
    approve(sale, payment_id)  # the terminal took the money after all
    expired, late = changes(sale.collect_events())
    assert (expired.kind, expired.data["outcome"]) == (Kind.PAYMENT_RESOLVED, "expired")
    assert expired.callback_url == "https://pos.example.com/cb"
    assert (late.data["outcome"], late.data["owed_amount"]) == ("approved_after_cancel", 1000)


def test_refund_resolves_the_payment_as_refunded_and_refunds_the_order() -> None:
    sale = new_sale()
    payment_id = request(sale)
    approve(sale, payment_id)
    history = sale.collect_events()
    refund_id = sale.refund_payment(payment_id, 400, "scratched", "proc-r")
    got = changes([*history, *sale.collect_events()])[2:]
    assert [c.kind for c in got] == [Kind.PAYMENT_RESOLVED, Kind.ORDER_REFUNDED]
    assert [c.id for c in got] == ["5.0", "5.1"]  # one event, two changes, in order
    payment, order = got
    refund = {
        "refund_id": refund_id,
        "amount": 400,
        "reason": "scratched",
        "processor_reference": "proc-r",
    }
    assert payment.data["outcome"] == "refunded"
    assert payment.data["refund"] == refund
    assert payment.data["refunded_amount"] == 400
    assert payment.callback_url == "https://pos.example.com/cb"
    assert order.data["refund"] == refund
    assert order.data["refunded_total"] == 400
    assert order.data["status"] == "completed"  # partly refunded


def test_canceled_order_and_unpaid_steps_give_only_the_cancel() -> None:
    sale = new_sale()
    sale.add_line_item(MUG)
    sale.cancel("changed mind")
    got = changes(sale.collect_events())
    assert [c.kind for c in got] == [Kind.ORDER_CANCELED]
    assert got[0].data["status"] == "canceled"


# ---- stock, products, customers -------------------------------------------------------------


def test_stock_changes_carry_sku_location_and_resulting_levels() -> None:
    item = StockItem.open(MERCHANT, PRODUCT, "store-1")
    item.receive(10, "po-1", "")
    item.record_sale("sale-1", 3)
    item.adjust(-2, AdjustmentReason.DAMAGE, "")
    item.count(4, "")
    got = changes(item.collect_events())
    assert [c.kind for c in got] == [Kind.STOCK_CHANGED] * 4  # opening changes no level
    assert [(c.data["reason"], c.data["on_hand"], c.data["available"]) for c in got] == [
        ("received", 10, 10),
        ("sold", 7, 7),
        ("adjusted", 5, 5),
        ("counted", 4, 4),
    ]
    assert {(c.data["product_id"], c.data["sku"], c.data["location_id"]) for c in got} == {
        (PRODUCT, "MUG-01", "store-1")
    }
    assert {c.merchant_id for c in got} == {MERCHANT}


def test_stock_changes_report_what_is_reserved_and_still_available() -> None:
    item = StockItem.open(MERCHANT, PRODUCT, "store-1")
    item.receive(10, "po-1", "")
    item.reserve("sale-1", 4, may_oversell=False)
    item.reserve("sale-2", 1, may_oversell=False)
    item.release("sale-2", 1, "payment declined")
    item.record_sale("sale-1", 4)
    got = changes(item.collect_events())
    assert [
        (c.data["reason"], c.data["on_hand"], c.data["reserved"], c.data["available"]) for c in got
    ] == [
        ("received", 10, 0, 10),
        ("reserved", 10, 4, 6),
        ("reserved", 10, 5, 5),
        ("reservation_released", 10, 4, 6),
        ("sold", 6, 0, 6),
    ]


def test_the_outbox_reads_every_event_a_change_is_made_of() -> None:
    # Topics come from the event classes: each is a real event's, and every event that
    # makes a change is read (a sample of a history of each aggregate kind).
    from ledger.deliveries.outbox import TOPIC_KINDS

    sale = new_sale()
    payment_id = request(sale)
    sale.cancel_payment(payment_id, "")
    approve(sale, payment_id)
    item = StockItem.open(MERCHANT, PRODUCT, "store-1")
    item.receive(5, "", "")
    item.reserve("s", 1, may_oversell=False)
    item.release("s", 1, "")
    for history in (sale.collect_events(), item.collect_events()):
        made = {get_topic(type(history[c.position - 1])) for c in changes(history)}
        assert made, "the sample makes changes"
        assert made <= set(TOPIC_KINDS)


def test_product_changes_carry_the_whole_product() -> None:
    product = Product.create(
        MERCHANT,
        CreateProduct(sku="MUG-01", name="Mug", price=1200, currency_code="USD"),
    )
    product.update({"price": 1500})
    product.discontinue("old")
    got = changes(product.collect_events())
    assert [c.data["change"] for c in got] == ["created", "updated", "discontinued"]
    assert [c.data["price"] for c in got] == [1200, 1500, 1500]
    assert got[-1].data["discontinued"] is True
    assert got[-1].data["sku"] == "MUG-01"


def test_customer_changes_carry_consent() -> None:
    customer = Customer.create(
        MERCHANT,
        CreateCustomer(
            name="Alice",
            email="a@example.com",
            marketing_consent=True,
            consent_channel=Channel.ONLINE,
        ),
        APP,
    )
    customer.update({"phone": "+4915112345678"}, None, APP)
    customer.update({"marketing_consent": False}, Channel.IN_STORE, APP)
    got = changes(customer.collect_events())
    assert [c.kind for c in got] == [
        Kind.CUSTOMER_CREATED,
        Kind.CUSTOMER_CONSENT_CHANGED,
        Kind.CUSTOMER_CHANGED,
        Kind.CUSTOMER_CONSENT_CHANGED,
    ]
    assert [c.data["marketing_consent"]["granted"] for c in got] == [False, True, True, False]
    assert got[1].data["marketing_consent"]["channel"] == "online"
    assert got[2].data["phone"] == "+4915112345678"
    assert got[2].data["email"] == "a@example.com"


def test_every_change_body_is_plain_json_and_every_kind_but_payments_is_subscribable() -> None:
    sale = new_sale()
    approve(sale, request(sale))
    for change in changes(sale.collect_events()):
        body = json.loads(json.dumps(change.body()))
        assert body["id"] == change.id
        assert body["kind"] == change.kind.value
        assert body["merchant_id"] == MERCHANT
        assert body["position"] == change.position
    assert Kind.PAYMENT_RESOLVED not in SUBSCRIBABLE
    assert Kind.STOCK_CHANGED in SUBSCRIBABLE


movements = st.lists(
    st.tuples(st.sampled_from(["receive", "sell", "adjust", "count"]), st.integers(1, 50)),
    max_size=30,
)


@given(movements)
def test_each_stock_change_reports_the_level_the_domain_reached(
    moves: list[tuple[str, int]],
) -> None:
    item = StockItem.open(MERCHANT, PRODUCT, "store-1")
    levels = []
    for move, n in moves:
        match move:
            case "receive":
                item.receive(n, "", "")
            case "sell":
                item.record_sale("sale", n)
            case "adjust":
                item.adjust(-n, AdjustmentReason.LOSS, "")
            case "count":
                item.count(n, "")
        levels.append(item.on_hand)
    got = changes(item.collect_events())
    assert [c.data["on_hand"] for c in got] == levels
    assert len({c.id for c in got}) == len(got)  # ids are unique positions
