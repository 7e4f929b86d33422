"""WebhookService and the change feed over a real channel, deliveries to a real receiver."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, cast

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from ledger.application import Ledger
from ledger.bootstrap import build_deliveries
from ledger.deliveries import signing
from ledger.deliveries.sender import Sender
from ledger.deliveries.worker import Deliveries
from ledger.domain.customer import CreateCustomer
from ledger.v1 import sales_pb2
from ledger.v1 import webhooks_pb2 as pb
from ledger.v1.webhooks_pb2_grpc import ChangeFeedServiceStub, WebhookServiceStub
from tests.e2e import api_client as api
from tests.integration.conftest import ctx
from tests.receiver import Receiver, receiving

T = api.TIMEOUT
STOCK = pb.CHANGE_KIND_STOCK_CHANGED
CUSTOMER_KINDS = [
    pb.CHANGE_KIND_CUSTOMER_CREATED,
    pb.CHANGE_KIND_CUSTOMER_CHANGED,
    pb.CHANGE_KIND_CUSTOMER_CONSENT_CHANGED,
]


@pytest.fixture
def webhooks(channel: grpc.Channel) -> WebhookServiceStub:
    return WebhookServiceStub(channel)


@pytest.fixture
def deliveries(ledger: Ledger) -> Iterator[Deliveries]:
    """Deliveries running beside the server, allowed to reach the test's receiver."""
    quick = replace(
        ledger.settings,
        delivery_allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),),
        delivery_backoff_first_seconds=0.05,
        delivery_backoff_max_seconds=0.2,
        delivery_timeout_seconds=1.0,
    )
    running = build_deliveries(ledger, sender=Sender(quick))
    with running.running():
        yield running


def create(
    webhooks: WebhookServiceStub, url: str, kinds: list[Any], **fields: str
) -> pb.CreateWebhookResponse:
    request = pb.CreateWebhookRequest(
        request_id=api.new_request_id(), url=url, kinds=kinds, **fields
    )
    return webhooks.CreateWebhook(request, timeout=T)


def bodies(receiver: Receiver, secret: str) -> list[dict[str, object]]:
    result = []
    for r in receiver.received:
        timestamp = int(r.headers[signing.TIMESTAMP_HEADER])
        assert signing.verify(
            secret, timestamp, r.body, r.headers[signing.SIGNATURE_HEADER], time.time()
        )
        result.append(json.loads(r.body))
    return result


def test_subscriptions_receive_stock_and_customer_changes_they_asked_for(
    stubs: api.Stubs, webhooks: WebhookServiceStub, deliveries: Deliveries
) -> None:
    with receiving() as stock_receiver, receiving() as crm:
        stock_hook = create(webhooks, stock_receiver.url, [STOCK], description="web shop")
        crm_hook = create(webhooks, crm.url, CUSTOMER_KINDS)
        product = api.create_product(stubs.catalog, sku="MUG-01")
        api.receive_stock(stubs.inventory, product.id, 10, location_id="store-1")
        customer = api.create_customer(
            stubs.customers, marketing_consent=True, consent_channel=sales_pb2.SALES_CHANNEL_ONLINE
        )
        api.update_customer(
            stubs.customers,
            customer.id,
            {"marketing_consent": False},
            consent_channel=sales_pb2.SALES_CHANNEL_IN_STORE,
        )
        stock_receiver.wait_for(1)
        crm.wait_for(3)
        time.sleep(0.5)  # anything more (a product change) would have come by now
    (stock,) = bodies(stock_receiver, stock_hook.signing_secret)
    assert stock["kind"] == "stock.changed"
    assert stock["data"] == {
        "product_id": product.id,
        "sku": "MUG-01",
        "location_id": "store-1",
        "reason": "received",
        "on_hand": 10,
        "reserved": 0,
        "available": 10,
    }
    changes = bodies(crm, crm_hook.signing_secret)
    assert [c["kind"] for c in changes] == [
        "customer.created",
        "customer.consent_changed",
        "customer.consent_changed",
    ]
    consent = [c["data"]["marketing_consent"] for c in changes]  # type: ignore[index]
    assert [c["granted"] for c in consent] == [False, True, False]
    assert consent[2]["channel"] == "in_store"
    assert {c["data"]["customer_id"] for c in changes} == {customer.id}  # type: ignore[index]


