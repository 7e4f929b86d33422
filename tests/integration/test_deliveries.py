"""Callbacks end to end: commands in a real ledger, deliveries to a real receiver on loopback."""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.bootstrap import build_deliveries
from ledger.deliveries import signing
from ledger.deliveries.changes import Kind
from ledger.deliveries.store import Outcome
from ledger.deliveries.webhooks import Webhooks
from ledger.deliveries.worker import Deliveries
from ledger.domain import commands as c
from ledger.domain.errors import RuleViolated
from ledger.store import Settings
from tests.integration.conftest import (
    MERCHANT_A,
    PendingPayment,
    approved_by_card,
    ctx,
    declined_card,
    open_sale,
)
from tests.receiver import Answer, Receiver, receiving

APP = "pay-app"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Deliveries that retry in tenths of a second and may reach the test's receiver."""
    return replace(
        settings,
        delivery_timeout_seconds=1.0,
        delivery_backoff_first_seconds=0.05,
        delivery_backoff_max_seconds=0.2,
        delivery_allowed_networks=LOOPBACK,
    )


@pytest.fixture
def ledger_fast(fast: Settings) -> Iterator[Ledger]:
    app = Ledger.open(fast)
    yield app
    app.close()


@pytest.fixture
def deliveries(ledger_fast: Ledger) -> Deliveries:
    d = build_deliveries(ledger_fast)
    d.ensure()
    return d


def pay(ledger: Ledger, url: str, amount: int | None = None, state: str = "st-1") -> PendingPayment:
    sale = open_sale(ledger)
    amount = sale.amount_due if amount is None else amount
    result = ledger.request_payment(
        ctx(),
        c.RequestPayment(
            sale_id=str(sale.id),
            amount=amount,
            currency_code="USD",
            tender_types=(c.Tender.CARD,),
            callback_url=url,
            app_id=APP,
            api_version="1.0",
            state=state,
        ),
    )
    return PendingPayment(str(sale.id), result.ids["payment_id"], amount)


