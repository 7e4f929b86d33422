"""CustomerService: wire ⇄ customer commands and state."""

from __future__ import annotations

from typing import Any

import grpc

from ledger.application import Ledger
from ledger.domain import customer as d
from ledger.domain.commands import Channel
from ledger.domain.customer import Customer
from ledger.domain.errors import NotFound, NotYetVisible
from ledger.grpc.catalog import masked_changes
from ledger.grpc.context import command_context, timestamp
from ledger.grpc.convert import CHANNELS, CHANNELS_TO_WIRE
from ledger.grpc.interceptors import current_principal
from ledger.v1 import customers_pb2 as pb
from ledger.v1 import customers_pb2_grpc, sales_pb2
from projections.queries import ReadModels


def _external_ids(values: object) -> tuple[d.ExternalId, ...]:
    return tuple(
        d.ExternalId(channel=e.channel, external_id=e.external_id)
        for e in values  # type: ignore[attr-defined]
    )


def customer_message(customer: Customer) -> pb.Customer:
    return pb.Customer(
        id=str(customer.id),
        version=customer.version,
        name=customer.name,
        email=customer.email,
        phone=customer.phone,
        marketing_consent=customer.marketing_consent,
        tags=customer.tags,
        external_ids=[
            pb.ExternalId(channel=e.channel, external_id=e.external_id)
            for e in customer.external_ids
        ],
        created_at=timestamp(customer.created_on),
        updated_at=timestamp(customer.modified_on),
        consent_changed_at=timestamp(customer.consent_changed_at),
        consent_channel=CHANNELS_TO_WIRE.get(
            Channel(customer.consent_channel), sales_pb2.SALES_CHANNEL_UNSPECIFIED
        )
        if customer.consent_channel
        else sales_pb2.SALES_CHANNEL_UNSPECIFIED,
    )


def summary_message(row: dict[str, Any], related: list[dict[str, Any]]) -> pb.CustomerSummary:
    """A customer as the customers view holds it, with what they bought."""
    customer = pb.Customer(
        id=row["customer_id"],
        version=row["version"],
        name=row["name"],
        email=row["email"],
        phone=row["phone"],
        marketing_consent=row["marketing_consent"],
        tags=row["tags"],
        external_ids=[pb.ExternalId(**e) for e in row["external_ids"]],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
        consent_changed_at=timestamp(row["consent_changed_at"]),
        consent_channel=_channel(row["consent_channel"]),
    )
    stats = next((r for r in related if r.get("stats")), None)
    return pb.CustomerSummary(
        customer=customer,
        order_count=stats["order_count"] if stats else 0,
        first_purchase_at=timestamp(stats["first_purchase_at"]) if stats else None,
        last_purchase_at=timestamp(stats["last_purchase_at"]) if stats else None,
        channels=[_channel(c) for c in stats["channels"]] if stats else [],
        spend=[
            pb.CurrencySpend(
                currency_code=r["currency_code"],
                orders=r["orders"],
                spend=r["spend"],
                refunds=r["refunds"],
                average_basket=r["spend"] // r["orders"] if r["orders"] else 0,
            )
            for r in related
            if not r.get("stats")
        ],
    )


def _channel(value: str) -> sales_pb2.SalesChannel.ValueType:
    if not value:
        return sales_pb2.SALES_CHANNEL_UNSPECIFIED
    return CHANNELS_TO_WIRE[Channel(value)]


class CustomerServicer(customers_pb2_grpc.CustomerServiceServicer):
    def __init__(self, ledger: Ledger, reads: ReadModels) -> None:
        self.ledger = ledger
        self.reads = reads

    def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: grpc.ServicerContext
    ) -> pb.CreateCustomerResponse:
        cmd = d.CreateCustomer(
            name=request.name,
            email=request.email,
            phone=request.phone,
            marketing_consent=request.marketing_consent,
            consent_channel=CHANNELS.get(request.consent_channel),
            tags=tuple(request.tags),
            external_ids=_external_ids(request.external_ids),
        )
        outcome = self.ledger.create_customer(command_context(request), cmd)
        return pb.CreateCustomerResponse(
            customer=customer_message(outcome.aggregate), position=outcome.position
        )

    def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: grpc.ServicerContext
    ) -> pb.UpdateCustomerResponse:
        changes = masked_changes(request.customer, list(request.update_mask.paths))
        converted = tuple(
            (name, tuple(value) if name == "tags" else _external_ids(value))
            if name in ("tags", "external_ids")
            else (name, value)
            for name, value in changes
        )
        cmd = d.UpdateCustomer(
            customer_id=request.customer_id,
            changes=converted,
            consent_channel=CHANNELS.get(request.consent_channel),
        )
        outcome = self.ledger.update_customer(command_context(request), cmd)
        return pb.UpdateCustomerResponse(
            customer=customer_message(outcome.aggregate), position=outcome.position
        )

    def GetCustomer(
        self, request: pb.GetCustomerRequest, context: grpc.ServicerContext
    ) -> pb.GetCustomerResponse:
        customer = self.ledger.get_customer(current_principal().merchant_id, request.customer_id)
        return pb.GetCustomerResponse(customer=customer_message(customer))

    def ListCustomers(
        self, request: pb.ListCustomersRequest, context: grpc.ServicerContext
    ) -> pb.ListCustomersResponse:
        page = self.reads.list_customers(
            current_principal().merchant_id,
            query=request.query,
            tag=request.tag,
            page_size=request.page_size,
            page_token=request.page_token,
            min_position=request.min_position,
        )
        return pb.ListCustomersResponse(
            customers=[
                summary_message(row, page.related.get(row["customer_id"], [])) for row in page.rows
            ],
            next_page_token=page.next_page_token,
            position=page.position,
        )

    def GetCustomerSummary(
        self, request: pb.GetCustomerSummaryRequest, context: grpc.ServicerContext
    ) -> pb.GetCustomerSummaryResponse:
        merchant_id = current_principal().merchant_id
        customer = self.ledger.get_customer(merchant_id, request.customer_id)  # or NOT_FOUND
        try:
            page = self.reads.customer_summary(
                merchant_id, str(customer.id), min_position=request.min_position
            )
        except NotFound:
            raise NotYetVisible(
                f"customer {customer.id} exists but the customers view has not caught up; "
                "retry, or pass the position of your last write as min_position"
            ) from None
        row = page.rows[0]
        return pb.GetCustomerSummaryResponse(
            summary=summary_message(row, page.related.get(row["customer_id"], [])),
            position=page.position,
        )
