"""CustomerService: wire ⇄ customer commands and state."""

from __future__ import annotations

import grpc

from ledger.application import Ledger
from ledger.domain import customer as d
from ledger.domain.commands import Channel
from ledger.domain.customer import Customer
from ledger.grpc.catalog import masked_changes
from ledger.grpc.context import command_context, timestamp
from ledger.grpc.convert import CHANNELS, CHANNELS_TO_WIRE
from ledger.grpc.interceptors import current_principal
from ledger.v1 import customers_pb2 as pb
from ledger.v1 import customers_pb2_grpc, sales_pb2


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


class CustomerServicer(customers_pb2_grpc.CustomerServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

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