def rows(ledger: Ledger, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(ledger.database_url, row_factory=dict_row) as conn:
        return conn.execute(
            SQL("SELECT * FROM {} ORDER BY created_at").format(
                Identifier(ledger.settings.schema, table)
            )
            if table == "deliveries"
            else SQL("SELECT * FROM {}").format(Identifier(ledger.settings.schema, table))
        ).fetchall()


def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def finished(ledger: Ledger, count: int) -> bool:
    done = [r for r in rows(ledger, "deliveries") if r["status"] != "pending"]
    return len(done) >= count


def test_each_resolved_payment_is_one_signed_callback_that_verifies(
    ledger_fast: Ledger, deliveries: Deliveries
) -> None:
    secret = deliveries.store.rotate_app_secret(MERCHANT_A, APP, str(uuid.uuid4()))
    with receiving() as receiver, deliveries.running():
        approved = pay(ledger_fast, receiver.url, state="approve-me")
        ledger_fast.record_payment_result(ctx(), approved_by_card(approved))
        declined = pay(ledger_fast, receiver.url, state="decline-me")
        ledger_fast.record_payment_result(ctx(), declined_card(declined))
        got = receiver.wait_for(2)
        wait_until(lambda: finished(ledger_fast, 2))
    assert len(got) == 2
    by_payment = {}
    for request in got:
        timestamp = int(request.headers[signing.TIMESTAMP_HEADER])
        assert signing.verify(
            secret, timestamp, request.body, request.headers[signing.SIGNATURE_HEADER], time.time()
        )
        assert not signing.verify(
            "whsec_wrong",
            timestamp,
            request.body,
            request.headers[signing.SIGNATURE_HEADER],
            time.time(),
        )
        body = json.loads(request.body)
        assert body["delivery_id"] == request.headers[signing.DELIVERY_ID_HEADER]
        assert body["kind"] == "payment.resolved"
        by_payment[body["data"]["payment_id"]] = body
    assert by_payment[approved.payment_id]["data"]["outcome"] == "approved"
    assert by_payment[approved.payment_id]["data"]["state"] == "approve-me"
    assert by_payment[approved.payment_id]["data"]["approved_amount"] == approved.amount
    assert by_payment[approved.payment_id]["data"]["card"]["last4"] == "4242"
    assert by_payment[declined.payment_id]["data"]["outcome"] == "declined"
    assert by_payment[declined.payment_id]["data"]["state"] == "decline-me"
    assert "4242424242424242" not in "".join(r.body.decode() for r in got)
    assert {r["status"] for r in rows(ledger_fast, "deliveries")} == {"delivered"}


def test_500s_and_timeouts_are_retried_under_one_delivery_id_until_delivered(
    ledger_fast: Ledger, deliveries: Deliveries
) -> None:
    deliveries.store.rotate_app_secret(MERCHANT_A, APP, str(uuid.uuid4()))
    script = [Answer(500), Answer(delay=1.5), Answer(502), Answer(200)]
    with receiving(Receiver(script=script)) as receiver, deliveries.running():
        p = pay(ledger_fast, receiver.url)
        ledger_fast.record_payment_result(ctx(), approved_by_card(p))
        wait_until(lambda: finished(ledger_fast, 1))
        got = receiver.wait_for(4)
    assert len(got) == 4
    assert len({r.headers[signing.DELIVERY_ID_HEADER] for r in got}) == 1
    assert len({r.body for r in got}) == 1  # the same delivery, byte for byte
    (row,) = rows(ledger_fast, "deliveries")
    assert row["status"] == "delivered"
    assert row["attempts"] == 4
    attempts = sorted(rows(ledger_fast, "delivery_attempts"), key=lambda a: a["attempt"])
    assert [(a["status_code"], a["error"]) for a in attempts] == [
        (500, "answered 500"),
        (None, "timed out"),
        (502, "answered 502"),
        (200, ""),
    ]


def test_retry_after_is_waited_out_and_410_ends_the_delivery(
    ledger_fast: Ledger, deliveries: Deliveries
) -> None:
    deliveries.store.rotate_app_secret(MERCHANT_A, APP, str(uuid.uuid4()))
    script = [Answer(503, (("Retry-After", "2"),)), Answer(200)]
    with (
        receiving(Receiver(script=script)) as receiver,
        receiving(Receiver(default=Answer(410))) as gone,
        deliveries.running(),
    ):
        ledger_fast.record_payment_result(ctx(), approved_by_card(pay(ledger_fast, receiver.url)))
        ledger_fast.record_payment_result(ctx(), approved_by_card(pay(ledger_fast, gone.url)))
        wait_until(lambda: finished(ledger_fast, 2))
        time.sleep(0.5)  # a retry of the 410 would come within tenths of a second
    first, second = receiver.received
    assert second.at - first.at >= 1.9  # not the 0.05 s backoff: the receiver's 2 s
    assert len(gone.received) == 1
    statuses = sorted((r["url"] == gone.url, r["status"]) for r in rows(ledger_fast, "deliveries"))
    assert statuses == [(False, "delivered"), (True, "gone")]


def test_a_refused_command_delivers_nothing(ledger_fast: Ledger, deliveries: Deliveries) -> None:
    deliveries.store.rotate_app_secret(MERCHANT_A, APP, str(uuid.uuid4()))
    with receiving() as receiver, deliveries.running():
        p = pay(ledger_fast, receiver.url)
        ledger_fast.record_payment_result(ctx(), approved_by_card(p))
        with pytest.raises(RuleViolated):  # a second, different result rolls back
            ledger_fast.record_payment_result(ctx(), declined_card(p))
        with pytest.raises(RuleViolated):  # so does a payment larger than what is due
            pay(ledger_fast, receiver.url, amount=10**9)
        wait_until(lambda: finished(ledger_fast, 1))
        time.sleep(1.0)  # anything else owed would have been sent by now
    assert len(receiver.received) == 1
    assert json.loads(receiver.received[0].body)["data"]["outcome"] == "approved"
    assert len(rows(ledger_fast, "deliveries")) == 1


def test_a_sales_callbacks_arrive_in_order_each_waiting_for_the_one_before(
    ledger_fast: Ledger, deliveries: Deliveries
) -> None:
    deliveries.store.rotate_app_secret(MERCHANT_A, APP, str(uuid.uuid4()))
    script = [Answer(500), Answer(500), Answer(500)]  # the first callback fails three times
    with receiving(Receiver(script=script)) as receiver, deliveries.running():
        sale = open_sale(ledger_fast)
        results = []
        for _ in range(2):  # two half payments of one sale
            requested = ledger_fast.request_payment(
                ctx(),
                c.RequestPayment(
                    sale_id=str(sale.id),
                    amount=sale.total // 2,
                    currency_code="USD",
                    tender_types=(c.Tender.CARD,),
                    callback_url=receiver.url,
                    app_id=APP,
                    api_version="1.0",
                ),
            )
            p = PendingPayment(str(sale.id), requested.ids["payment_id"], sale.total // 2)
            results.append(p.payment_id)
            ledger_fast.record_payment_result(ctx(), approved_by_card(p))
        wait_until(lambda: finished(ledger_fast, 2))
    payments = [json.loads(r.body)["data"]["payment_id"] for r in receiver.received]
    assert payments == [results[0]] * 4 + [results[1]]


def test_loopback_is_refused_unless_allowed_and_nothing_is_sent(settings: Settings) -> None:
    strict = replace(settings, delivery_backoff_first_seconds=0.05)  # no network is allowed
    ledger = Ledger.open(strict)
    try:
        deliveries = build_deliveries(ledger)
        deliveries.ensure()
        deliveries.store.rotate_app_secret(MERCHANT_A, APP, str(uuid.uuid4()))
        with receiving() as receiver, deliveries.running():
            ledger.record_payment_result(ctx(), approved_by_card(pay(ledger, receiver.url)))
            wait_until(lambda: finished(ledger, 1))
        assert receiver.received == []
        (row,) = rows(ledger, "deliveries")
        assert row["status"] == "refused"
        assert "POSLEDGER_DELIVERY_ALLOWED_NETWORKS" in str(row["last_error"])
    finally:
        ledger.close()


def test_a_callback_waits_for_its_apps_signing_secret(
    ledger_fast: Ledger, deliveries: Deliveries
) -> None:
    with receiving() as receiver, deliveries.running():
        ledger_fast.record_payment_result(ctx(), approved_by_card(pay(ledger_fast, receiver.url)))
        wait_until(lambda: rows(ledger_fast, "delivery_attempts"))
        assert receiver.received == []
        secret = deliveries.store.rotate_app_secret(MERCHANT_A, APP, str(uuid.uuid4()))
        (got,) = receiver.wait_for(1)
    timestamp = int(got.headers[signing.TIMESTAMP_HEADER])
    assert signing.verify(
        secret, timestamp, got.body, got.headers[signing.SIGNATURE_HEADER], time.time()
    )


def test_a_batch_of_attempts_is_recorded_at_once_except_those_whose_lease_moved_on(
    ledger_fast: Ledger, deliveries: Deliveries
) -> None:
    store = deliveries.store
    app_secret = store.rotate_app_secret(MERCHANT_A, APP, str(uuid.uuid4()))
    subscription, sub_secret = Webhooks(store).create(
        MERCHANT_A, str(uuid.uuid4()), "https://shop.example/hooks", [Kind.STOCK_CHANGED], ""
    )
    made: list[dict[str, Any]] = [
        {
            "delivery_id": uuid.uuid4(),
            "merchant_id": MERCHANT_A,
            "kind": "payment.resolved",
            "change_id": f"c{i}",
            "position": i,
            "idx": 0,
            "url": "https://shop.example/cb",
            "app_id": APP if i != 2 else "",
            "subscription_id": subscription.subscription_id if i == 2 else None,
            "ordering_key": f"key-{i}",
            "body": "{}",
        }
        for i in range(1, 4)
    ]
    with store.datastore.transaction(commit=True) as curs:
        store.add(curs, made)
    claimed = {d.delivery_id: d for d in store.claim(10, 60)}
    one, gone, lost = (claimed[row["delivery_id"]] for row in made)
    assert (one.secret, gone.secret, lost.secret) == (app_secret, sub_secret, app_secret)
    assert app_secret not in repr(one)
    with store.datastore.transaction(commit=True) as curs:  # another sender took it over
        curs.execute(
            store.q("UPDATE {s}.deliveries SET lease_token = %s WHERE delivery_id = %s"),
            (uuid.uuid4(), lost.delivery_id),
        )
    delivered = Outcome("delivered", 204, "", "", 12)
    answered_gone = Outcome("gone", 410, "the receiver answered 410 Gone", "bye", 7)
    retry = Outcome("pending", 500, "answered 500", "", 9, retry_in=30.0)
    assert store.record([(one, delivered), (gone, answered_gone), (lost, retry)]) == {
        lost.delivery_id
    }
    by_id = {r["delivery_id"]: r for r in rows(ledger_fast, "deliveries")}
    assert [by_id[d.delivery_id]["status"] for d in (one, gone, lost)] == [
        "delivered",
        "gone",
        "pending",
    ]
    assert [by_id[d.delivery_id]["attempts"] for d in (one, gone, lost)] == [1, 1, 0]
    assert by_id[lost.delivery_id]["lease_token"] is not None  # left to its new sender
    assert by_id[one.delivery_id]["finished_at"] is not None
    attempts = {
        (r["delivery_id"], r["attempt"], r["status_code"], r["duration_ms"])
        for r in rows(ledger_fast, "delivery_attempts")
    }
    assert attempts == {(one.delivery_id, 1, 204, 12), (gone.delivery_id, 1, 410, 7)}
    (sub,) = rows(ledger_fast, "webhook_subscriptions")
    assert (sub["enabled"], sub["disabled_reason"]) == (False, "endpoint answered 410 Gone")
    assert store.record([]) == set()
