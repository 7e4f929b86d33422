"""A tiny client for the end-to-end tests: build requests with sensible defaults, call the
server, and read rich error details off a failed call.

Every builder takes keyword overrides for any request field and gives each request a fresh
`request_id` (uuid4) unless one is passed. Every call has a deadline, so nothing can hang.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status

from ledger.v1 import catalog_pb2 as catalog_pb
from ledger.v1 import customers_pb2 as customers_pb
from ledger.v1 import inventory_pb2 as inventory_pb
from ledger.v1 import sales_pb2 as pb
from ledger.v1.catalog_pb2_grpc import CatalogServiceStub
from ledger.v1.customers_pb2_grpc import CustomerServiceStub
from ledger.v1.inventory_pb2_grpc import InventoryServiceStub
from ledger.v1.sales_pb2_grpc import SalesServiceStub

TIMEOUT = 10.0

Metadata = tuple[tuple[str, str], ...]


def new_request_id() -> str:
    return str(uuid.uuid4())


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


# ---- request builders --------------------------------------------------------------------


def line_item(**overrides: Any) -> pb.LineItemInput:
    fields: dict[str, Any] = {"sku": "SKU-1", "name": "Coffee", "quantity": 1, "unit_price": 1000}
    fields.update(overrides)
    return pb.LineItemInput(**fields)


def create_sale_request(**overrides: Any) -> pb.CreateSaleRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "location_id": "store-1",
        "channel": pb.SALES_CHANNEL_IN_STORE,
        "currency_code": "USD",
        "line_items": [line_item()],
    }
    fields.update(overrides)
    return pb.CreateSaleRequest(**fields)


def add_line_item_request(sale_id: str, **overrides: Any) -> pb.AddLineItemRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "sale_id": sale_id,
        "line_item": line_item(sku="SKU-2", name="Bagel", unit_price=350),
    }
    fields.update(overrides)
    return pb.AddLineItemRequest(**fields)


def remove_line_item_request(
    sale_id: str, line_id: str, **overrides: Any
) -> pb.RemoveLineItemRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "sale_id": sale_id,
        "line_id": line_id,
    }
    fields.update(overrides)
    return pb.RemoveLineItemRequest(**fields)


def attach_customer_request(
    sale_id: str, customer_id: str, **overrides: Any
) -> pb.AttachCustomerRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "sale_id": sale_id,
        "customer_id": customer_id,
    }
    fields.update(overrides)
    return pb.AttachCustomerRequest(**fields)


def request_payment_request(
    sale_id: str, amount: int, **overrides: Any
) -> pb.RequestPaymentRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "sale_id": sale_id,
        "amount": amount,
        "currency_code": "USD",
        "tender_types": [pb.TENDER_TYPE_CARD, pb.TENDER_TYPE_CASH],
        "callback_url": "https://pos.example.com/callback",
        "app_id": "",  # the caller's key's app (in development mode: "dev")
        "api_version": "1.0",
    }
    fields.update(overrides)
    return pb.RequestPaymentRequest(**fields)


def card(**overrides: Any) -> pb.CardDetails:
    fields: dict[str, Any] = {
        "brand": "visa",
        "last4": "4242",
        "entry_method": pb.CARD_ENTRY_METHOD_DIPPED,
    }
    fields.update(overrides)
    return pb.CardDetails(**fields)


def record_result_request(
    sale_id: str, payment_id: str, **overrides: Any
) -> pb.RecordPaymentResultRequest:
    """An approved card result unless overridden."""
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "sale_id": sale_id,
        "payment_id": payment_id,
        "outcome": pb.PAYMENT_OUTCOME_APPROVED,
        "tender": pb.TENDER_TYPE_CARD,
        "card": card(),
        "auth_code": "A1B2C3",
        "processor_reference": "proc-1",
    }
    fields.update(overrides)
    return pb.RecordPaymentResultRequest(**fields)


def cancel_payment_request(
    sale_id: str, payment_id: str, **overrides: Any
) -> pb.CancelPaymentRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "sale_id": sale_id,
        "payment_id": payment_id,
        "reason": "customer walked away",
    }
    fields.update(overrides)
    return pb.CancelPaymentRequest(**fields)


def refund_request(
    sale_id: str, payment_id: str, amount: int, **overrides: Any
) -> pb.RefundPaymentRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "sale_id": sale_id,
        "payment_id": payment_id,
        "amount": amount,
        "reason": "returned",
    }
    fields.update(overrides)
    return pb.RefundPaymentRequest(**fields)


def cancel_sale_request(sale_id: str, **overrides: Any) -> pb.CancelSaleRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "sale_id": sale_id,
        "reason": "customer changed their mind",
    }
    fields.update(overrides)
    return pb.CancelSaleRequest(**fields)


# ---- calls -------------------------------------------------------------------------------


def create_sale(
    stub: SalesServiceStub, *, metadata: Metadata | None = None, **overrides: Any
) -> pb.Sale:
    request = create_sale_request(**overrides)
    return stub.CreateSale(request, timeout=TIMEOUT, metadata=metadata).sale


def add_line_item(
    stub: SalesServiceStub, sale_id: str, *, metadata: Metadata | None = None, **overrides: Any
) -> pb.AddLineItemResponse:
    request = add_line_item_request(sale_id, **overrides)
    return stub.AddLineItem(request, timeout=TIMEOUT, metadata=metadata)


def remove_line_item(
    stub: SalesServiceStub,
    sale_id: str,
    line_id: str,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> pb.Sale:
    request = remove_line_item_request(sale_id, line_id, **overrides)
    return stub.RemoveLineItem(request, timeout=TIMEOUT, metadata=metadata).sale


def attach_customer(
    stub: SalesServiceStub,
    sale_id: str,
    customer_id: str,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> pb.Sale:
    request = attach_customer_request(sale_id, customer_id, **overrides)
    return stub.AttachCustomer(request, timeout=TIMEOUT, metadata=metadata).sale


def request_payment(
    stub: SalesServiceStub,
    sale_id: str,
    amount: int,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> pb.RequestPaymentResponse:
    request = request_payment_request(sale_id, amount, **overrides)
    return stub.RequestPayment(request, timeout=TIMEOUT, metadata=metadata)


def record_result(
    stub: SalesServiceStub,
    sale_id: str,
    payment_id: str,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> pb.RecordPaymentResultResponse:
    request = record_result_request(sale_id, payment_id, **overrides)
    return stub.RecordPaymentResult(request, timeout=TIMEOUT, metadata=metadata)


def cancel_payment(
    stub: SalesServiceStub,
    sale_id: str,
    payment_id: str,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> pb.CancelPaymentResponse:
    request = cancel_payment_request(sale_id, payment_id, **overrides)
    return stub.CancelPayment(request, timeout=TIMEOUT, metadata=metadata)


def refund(
    stub: SalesServiceStub,
    sale_id: str,
    payment_id: str,
    amount: int,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> pb.RefundPaymentResponse:
    request = refund_request(sale_id, payment_id, amount, **overrides)
    return stub.RefundPayment(request, timeout=TIMEOUT, metadata=metadata)


def cancel_sale(
    stub: SalesServiceStub, sale_id: str, *, metadata: Metadata | None = None, **overrides: Any
) -> pb.Sale:
    request = cancel_sale_request(sale_id, **overrides)
    return stub.CancelSale(request, timeout=TIMEOUT, metadata=metadata).sale


def get_sale(stub: SalesServiceStub, sale_id: str, *, metadata: Metadata | None = None) -> pb.Sale:
    request = pb.GetSaleRequest(sale_id=sale_id)
    return stub.GetSale(request, timeout=TIMEOUT, metadata=metadata).sale


def paid_sale(
    stub: SalesServiceStub, *, metadata: Metadata | None = None, **overrides: Any
) -> tuple[pb.Sale, pb.Payment]:
    """A sale completed by one approved card payment of its whole total."""
    sale = create_sale(stub, metadata=metadata, **overrides)
    payment = request_payment(stub, sale.id, sale.total, metadata=metadata).payment
    result = record_result(stub, sale.id, payment.id, metadata=metadata)
    assert result.sale.status == pb.SALE_STATUS_COMPLETED
    return result.sale, result.payment


# ---- errors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    field: str
    description: str
    reason: str


@dataclass(frozen=True)
class RpcFailure:
    """What a failed call told the client: status code, message and rich details."""

    code: grpc.StatusCode
    message: str
    reason: str | None = None
    domain: str | None = None
    violations: list[Violation] = field(default_factory=list)
    retry_delay_ms: int | None = None  # from a RetryInfo detail
    metadata: dict[str, str] = field(default_factory=dict)  # of the ErrorInfo

    @property
    def fields(self) -> set[str]:
        return {v.field for v in self.violations}

    def violation(self, field_path: str) -> Violation:
        matches = [v for v in self.violations if v.field == field_path]
        assert len(matches) == 1, f"expected one violation of {field_path}: {self.violations}"
        return matches[0]


def failure(error: grpc.RpcError) -> RpcFailure:
    """Decodes `google.rpc.Status` details (ErrorInfo, BadRequest) from a failed call."""
    assert isinstance(error, grpc.Call), "a failed blocking call is also its grpc.Call"
    status = rpc_status.from_call(error)
    if status is None:
        return RpcFailure(code=error.code(), message=error.details() or "")
    assert status.code == error.code().value[0], "status detail and call code disagree"
    reason: str | None = None
    domain: str | None = None
    violations: list[Violation] = []
    retry_delay_ms: int | None = None
    info_metadata: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay_ms = retry.retry_delay.ToMilliseconds()
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert reason is None, "more than one ErrorInfo"
            reason, domain = str(info.reason), str(info.domain)
            info_metadata = {str(k): str(v) for k, v in info.metadata.items()}
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                Violation(str(v.field), str(v.description), str(v.reason))
                for v in bad_request.field_violations
            )
    return RpcFailure(
        code=error.code(),
        message=str(status.message),
        reason=reason,
        domain=domain,
        violations=violations,
        retry_delay_ms=retry_delay_ms,
        metadata=info_metadata,
    )


def expect_failure(call: Callable[[], object]) -> RpcFailure:
    """Runs `call`, which must fail with a gRPC error, and returns what the error says."""
    try:
        call()
    except grpc.RpcError as error:
        return failure(error)
    raise AssertionError("the call succeeded; it was expected to fail")


# ---- catalog, customers, inventory, imports ----------------------------------------------


@dataclass(frozen=True)
class Stubs:
    """One stub per ledger service, all on one channel."""

    sales: SalesServiceStub
    catalog: CatalogServiceStub
    customers: CustomerServiceStub
    inventory: InventoryServiceStub

    @classmethod
    def on(cls, channel: grpc.Channel) -> Stubs:
        return cls(
            sales=SalesServiceStub(channel),
            catalog=CatalogServiceStub(channel),
            customers=CustomerServiceStub(channel),
            inventory=InventoryServiceStub(channel),
        )


def create_product_request(**overrides: Any) -> catalog_pb.CreateProductRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "sku": "COF-250",
        "name": "Coffee beans 250 g",
        "price": 1250,
        "currency_code": "USD",
        "tax_rate_ppm": 88750,
        "barcode": "4006381333931",
        "category": "coffee",
    }
    fields.update(overrides)
    return catalog_pb.CreateProductRequest(**fields)


def create_product(
    stub: CatalogServiceStub, *, metadata: Metadata | None = None, **overrides: Any
) -> catalog_pb.Product:
    request = create_product_request(**overrides)
    return stub.CreateProduct(request, timeout=TIMEOUT, metadata=metadata).product


def update_product_request(
    product_id: str, changes: dict[str, Any], paths: list[str] | None = None, **overrides: Any
) -> catalog_pb.UpdateProductRequest:
    """Sets `changes` on `product` and masks exactly their names unless `paths` is given."""
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "product_id": product_id,
        "product": catalog_pb.ProductFields(**changes),
        "update_mask": FieldMask(paths=list(changes) if paths is None else paths),
    }
    fields.update(overrides)
    return catalog_pb.UpdateProductRequest(**fields)


def update_product(
    stub: CatalogServiceStub,
    product_id: str,
    changes: dict[str, Any],
    paths: list[str] | None = None,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> catalog_pb.Product:
    request = update_product_request(product_id, changes, paths, **overrides)
    return stub.UpdateProduct(request, timeout=TIMEOUT, metadata=metadata).product


def discontinue_product_request(
    product_id: str, **overrides: Any
) -> catalog_pb.DiscontinueProductRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "product_id": product_id,
        "reason": "supplier stopped making it",
    }
    fields.update(overrides)
    return catalog_pb.DiscontinueProductRequest(**fields)


def discontinue_product(
    stub: CatalogServiceStub, product_id: str, *, metadata: Metadata | None = None, **overrides: Any
) -> catalog_pb.Product:
    request = discontinue_product_request(product_id, **overrides)
    return stub.DiscontinueProduct(request, timeout=TIMEOUT, metadata=metadata).product


def get_product(
    stub: CatalogServiceStub,
    *,
    product_id: str | None = None,
    sku: str | None = None,
    metadata: Metadata | None = None,
) -> catalog_pb.Product:
    """By id or by sku (whichever is given; neither sends an empty lookup)."""
    request = catalog_pb.GetProductRequest()
    if product_id is not None:
        request.product_id = product_id
    if sku is not None:
        request.sku = sku
    return stub.GetProduct(request, timeout=TIMEOUT, metadata=metadata).product


def external_id(channel: str, value: str) -> customers_pb.ExternalId:
    return customers_pb.ExternalId(channel=channel, external_id=value)


def create_customer_request(**overrides: Any) -> customers_pb.CreateCustomerRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+4915112345678",
    }
    fields.update(overrides)
    return customers_pb.CreateCustomerRequest(**fields)


def create_customer(
    stub: CustomerServiceStub, *, metadata: Metadata | None = None, **overrides: Any
) -> customers_pb.Customer:
    request = create_customer_request(**overrides)
    return stub.CreateCustomer(request, timeout=TIMEOUT, metadata=metadata).customer


def update_customer_request(
    customer_id: str, changes: dict[str, Any], paths: list[str] | None = None, **overrides: Any
) -> customers_pb.UpdateCustomerRequest:
    """Sets `changes` on `customer` and masks exactly their names unless `paths` is given."""
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "customer_id": customer_id,
        "customer": customers_pb.CustomerFields(**changes),
        "update_mask": FieldMask(paths=list(changes) if paths is None else paths),
    }
    fields.update(overrides)
    return customers_pb.UpdateCustomerRequest(**fields)


def update_customer(
    stub: CustomerServiceStub,
    customer_id: str,
    changes: dict[str, Any],
    paths: list[str] | None = None,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> customers_pb.Customer:
    request = update_customer_request(customer_id, changes, paths, **overrides)
    return stub.UpdateCustomer(request, timeout=TIMEOUT, metadata=metadata).customer


def get_customer(
    stub: CustomerServiceStub, customer_id: str, *, metadata: Metadata | None = None
) -> customers_pb.Customer:
    request = customers_pb.GetCustomerRequest(customer_id=customer_id)
    return stub.GetCustomer(request, timeout=TIMEOUT, metadata=metadata).customer


def receive_stock_request(
    product_id: str, quantity: int, **overrides: Any
) -> inventory_pb.ReceiveStockRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "product_id": product_id,
        "location_id": "store-1",
        "quantity": quantity,
        "reference": "PO-1001",
    }
    fields.update(overrides)
    return inventory_pb.ReceiveStockRequest(**fields)


def receive_stock(
    stub: InventoryServiceStub,
    product_id: str,
    quantity: int,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> inventory_pb.StockItem:
    request = receive_stock_request(product_id, quantity, **overrides)
    return stub.ReceiveStock(request, timeout=TIMEOUT, metadata=metadata).stock_item


def adjust_stock_request(
    product_id: str, quantity: int, **overrides: Any
) -> inventory_pb.AdjustStockRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "product_id": product_id,
        "location_id": "store-1",
        "quantity": quantity,
        "reason": inventory_pb.ADJUSTMENT_REASON_DAMAGE,
    }
    fields.update(overrides)
    return inventory_pb.AdjustStockRequest(**fields)


def adjust_stock(
    stub: InventoryServiceStub,
    product_id: str,
    quantity: int,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> inventory_pb.StockItem:
    request = adjust_stock_request(product_id, quantity, **overrides)
    return stub.AdjustStock(request, timeout=TIMEOUT, metadata=metadata).stock_item


def record_stock_count_request(
    product_id: str, counted_quantity: int, **overrides: Any
) -> inventory_pb.RecordStockCountRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "product_id": product_id,
        "location_id": "store-1",
        "counted_quantity": counted_quantity,
    }
    fields.update(overrides)
    return inventory_pb.RecordStockCountRequest(**fields)


def record_stock_count(
    stub: InventoryServiceStub,
    product_id: str,
    counted_quantity: int,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> inventory_pb.StockItem:
    request = record_stock_count_request(product_id, counted_quantity, **overrides)
    return stub.RecordStockCount(request, timeout=TIMEOUT, metadata=metadata).stock_item


def transfer_stock_request(
    product_id: str, quantity: int, **overrides: Any
) -> inventory_pb.TransferStockRequest:
    fields: dict[str, Any] = {
        "request_id": new_request_id(),
        "product_id": product_id,
        "from_location_id": "store-1",
        "to_location_id": "store-2",
        "quantity": quantity,
        "reference": "TR-1",
    }
    fields.update(overrides)
    return inventory_pb.TransferStockRequest(**fields)


def transfer_stock(
    stub: InventoryServiceStub,
    product_id: str,
    quantity: int,
    *,
    metadata: Metadata | None = None,
    **overrides: Any,
) -> inventory_pb.TransferStockResponse:
    request = transfer_stock_request(product_id, quantity, **overrides)
    return stub.TransferStock(request, timeout=TIMEOUT, metadata=metadata)


def get_stock_item(
    stub: InventoryServiceStub,
    product_id: str,
    location_id: str = "store-1",
    *,
    metadata: Metadata | None = None,
) -> inventory_pb.StockItem:
    request = inventory_pb.GetStockItemRequest(product_id=product_id, location_id=location_id)
    return stub.GetStockItem(request, timeout=TIMEOUT, metadata=metadata).stock_item


def imported_order(channel: str, external_order_id: str, **overrides: Any) -> pb.ImportedOrder:
    """A finished web order: one open-item line (1000 + 8.875% tax = 1089) paid by card."""
    fields: dict[str, Any] = {
        "channel": channel,
        "external_order_id": external_order_id,
        "sales_channel": pb.SALES_CHANNEL_ONLINE,
        "location_id": "web",
        "currency_code": "USD",
        "line_items": [line_item(tax_rate_ppm=88750)],
        "payments": [
            pb.ImportedPayment(
                tender=pb.TENDER_TYPE_CARD,
                amount=1089,
                card=card(entry_method=pb.CARD_ENTRY_METHOD_ON_FILE),
                auth_code="OK1",
                processor_reference=f"{channel}-{external_order_id}",
            )
        ],
    }
    fields.update(overrides)
    return pb.ImportedOrder(**fields)


def import_sales(
    stub: SalesServiceStub,
    batches: list[list[pb.ImportedOrder]],
    *,
    metadata: Metadata | None = None,
) -> pb.ImportSalesResponse:
    """Streams one ImportSalesRequest per batch and returns the single response."""
    requests = (pb.ImportSalesRequest(orders=batch) for batch in batches)
    return stub.ImportSales(requests, timeout=TIMEOUT * 6, metadata=metadata)
