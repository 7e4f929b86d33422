"""Events stored by earlier layouts of the sale code still decode, replay and re-encode.

The records below are literal: topics and bytes as the ledger stored them when the Sale
aggregate, its value objects and its import factory were all in `ledger/domain/sale.py`
(generated with that code). Moving classes between modules must not change what an old
event decodes to, nor the bytes a decoded event encodes to.
"""

from __future__ import annotations

import json
from uuid import UUID

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)

from ledger.domain import commands as c
from ledger.domain.sale import PaymentStatus, Sale, SaleStatus

SALE_ID = UUID("c7b16e1a-575f-4a3e-805d-8d7b6582fe8c")
IMPORT_ID = UUID("24abf474-0023-4cf9-94d9-3ae3050980a9")
# A sale: a line added and removed, a customer, a declined payment, an approved one with a
# tip, completion, and a partial refund that puts one unit back in stock.
SALE: list[tuple[int, str, bytes]] = [
    (
        1,
        "posledger.SaleCreated",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.826179+00:00"},"originator_topic":"posledger.Sale","merchant_id":"m-1","location_id":"store-1","channel":"in_store","currency_code":"EUR","line_items":[{"line_id":"90bd3de8-90b8-4970-9d5e-69980cc3042f","sku":"MUG","name":"Mug","quantity":2,"unit_price":450,"discount":50,"tax_rate_ppm":200000,"product_id":"p-1"}],"customer_id":"","external_order_id":"","note":""}',
    ),
    (
        2,
        "posledger.SaleLineItemAdded",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.831559+00:00"},"line_item":{"line_id":"56086f8d-9a36-456e-b238-dc87ae836666","sku":"TEA","name":"Tea","quantity":1,"unit_price":300,"discount":0,"tax_rate_ppm":0,"product_id":""}}',
    ),
    (
        3,
        "posledger.SaleLineItemRemoved",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.831666+00:00"},"line_id":"56086f8d-9a36-456e-b238-dc87ae836666"}',
    ),
    (
        4,
        "posledger.SaleCustomerAttached",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.831713+00:00"},"customer_id":"cust-1"}',
    ),
    (
        5,
        "posledger.PaymentRequested",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.831816+00:00"},"payment_id":"ed16e869-2c6a-4c08-8493-90b3349751d0","amount":500,"tender_types":["card"],"callback_url":"https://pos.example.com/cb","app_id":"pos","api_version":"1.0","note":"","state":"","expires_at":{"_type_":"datetime_iso","_data_":"2026-12-02T16:00:06.831803+00:00"},"class_version":2}',
    ),
    (
        6,
        "posledger.PaymentNotApproved",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.831950+00:00"},"payment_id":"ed16e869-2c6a-4c08-8493-90b3349751d0","outcome":"declined","tender":"card","card":{"brand":"visa","last4":"4242","entry_method":"dipped"},"processor_reference":"","error_code":"do_not_honor","occurred_at":null}',
    ),
    (
        7,
        "posledger.PaymentRequested",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.832065+00:00"},"payment_id":"75e2a46f-9111-4e5e-a3c7-2679fb249d82","amount":1020,"tender_types":["card","cash"],"callback_url":"https://pos.example.com/cb","app_id":"pos","api_version":"1.0","note":"","state":"","expires_at":null,"class_version":2}',
    ),
    (
        8,
        "posledger.PaymentApproved",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.832150+00:00"},"payment_id":"75e2a46f-9111-4e5e-a3c7-2679fb249d82","approved_amount":1020,"tip_amount":100,"tender":"card","card":{"brand":"visa","last4":"4242","entry_method":"dipped"},"auth_code":"A1","processor_reference":"ch_1","cash_tendered":0,"change_given":0,"occurred_at":null}',
    ),
    (
        9,
        "posledger.SaleCompleted",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.832214+00:00"}}',
    ),
    (
        10,
        "posledger.PaymentRefunded",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.832300+00:00"},"refund_id":"1a5a3493-55e6-4b30-a628-97aabdfedcb2","payment_id":"75e2a46f-9111-4e5e-a3c7-2679fb249d82","amount":300,"reason":"broken","processor_reference":"re_1","restock_items":[{"line_id":"90bd3de8-90b8-4970-9d5e-69980cc3042f","product_id":"p-1","quantity":1}]}',
    ),
]
# An order imported from another channel, finished and paid.
IMPORT: list[tuple[int, str, bytes]] = [
    (
        1,
        "posledger.SaleCreated",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.832513+00:00"},"originator_topic":"posledger.Sale","merchant_id":"m-1","location_id":"web","channel":"online","currency_code":"EUR","line_items":[{"line_id":"154a783a-cd9d-493f-af33-5a420d04625c","sku":"MUG","name":"Mug","quantity":1,"unit_price":1000,"discount":0,"tax_rate_ppm":0,"product_id":""}],"customer_id":"","external_order_id":"1001","note":""}',
    ),
    (
        2,
        "posledger.SaleImported",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.832616+00:00"},"channel":"shopify","fingerprint":"fp-1","placed_at":{"_type_":"datetime_iso","_data_":"2026-11-30T12:00:00+00:00"},"payments":[{"payment_id":"d9a6f7c0-ca79-41d8-97cb-b907c5b8c9b2","tender":"card","amount":1000,"card":{"brand":"visa","last4":"4242","entry_method":"dipped"},"auth_code":"A2","processor_reference":"ch_2"}],"open":false,"class_version":2}',
    ),
    (
        3,
        "posledger.SaleCompleted",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T15:55:06.832666+00:00"}}',
    ),
]


def mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder=transcoder)


def stored(aggregate_id: UUID, records: list[tuple[int, str, bytes]]) -> list[StoredEvent]:
    return [StoredEvent(aggregate_id, version, topic, state) for version, topic, state in records]


def replay(records: list[StoredEvent]) -> Sale:
    sale = None
    for record in records:
        sale = mapper().to_domain_event(record).mutate(sale)  # type: ignore[attr-defined]
    assert isinstance(sale, Sale)
    return sale


def test_old_sale_events_decode_to_the_events_of_today() -> None:
    records = stored(SALE_ID, SALE)
    events = [mapper().to_domain_event(r) for r in records]
    kinds: list[type] = [type(e) for e in events]
    assert kinds == [
        Sale.Created,
        Sale.LineItemAdded,
        Sale.LineItemRemoved,
        Sale.CustomerAttached,
        Sale.PaymentRequested,
        Sale.PaymentNotApproved,
        Sale.PaymentRequested,
        Sale.PaymentApproved,
        Sale.Completed,
        Sale.PaymentRefunded,
    ]
    # Encoded again, each is the very bytes that were stored: same topic, same state.
    assert [mapper().to_stored_event(e) for e in events] == records


def test_an_old_sale_replays_to_the_same_state() -> None:
    sale = replay(stored(SALE_ID, SALE))
    assert (sale.id, sale.version, sale.status) == (SALE_ID, 10, SaleStatus.COMPLETED)
    assert (sale.total, sale.paid_total, sale.tip_total, sale.refunded_total) == (
        1020,
        1020,
        100,
        300,
    )
    assert sale.customer_id == "cust-1"
    assert [(item.sku, item.quantity, item.total_amount) for item in sale.line_items] == [
        ("MUG", 2, 1020)
    ]
    declined, approved = sale.payments.values()
    assert (declined.status, declined.error_code, declined.card) == (
        PaymentStatus.DECLINED,
        "do_not_honor",
        {"brand": "visa", "last4": "4242", "entry_method": "dipped"},
    )
    assert declined.expires_at is not None
    assert (approved.status, approved.auth_code, approved.refunded_amount) == (
        PaymentStatus.APPROVED,
        "A1",
        300,
    )
    assert sale.restocked(sale.line_items[0].line_id) == 1


def test_an_old_import_replays_and_re_encodes() -> None:
    records = stored(IMPORT_ID, IMPORT)
    sale = replay(records)
    assert (sale.status, sale.import_channel, sale.import_fingerprint) == (
        SaleStatus.COMPLETED,
        "shopify",
        "fp-1",
    )
    (payment,) = sale.payments.values()
    assert (payment.app_id, payment.status, payment.approved_amount) == (
        "import:shopify",
        PaymentStatus.APPROVED,
        1000,
    )
    events = [mapper().to_domain_event(r) for r in records]
    assert [mapper().to_stored_event(e) for e in events] == records


def test_an_import_today_stores_what_the_old_layout_stored() -> None:
    """The same order imported now records the same events with the same fields."""
    order = c.ImportOrder(
        channel="shopify",
        external_order_id="1001",
        sales_channel=c.Channel.ONLINE,
        location_id="web",
        currency_code="EUR",
        line_items=(c.LineItemInput("MUG", "Mug", 1, 1000),),
        payments=(
            c.ImportedPayment(
                c.Tender.CARD, 1000, c.CardInput("visa", "4242", c.EntryMethod.DIPPED), "A2", "ch_2"
            ),
        ),
        placed_at=mapper().to_domain_event(stored(IMPORT_ID, IMPORT)[1]).placed_at,  # type: ignore[attr-defined]
    )
    now = [
        mapper().to_stored_event(e)
        for e in Sale.import_order(IMPORT_ID, "m-1", order, "fp-1").collect_events()
    ]
    assert [(r.originator_version, r.topic) for r in now] == [(v, t) for v, t, _ in IMPORT]

    def fields(state: bytes) -> dict[str, object]:
        values = json.loads(state)
        del values["timestamp"]  # the time it was recorded, and ids made anew, differ
        for line in values.get("line_items", []):
            del line["line_id"]
        for payment in values.get("payments", []):
            del payment["payment_id"]
        return dict(values)

    assert [fields(r.state) for r in now] == [fields(state) for _, _, state in IMPORT]
