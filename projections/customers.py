"""The customers view: profiles and consent, plus what each customer bought.

Profiles come from the Customer aggregate as of the page. Purchase figures are kept per
customer (order count, first and last purchase, channels) and per currency (orders, spend,
refunds), from completed sales and refunds of sales that name the customer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from ledger.domain.customer import Customer, ExternalIdClaim
from ledger.domain.inventory import StockItem
from ledger.domain.product import Product
from ledger.domain.sale import Sale
from ledger.event_log import EventLog
from projections import source
from projections.view import Event, View, q

DDL = (
    """CREATE TABLE IF NOT EXISTS {schema}.customers (
        customer_id text PRIMARY KEY,
        merchant_id text NOT NULL,
        version bigint NOT NULL,
        name text NOT NULL,
        email text NOT NULL,
        phone text NOT NULL,
        marketing_consent boolean NOT NULL,
        consent_channel text NOT NULL,
        consent_changed_at timestamptz,
        tags jsonb NOT NULL,
        external_ids jsonb NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS customers_by_name ON {schema}.customers (merchant_id, name)""",
    """CREATE TABLE IF NOT EXISTS {schema}.customer_stats (
        merchant_id text NOT NULL,
        customer_id text NOT NULL,
        order_count bigint NOT NULL,
        first_purchase_at timestamptz,
        last_purchase_at timestamptz,
        channels jsonb NOT NULL,
        PRIMARY KEY (merchant_id, customer_id))""",
    """CREATE TABLE IF NOT EXISTS {schema}.customer_spend (
        merchant_id text NOT NULL,
        customer_id text NOT NULL,
        currency_code text NOT NULL,
        orders bigint NOT NULL,
        spend bigint NOT NULL,
        refunds bigint NOT NULL,
        PRIMARY KEY (merchant_id, customer_id, currency_code))""",
)

UPSERT_CUSTOMER = """
    INSERT INTO {schema}.customers VALUES (
        %(customer_id)s, %(merchant_id)s, %(version)s, %(name)s, %(email)s, %(phone)s,
        %(marketing_consent)s, %(consent_channel)s, %(consent_changed_at)s, %(tags)s,
        %(external_ids)s, %(created_at)s, %(updated_at)s)
    ON CONFLICT (customer_id) DO UPDATE SET
        version = excluded.version, name = excluded.name, email = excluded.email,
        phone = excluded.phone, marketing_consent = excluded.marketing_consent,
        consent_channel = excluded.consent_channel,
        consent_changed_at = excluded.consent_changed_at, tags = excluded.tags,
        external_ids = excluded.external_ids, updated_at = excluded.updated_at"""
SELECT_STATS = """
    SELECT * FROM {schema}.customer_stats
    WHERE (merchant_id, customer_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"""
SELECT_SPEND = """
    SELECT * FROM {schema}.customer_spend
    WHERE (merchant_id, customer_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"""
UPSERT_STATS = """
    INSERT INTO {schema}.customer_stats VALUES (
        %(merchant_id)s, %(customer_id)s, %(order_count)s, %(first_purchase_at)s,
        %(last_purchase_at)s, %(channels)s)
    ON CONFLICT (merchant_id, customer_id) DO UPDATE SET
        order_count = excluded.order_count, first_purchase_at = excluded.first_purchase_at,
        last_purchase_at = excluded.last_purchase_at, channels = excluded.channels"""
UPSERT_SPEND = """
    INSERT INTO {schema}.customer_spend VALUES (
        %(merchant_id)s, %(customer_id)s, %(currency_code)s, %(orders)s, %(spend)s, %(refunds)s)
    ON CONFLICT (merchant_id, customer_id, currency_code) DO UPDATE SET
        orders = excluded.orders, spend = excluded.spend, refunds = excluded.refunds"""


def _profile(c: Customer) -> dict[str, Any]:
    return {
        "customer_id": str(c.id),
        "merchant_id": c.merchant_id,
        "version": c.version,
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "marketing_consent": c.marketing_consent,
        "consent_channel": c.consent_channel,
        "consent_changed_at": c.consent_changed_at,
        "tags": Jsonb(c.tags),
        "external_ids": Jsonb([e.to_event() for e in c.external_ids]),
        "created_at": c.created_on,
        "updated_at": c.modified_on,
    }


@dataclass(frozen=True)
class _SaleFacts:
    """What the purchase figures read from a sale at one of its versions."""

    merchant_id: str
    customer_id: str
    currency_code: str
    channel: str
    total: int
    placed_at: datetime | None  # imported orders: when placed in the other channel
    # Payments approved after they were canceled: they never paid the sale, so giving
    # their money back is no refund of the customer's spend.
    late_payments: frozenset[str] = frozenset()

    @classmethod
    def of(cls, sale: Sale) -> _SaleFacts:
        return cls(
            sale.merchant_id,
            sale.customer_id,
            sale.currency_code,
            sale.channel.value,
            sale.total,
            sale.placed_at,
            frozenset(p.id for p in sale.payments.values() if p.is_late),
        )


class CustomersView(View):
    name = "customers"
    handles = (
        Customer.Created,
        Customer.Updated,
        Customer.ConsentChanged,
        Sale.Completed,
        Sale.PaymentRefunded,
    )
    # Purchase figures move only when a sale completes or refunds.
    ignores = (
        Sale.Created,
        Sale.LineItemAdded,
        Sale.LineItemRemoved,
        Sale.CustomerAttached,
        Sale.PaymentRequested,
        Sale.PaymentApproved,
        Sale.PaymentApprovedAfterCancel,
        Sale.PaymentNotApproved,
        Sale.PaymentCanceled,
        Sale.PaymentExpired,
        Sale.Imported,
        Sale.Oversold,
        Sale.Canceled,
        ExternalIdClaim,
        Product,
        StockItem,
    )
    ddl = DDL
    tables = ("customers", "customer_stats", "customer_spend")

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def apply(self, curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        customers = source.aggregates_at(self.log, source.latest_versions(events, Customer))
        if customers:
            curs.executemany(q(UPSERT_CUSTOMER, schema), [_profile(c) for c in customers.values()])
        # Each sale as of each of its events here: a refund counts for the customer the sale
        # named when it was refunded (one may be attached later), wherever pages end.
        wanted: dict[Any, set[int]] = {}
        for e in events:
            if isinstance(e.event, (Sale.Event, Sale.Created)):
                wanted.setdefault(e.originator_id, set()).add(e.originator_version)
        sales = source.states_at(self.log, wanted, _SaleFacts.of)
        buyers = {(s.merchant_id, s.customer_id) for s in sales.values() if s.customer_id}
        if not buyers:
            return
        keys = ([m for m, _ in buyers], [c for _, c in buyers])
        curs.execute(q(SELECT_STATS, schema), keys)
        stats = {(r["merchant_id"], r["customer_id"]): dict(r) for r in curs}
        curs.execute(q(SELECT_SPEND, schema), keys)
        spend = {(r["merchant_id"], r["customer_id"], r["currency_code"]): dict(r) for r in curs}
        for e in events:
            sale = sales.get((e.originator_id, e.originator_version))
            if sale is None or not sale.customer_id:
                continue
            key = (sale.merchant_id, sale.customer_id)
            money = spend.setdefault(
                (*key, sale.currency_code),
                {
                    "merchant_id": sale.merchant_id,
                    "customer_id": sale.customer_id,
                    "currency_code": sale.currency_code,
                    "orders": 0,
                    "spend": 0,
                    "refunds": 0,
                },
            )
            if isinstance(e.event, Sale.Completed):
                row = stats.setdefault(
                    key,
                    {
                        "merchant_id": sale.merchant_id,
                        "customer_id": sale.customer_id,
                        "order_count": 0,
                        "first_purchase_at": None,
                        "last_purchase_at": None,
                        "channels": [],
                    },
                )
                at = sale.placed_at or e.event.timestamp  # an imported order: when placed
                row["order_count"] += 1
                row["first_purchase_at"] = min(filter(None, (row["first_purchase_at"], at)))
                row["last_purchase_at"] = max(filter(None, (row["last_purchase_at"], at)))
                row["channels"] = sorted({*row["channels"], sale.channel})
                money["orders"] += 1
                money["spend"] += sale.total
            elif (
                isinstance(e.event, Sale.PaymentRefunded)
                and e.event.payment_id not in sale.late_payments
            ):
                money["refunds"] += e.event.amount
        curs.executemany(
            q(UPSERT_STATS, schema),
            [{**r, "channels": Jsonb(r["channels"])} for r in stats.values()],
        )
        curs.executemany(q(UPSERT_SPEND, schema), list(spend.values()))


# ---- queries ---------------------------------------------------------------------------------

LIST_CUSTOMERS = """
    SELECT * FROM {schema}.customers
    WHERE merchant_id = %(merchant_id)s
      AND (%(query)s::text IS NULL OR name ILIKE %(infix)s OR lower(email) LIKE %(prefix)s)
      AND (%(tag)s::text IS NULL OR tags ? %(tag)s)
      AND (%(after_name)s::text IS NULL
           OR (name, customer_id) > (%(after_name)s, %(after_id)s))
    ORDER BY name, customer_id
    LIMIT %(limit)s"""
GET_CUSTOMER = "SELECT * FROM {schema}.customers WHERE merchant_id = %s AND customer_id = %s"
STATS_OF = """
    SELECT * FROM {schema}.customer_stats WHERE merchant_id = %s AND customer_id = ANY(%s)"""
SPEND_OF = """
    SELECT * FROM {schema}.customer_spend WHERE merchant_id = %s AND customer_id = ANY(%s)
    ORDER BY currency_code"""
