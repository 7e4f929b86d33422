"""CustomerService: requests → customer commands, customers and their summaries → messages."""

from __future__ import annotations

from typing import Any

from ledger.domain import customer as d
from ledger.domain.customer import Customer
from ledger.grpc.context import timestamp
from ledger.grpc.convert.shared import CHANNELS, channel_to_wire, masked_changes
from ledger.v1 import customers_pb2 as pb


def _external_ids(values: object) -> tuple[d.ExternalId, ...]:
    return tuple(
        d.ExternalId(channel=e.channel, external_id=e.external_id)
        for e in values  # type: ignore[attr-defined]
    )


def create_customer(req: pb.CreateCustomerRequest) -> d.CreateCustomer:
    return d.CreateCustomer(
        name=req.name,
        email=req.email,
        phone=req.phone,
        marketing_consent=req.marketing_consent,
        consent_channel=CHANNELS.get(req.consent_channel),
        tags=tuple(req.tags),
        external_ids=_external_ids(req.external_ids),
    )


def update_customer(req: pb.UpdateCustomerRequest) -> d.UpdateCustomer:
    changes = masked_changes(req.customer, list(req.update_mask.paths))
    converted = tuple(
        (name, tuple(value) if name == "tags" else _external_ids(value))
        if name in ("tags", "external_ids")
        else (name, value)
        for name, value in changes
    )
    return d.UpdateCustomer(
        customer_id=req.customer_id,
        changes=converted,
        consent_channel=CHANNELS.get(req.consent_channel),
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
        consent_channel=channel_to_wire(customer.consent_channel),
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
        consent_channel=channel_to_wire(row["consent_channel"]),
    )
    stats = next((r for r in related if r.get("stats")), None)
    return pb.CustomerSummary(
        customer=customer,
        order_count=stats["order_count"] if stats else 0,
        first_purchase_at=timestamp(stats["first_purchase_at"]) if stats else None,
        last_purchase_at=timestamp(stats["last_purchase_at"]) if stats else None,
        channels=[channel_to_wire(c) for c in stats["channels"]] if stats else [],
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
