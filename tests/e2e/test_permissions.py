"""Every RPC called with a key of every role, compared with the permission table.

The expected access is written out here by hand, role by role, so a change to
ledger/permissions.py that opens or closes an RPC fails this test until it is meant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from ledger.application import Ledger
from ledger.permissions import RPC_PERMISSIONS, Role
from ledger.v1 import audit_pb2, catalog_pb2, customers_pb2, inventory_pb2, sales_pb2, webhooks_pb2
from tests.e2e import api_client as api

SALES = "/ledger.v1.SalesService/"
CATALOG = "/ledger.v1.CatalogService/"
CUSTOMERS = "/ledger.v1.CustomerService/"
STOCK = "/ledger.v1.InventoryService/"
AUDIT = "/ledger.v1.AuditService/"
WEBHOOK = "/ledger.v1.WebhookService/"

READS = {
    SALES + "GetSale",
    SALES + "ListSales",
    SALES + "GetPayment",
    SALES + "FindPayments",
    CATALOG + "GetProduct",
    CATALOG + "ListProducts",
    CUSTOMERS + "GetCustomer",
    CUSTOMERS + "ListCustomers",
    CUSTOMERS + "GetCustomerSummary",
    STOCK + "GetStockItem",
    STOCK + "ListStockLevels",
    STOCK + "GetStockLevel",
    STOCK + "ListStockMovements",
}
SELLING = {
    SALES + "CreateSale",
    SALES + "AddLineItem",
    SALES + "RemoveLineItem",
    SALES + "AttachCustomer",
    SALES + "RequestPayment",
    SALES + "RecordPaymentResult",
    SALES + "CancelPayment",
}
CUSTOMER_WRITES = {CUSTOMERS + "CreateCustomer", CUSTOMERS + "UpdateCustomer"}
CATALOG_WRITES = {
    CATALOG + "CreateProduct",
    CATALOG + "UpdateProduct",
    CATALOG + "DiscontinueProduct",
    CATALOG + "ReactivateProduct",
}
STOCK_WRITES = {
    STOCK + "ReceiveStock",
    STOCK + "AdjustStock",
    STOCK + "RecordStockCount",
    STOCK + "TransferStock",
}
AUDITING = {
    AUDIT + "GetHistory",
    AUDIT + "GetSaleAt",
    AUDIT + "StreamEvents",
    AUDIT + "VerifyLog",
}

WEBHOOKS = {
    WEBHOOK + name
    for name in (
        "CreateWebhook",
        "ListWebhooks",
        "UpdateWebhook",
        "DeleteWebhook",
        "RotateWebhookSecret",
        "RotateCallbackSecret",
        "ListDeliveries",
        "Redeliver",
    )
}
FEED = {"/ledger.v1.ChangeFeedService/StreamChanges"}

ALLOWED: dict[Role, set[str]] = {
    Role.CASHIER: READS | SELLING | CUSTOMER_WRITES,
    Role.MANAGER: READS
    | SELLING
    | CUSTOMER_WRITES
    | CATALOG_WRITES
    | STOCK_WRITES
    | WEBHOOKS
    | {SALES + "RefundPayment", SALES + "CancelSale", SALES + "ImportSales"},
    Role.AUDITOR: READS | AUDITING,
    Role.INTEGRATION: READS
    | CUSTOMER_WRITES
    | CATALOG_WRITES
    | STOCK_WRITES
    | WEBHOOKS
    | FEED
    | {SALES + "ImportSales"},
}

MODULES = [sales_pb2, catalog_pb2, customers_pb2, inventory_pb2, audit_pb2, webhooks_pb2]


def _methods() -> dict[str, MethodDescriptor]:
    methods = {}
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = method
    return methods


METHODS = _methods()


def test_every_rpc_of_every_service_is_in_the_permission_table() -> None:
    assert set(RPC_PERMISSIONS) == set(METHODS)
    assert set().union(*ALLOWED.values()) == set(METHODS)


def _call(channel: grpc.Channel, path: str, metadata: api.Metadata) -> api.RpcFailure | None:
    """Calls `path` with an empty request; the failure, or None if it was answered."""
    method = METHODS[path]
    request_class: Any = message_factory.GetMessageClass(method.input_type)
    response_class: Any = message_factory.GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_serializer": request_class.SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    try:
        if method.client_streaming:
            channel.stream_unary(path, **kwargs)(
                iter([request_class()]), timeout=api.TIMEOUT, metadata=metadata
            )
        elif method.server_streaming:
            responses: Any = channel.unary_stream(path, **kwargs)(
                request_class(), timeout=2.0, metadata=metadata
            )
            for _ in responses:
                break
        else:
            channel.unary_unary(path, **kwargs)(
                request_class(), timeout=api.TIMEOUT, metadata=metadata
            )
    except grpc.RpcError as error:
        if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return None  # a stream that was let in and is waiting for events
        return api.failure(error)
    return None


@pytest.mark.parametrize("role", list(Role))
def test_every_rpc_with_every_role(ledger: Ledger, channel: grpc.Channel, role: Role) -> None:
    _, key = ledger.api_keys.create("merchant-a", f"app-{role.value}", role)
    metadata = api.bearer(key)

    for path in METHODS:
        failure = _call(channel, path, metadata)
        denied = failure is not None and failure.code == grpc.StatusCode.PERMISSION_DENIED
        if path in ALLOWED[role]:
            assert not denied, (role, path, failure)
            # An empty request is let in, then refused for what it lacks (or answered).
            assert failure is None or failure.code != grpc.StatusCode.INTERNAL, (path, failure)
        else:
            assert failure is not None, (role, path)
            assert denied, (role, path, failure)
            assert failure.reason == "PERMISSION_REQUIRED"
            assert failure.domain == "posledger"
            assert failure.metadata == {
                "permission": RPC_PERMISSIONS[path].value,
                "method": path,
            }


def test_a_key_with_several_roles_may_do_what_any_of_them_may(
    ledger: Ledger, channel: grpc.Channel
) -> None:
    _, key = ledger.api_keys.create("merchant-a", "till", [Role.CASHIER, Role.AUDITOR])
    allowed = ALLOWED[Role.CASHIER] | ALLOWED[Role.AUDITOR]

    for path in METHODS:
        failure = _call(channel, path, api.bearer(key))
        denied = failure is not None and failure.code == grpc.StatusCode.PERMISSION_DENIED
        assert denied == (path not in allowed), (path, failure)


def test_what_the_issue_found_is_refused(ledger: Ledger, stubs: api.Stubs) -> None:
    """Auditor and cashier keys can no longer sell, refund, reprice or write stock off."""
    _, manager = ledger.api_keys.create("merchant-a", "office", Role.MANAGER)
    _, cashier = ledger.api_keys.create("merchant-a", "till", Role.CASHIER)
    _, auditor = ledger.api_keys.create("merchant-a", "books", Role.AUDITOR)
    product = api.create_product(stubs.catalog, metadata=api.bearer(manager))
    sale, payment = api.paid_sale(stubs.sales, metadata=api.bearer(cashier))

    attempts: dict[str, Callable[[api.Metadata], object]] = {
        "CreateSale": lambda key: api.create_sale(stubs.sales, metadata=key),
        "RefundPayment": lambda key: api.refund(
            stubs.sales, sale.id, payment.id, sale.total, metadata=key
        ),
        "UpdateProduct": lambda key: api.update_product(
            stubs.catalog, product.id, {"price": 1}, metadata=key
        ),
        "AdjustStock": lambda key: api.adjust_stock(
            stubs.inventory,
            product.id,
            -50,
            metadata=key,
            reason=inventory_pb2.ADJUSTMENT_REASON_THEFT,
        ),
    }
    for name, attempt in attempts.items():
        for key in [auditor] + ([cashier] if name != "CreateSale" else []):
            failure = api.expect_failure(lambda: attempt(api.bearer(key)))  # noqa: B023
            assert failure.code == grpc.StatusCode.PERMISSION_DENIED, (name, failure)
    assert api.get_sale(stubs.sales, sale.id, metadata=api.bearer(auditor)).refunded_total == 0
    price = api.get_product(
        stubs.catalog, product_id=product.id, metadata=api.bearer(auditor)
    ).price
    assert price == product.price