def test_webhooks_are_created_listed_updated_rotated_and_deleted(
    webhooks: WebhookServiceStub,
) -> None:
    request = pb.CreateWebhookRequest(
        request_id=api.new_request_id(), url="https://shop.example/hooks", kinds=[STOCK]
    )
    created = webhooks.CreateWebhook(request, timeout=T)
    assert created.signing_secret.startswith("whsec_")
    assert webhooks.CreateWebhook(request, timeout=T) == created  # a repeat, not a second one
    reused = api.expect_failure(
        lambda: webhooks.CreateWebhook(
            pb.CreateWebhookRequest(
                request_id=request.request_id, url="https://other.example/h", kinds=[STOCK]
            ),
            timeout=T,
        )
    )
    assert reused.reason == "REQUEST_ID_REUSED"
    (listed,) = webhooks.ListWebhooks(pb.ListWebhooksRequest(), timeout=T).webhooks
    assert listed == created.webhook
    updated = webhooks.UpdateWebhook(
        pb.UpdateWebhookRequest(
            request_id=api.new_request_id(),
            webhook_id=created.webhook.id,
            kinds=[STOCK, pb.CHANGE_KIND_PRODUCT_CHANGED],
            enabled=False,
            update_mask=FieldMask(paths=["kinds", "enabled"]),
        ),
        timeout=T,
    ).webhook
    assert list(updated.kinds) == [pb.CHANGE_KIND_PRODUCT_CHANGED, STOCK]
    assert updated.enabled is False
    assert updated.url == "https://shop.example/hooks"
    rotation = pb.RotateWebhookSecretRequest(request_id=api.new_request_id(), webhook_id=updated.id)
    rotated = webhooks.RotateWebhookSecret(rotation, timeout=T)
    assert rotated.signing_secret != created.signing_secret
    # A retry of the rotation (its answer lost) answers the secret it made, not a third one.
    assert (
        webhooks.RotateWebhookSecret(rotation, timeout=T).signing_secret == rotated.signing_secret
    )
    again = pb.RotateWebhookSecretRequest(request_id=api.new_request_id(), webhook_id=updated.id)
    assert webhooks.RotateWebhookSecret(again, timeout=T).signing_secret != rotated.signing_secret
    no_id = api.expect_failure(
        lambda: webhooks.RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(webhook_id=updated.id), timeout=T
        )
    )
    assert (no_id.code, no_id.fields) == (grpc.StatusCode.INVALID_ARGUMENT, {"request_id"})
    callback = pb.RotateCallbackSecretRequest(request_id=api.new_request_id())
    first = webhooks.RotateCallbackSecret(callback, timeout=T).signing_secret
    assert webhooks.RotateCallbackSecret(callback, timeout=T).signing_secret == first
    webhooks.DeleteWebhook(
        pb.DeleteWebhookRequest(request_id=api.new_request_id(), webhook_id=updated.id), timeout=T
    )
    assert list(webhooks.ListWebhooks(pb.ListWebhooksRequest(), timeout=T).webhooks) == []
    missing = api.expect_failure(
        lambda: webhooks.RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(request_id=api.new_request_id(), webhook_id=updated.id),
            timeout=T,
        )
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert missing.reason == "WEBHOOK_NOT_FOUND"


def test_bad_webhooks_are_refused_field_by_field(webhooks: WebhookServiceStub) -> None:
    bad = api.expect_failure(
        lambda: webhooks.CreateWebhook(
            pb.CreateWebhookRequest(
                request_id=api.new_request_id(),
                url="http://shop.example/hooks",
                kinds=[pb.CHANGE_KIND_PAYMENT_RESOLVED, cast(Any, 99)],
            ),
            timeout=T,
        )
    )
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.fields == {"url", "kinds[0]", "kinds[1]"}
    empty = api.expect_failure(
        lambda: webhooks.CreateWebhook(
            pb.CreateWebhookRequest(request_id=api.new_request_id(), url="https://shop.example/h"),
            timeout=T,
        )
    )
    assert empty.fields == {"kinds"}


