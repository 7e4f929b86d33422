"""Health checking and server reflection, as load balancers and generic clients use them.

The reflection tests drive a sale to completion with message classes built from what the
server describes about itself: this module does not import the generated ledger stubs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from ledger.grpc.server import LedgerServer

SALES = "ledger.v1.SalesService"
TIMEOUT = 10.0


def _check(channel: grpc.Channel, service: str) -> Any:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status


def test_health_is_serving_after_start(channel: grpc.Channel) -> None:
    for service in ["", SALES]:
        assert _check(channel, service) == health_pb2.HealthCheckResponse.SERVING


def test_health_of_an_unknown_service_is_not_found(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _check(channel, "ledger.v1.NoSuchService")

    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_is_not_serving_once_graceful_shutdown_begins(
    server: LedgerServer, channel: grpc.Channel
) -> None:
    server.health.enter_graceful_shutdown()

    for service in ["", SALES]:
        assert _check(channel, service) == health_pb2.HealthCheckResponse.NOT_SERVING


def test_watchers_see_not_serving_when_stop_begins(
    server: LedgerServer, channel: grpc.Channel
) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SALES), timeout=TIMEOUT
    )
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

    stopper = threading.Thread(target=server.stop, args=(5.0,), daemon=True)
    stopper.start()
    try:
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        watch.cancel()
        stopper.join(timeout=TIMEOUT)
    assert not stopper.is_alive(), "stop() did not return once the last call ended"


# ---- reflection --------------------------------------------------------------------------


class ReflectionClient:
    """A generic client: every message class comes from the server's reflection service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.database = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.database)

    def services(self) -> list[str]:
        return sorted(self.database.get_services())

    def service(self, name: str) -> ServiceDescriptor:
        return self.pool.FindServiceByName(name)

    def call(self, service_name: str, method_name: str, body: dict[str, Any]) -> dict[str, Any]:
        method = self.service(service_name).methods_by_name[method_name]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        assert request_class.DESCRIPTOR.file.pool is self.pool
        rpc = self.channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        response = rpc(json_format.ParseDict(body, request_class()), timeout=TIMEOUT)
        result: dict[str, Any] = json_format.MessageToDict(response)
        return result


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    client = ReflectionClient(channel)

    services = client.services()

    assert SALES in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    methods = set(client.service(SALES).methods_by_name)
    assert {"CreateSale", "RequestPayment", "RecordPaymentResult", "GetSale"} <= methods


def test_a_generic_client_completes_a_sale_through_reflection(channel: grpc.Channel) -> None:
    client = ReflectionClient(channel)

    created = client.call(
        SALES,
        "CreateSale",
        {
            "requestId": str(uuid.uuid4()),
            "locationId": "store-1",
            "channel": "SALES_CHANNEL_IN_STORE",
            "currencyCode": "EUR",
            "lineItems": [{"sku": "TEA", "name": "Tea", "quantity": 2, "unitPrice": "450"}],
        },
    )["sale"]
    assert created["status"] == "SALE_STATUS_OPEN"
    assert created["total"] == "900"

    payment = client.call(
        SALES,
        "RequestPayment",
        {
            "requestId": str(uuid.uuid4()),
            "saleId": created["id"],
            "amount": "900",
            "currencyCode": "EUR",
            "tenderTypes": ["TENDER_TYPE_CARD"],
            "callbackUrl": "https://pos.example.com/cb",
            "appId": "generic-client",
            "apiVersion": "1.0",
        },
    )["payment"]
    assert payment["status"] == "PAYMENT_STATUS_PENDING"

    recorded = client.call(
        SALES,
        "RecordPaymentResult",
        {
            "requestId": str(uuid.uuid4()),
            "saleId": created["id"],
            "paymentId": payment["id"],
            "outcome": "PAYMENT_OUTCOME_APPROVED",
            "tender": "TENDER_TYPE_CARD",
            "card": {"brand": "visa", "last4": "1111", "entryMethod": "CARD_ENTRY_METHOD_KEYED"},
            "occurredAt": "2026-01-02T03:04:05Z",
        },
    )
    assert recorded["payment"]["status"] == "PAYMENT_STATUS_APPROVED"

    sale = client.call(SALES, "GetSale", {"saleId": created["id"]})["sale"]
    assert sale["status"] == "SALE_STATUS_COMPLETED"
    assert sale["paidTotal"] == "900"
    assert "amountDue" not in sale  # zero, so omitted
    assert sale["payments"][0]["card"]["last4"] == "1111"
    assert sale["payments"][0]["occurredAt"] == "2026-01-02T03:04:05Z"
    assert "completedAt" in sale


def test_reflection_client_sees_rich_errors(channel: grpc.Channel) -> None:
    client = ReflectionClient(channel)

    with pytest.raises(grpc.RpcError) as info:
        client.call(SALES, "GetSale", {"saleId": str(uuid.uuid4())})

    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# ---- buf curl ----------------------------------------------------------------------------


def test_buf_curl_creates_a_sale(server: LedgerServer, tmp_path: Path) -> None:
    buf = Path(sys.executable).parent / "buf"
    assert buf.exists(), f"{buf} is missing: install the dev extra (buf-bin)"
    body = {
        "request_id": str(uuid.uuid4()),
        "location_id": "store-1",
        "channel": "SALES_CHANNEL_ONLINE",
        "currency_code": "JPY",
        "line_items": [{"sku": "MOCHI", "name": "Mochi", "quantity": 3, "unit_price": 150}],
    }
    env = {**os.environ, "BUF_CACHE_DIR": str(tmp_path / "buf-cache"), "HOME": str(tmp_path)}

    completed = subprocess.run(
        [
            str(buf),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--data",
            json.dumps(body),
            f"http://127.0.0.1:{server.port}/{SALES}/CreateSale",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    sale = json.loads(completed.stdout)["sale"]
    assert sale["status"] == "SALE_STATUS_OPEN"
    assert sale["channel"] == "SALES_CHANNEL_ONLINE"
    assert sale["currencyCode"] == "JPY"
    assert sale["total"] == "450"
    uuid.UUID(sale["id"])