def test_deliveries_are_listed_with_attempts_and_redelivered_under_their_id(
    stubs: api.Stubs, webhooks: WebhookServiceStub, deliveries: Deliveries
) -> None:
    with receiving() as receiver:
        hook = create(webhooks, receiver.url, [pb.CHANGE_KIND_PRODUCT_CHANGED])
        api.create_product(stubs.catalog, sku="TEA-1")
        (first,) = receiver.wait_for(1)
        listing = webhooks.ListDeliveries(
            pb.ListDeliveriesRequest(webhook_id=hook.webhook.id), timeout=T
        )
        (delivery,) = listing.deliveries
        deadline = time.monotonic() + 10
        while delivery.status != pb.DELIVERY_STATUS_DELIVERED and time.monotonic() < deadline:
            time.sleep(0.05)
            (delivery,) = webhooks.ListDeliveries(
                pb.ListDeliveriesRequest(webhook_id=hook.webhook.id), timeout=T
            ).deliveries
        assert delivery.status == pb.DELIVERY_STATUS_DELIVERED
        assert delivery.id == first.headers[signing.DELIVERY_ID_HEADER]
        assert [(a.attempt, a.status_code) for a in delivery.attempts] == [(1, 200)]
        assert delivery.body.encode() == first.body
        again = webhooks.Redeliver(
            pb.RedeliverRequest(request_id=api.new_request_id(), delivery_id=delivery.id), timeout=T
        ).delivery
        assert again.status == pb.DELIVERY_STATUS_PENDING
        _, second = receiver.wait_for(2)
    assert second.headers[signing.DELIVERY_ID_HEADER] == delivery.id
    assert second.body == first.body
    unknown = api.expect_failure(
        lambda: webhooks.Redeliver(
            pb.RedeliverRequest(request_id=api.new_request_id(), delivery_id="nope"), timeout=T
        )
    )
    assert unknown.reason == "DELIVERY_NOT_FOUND"


def read_feed(channel: grpc.Channel, after: int, count: int) -> list[pb.StreamChangesResponse]:
    """The first `count` changes after `after`, then the call is canceled."""
    stream: Any = ChangeFeedServiceStub(channel).StreamChanges(
        pb.StreamChangesRequest(after_position=after), timeout=30
    )
    got = []
    for change in stream:
        got.append(change)
        if len(got) == count:
            break
    stream.cancel()
    return got


def test_the_change_feed_is_the_merchants_changes_in_order_and_resumes_without_gaps(
    ledger: Ledger, stubs: api.Stubs, channel: grpc.Channel
) -> None:
    product = api.create_product(stubs.catalog, sku="BEAN-1")
    ledger.create_customer(ctx("someone-else"), CreateCustomer(name="Not yours"))
    for n in (5, 3, 2):
        api.receive_stock(stubs.inventory, product.id, n)
    api.create_customer(stubs.customers, name="Grace")
    everything = read_feed(channel, 0, 5)  # product, three stock changes, the customer
    assert [c.kind for c in everything] == [
        pb.CHANGE_KIND_PRODUCT_CHANGED,
        STOCK,
        STOCK,
        STOCK,
        pb.CHANGE_KIND_CUSTOMER_CREATED,
    ]
    assert [json.loads(c.data_json).get("on_hand") for c in everything[1:4]] == [5, 8, 10]
    assert "Not yours" not in "".join(c.data_json for c in everything)
    positions = [c.position for c in everything]
    assert positions == sorted(positions)
    # Stop after the second change; resuming from its position gives exactly the rest.
    first_two = read_feed(channel, 0, 2)
    rest = read_feed(channel, first_two[-1].position, 3)
    assert [c.id for c in first_two + rest] == [c.id for c in everything]
    # A change made while a feed waits arrives on it.
    stream: Any = ChangeFeedServiceStub(channel).StreamChanges(
        pb.StreamChangesRequest(after_position=positions[-1], kinds=[STOCK]), timeout=30
    )
    api.receive_stock(stubs.inventory, product.id, 1)
    live = next(iter(stream))
    stream.cancel()
    assert json.loads(live.data_json)["on_hand"] == 11
