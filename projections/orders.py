"""The orders view: one row per sale, and its line items.

Rows come from the Sale aggregate itself, rebuilt as of the page's last event for every
sale the page touches, so the view can never disagree with the domain's arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.domain.customer import Customer, ExternalIdClaim
from ledger.domain.inventory import StockItem
from ledger.domain.product import Product
from ledger.domain.sale import Sale
from ledger.event_log import EventLog
from projections import source
from projections.view import Event, View, copy_rows, q

# Every event of a sale changes its row.
SALE_EVENTS: tuple[type, ...] = (
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
    Sale.PaymentRefunded,
    Sale.Imported,
    Sale.Oversold,
    Sale.Completed,
    Sale.Canceled,
)

DDL = (
    """CREATE TABLE IF NOT EXISTS {schema}.orders (
        sale_id uuid PRIMARY KEY,
        merchant_id text NOT NULL,
        version bigint NOT NULL,
        position bigint NOT NULL,
        status text NOT NULL,
        channel text NOT NULL,
        location_id text NOT NULL,
        customer_id text NOT NULL,
        currency_code text NOT NULL,
        subtotal bigint NOT NULL,
        discount_total bigint NOT NULL,
        tax_total bigint NOT NULL,
        total bigint NOT NULL,
        paid_total bigint NOT NULL,
        refunded_total bigint NOT NULL,
        pending_total bigint NOT NULL,
        amount_due bigint NOT NULL,
        tip_total bigint NOT NULL,
        item_count bigint NOT NULL,
        external_order_id text NOT NULL,
        import_channel text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        completed_at timestamptz,
        canceled_at timestamptz)""",
    """CREATE INDEX IF NOT EXISTS orders_newest
        ON {schema}.orders (merchant_id, created_at DESC, sale_id DESC)""",
    """CREATE TABLE IF NOT EXISTS {schema}.order_lines (
        sale_id uuid NOT NULL,
        line_no int NOT NULL,
        line_id uuid NOT NULL,
        merchant_id text NOT NULL,
        sku text NOT NULL,
        name text NOT NULL,
        product_id text NOT NULL,
        quantity bigint NOT NULL,
        unit_price bigint NOT NULL,
        discount bigint NOT NULL,
        tax_rate_ppm bigint NOT NULL,
        gross_amount bigint NOT NULL,
        tax_amount bigint NOT NULL,
        total_amount bigint NOT NULL,
        PRIMARY KEY (sale_id, line_no))""",
    # Every payment of every sale, to find one by its id, its processor reference or the
    # request's `state`, and those that owe money back (approved after a cancel).
    """CREATE TABLE IF NOT EXISTS {schema}.payments (
        payment_id text PRIMARY KEY,
        sale_id uuid NOT NULL,
        merchant_id text NOT NULL,
        status text NOT NULL,
        amount bigint NOT NULL,
        approved_amount bigint NOT NULL,
        refunded_amount bigint NOT NULL,
        owed_amount bigint NOT NULL,
        processor_reference text NOT NULL,
        state text NOT NULL,
        requested_at timestamptz NOT NULL)""",
    # Payment deadlines came later: a generation made before gains the column (its rows
    # fill in as their sales move, or at a rebuild).
    "ALTER TABLE {schema}.payments ADD COLUMN IF NOT EXISTS expires_at timestamptz",
    # What the expiry worker looks for: pending payments by deadline.
    """CREATE INDEX IF NOT EXISTS payments_due
        ON {schema}.payments (expires_at) WHERE status = 'pending'""",
    """CREATE INDEX IF NOT EXISTS payments_by_reference
        ON {schema}.payments (merchant_id, processor_reference)""",
    # `state` may be long (4 KiB): its digest is indexed, and the query compares both.
    """CREATE INDEX IF NOT EXISTS payments_by_state
        ON {schema}.payments (merchant_id, md5(state))""",
    """CREATE INDEX IF NOT EXISTS payments_owed
        ON {schema}.payments (merchant_id, requested_at DESC, payment_id DESC)
        WHERE owed_amount > 0""",
)

UPSERT_ORDER = """
    INSERT INTO {schema}.orders VALUES (
        %(sale_id)s, %(merchant_id)s, %(version)s, %(position)s, %(status)s, %(channel)s,
        %(location_id)s, %(customer_id)s, %(currency_code)s, %(subtotal)s, %(discount_total)s,
        %(tax_total)s, %(total)s, %(paid_total)s, %(refunded_total)s, %(pending_total)s,
        %(amount_due)s, %(tip_total)s, %(item_count)s, %(external_order_id)s,
        %(import_channel)s, %(created_at)s, %(updated_at)s, %(completed_at)s, %(canceled_at)s)
    ON CONFLICT (sale_id) DO UPDATE SET
        version = excluded.version, position = excluded.position, status = excluded.status,
        customer_id = excluded.customer_id, subtotal = excluded.subtotal,
        discount_total = excluded.discount_total, tax_total = excluded.tax_total,
        total = excluded.total, paid_total = excluded.paid_total,
        refunded_total = excluded.refunded_total, pending_total = excluded.pending_total,
        amount_due = excluded.amount_due, tip_total = excluded.tip_total,
        item_count = excluded.item_count, import_channel = excluded.import_channel,
        updated_at = excluded.updated_at,
        completed_at = excluded.completed_at, canceled_at = excluded.canceled_at"""
DELETE_LINES = "DELETE FROM {schema}.order_lines WHERE sale_id = ANY(%s)"
DELETE_PAYMENTS = "DELETE FROM {schema}.payments WHERE sale_id = ANY(%s)"


def order_row(sale: Sale, position: int) -> dict[str, Any]:
    return {
        "sale_id": sale.id,
        "merchant_id": sale.merchant_id,
        "version": sale.version,
        "position": position,
        "status": sale.status.value,
        "channel": sale.channel.value,
        "location_id": sale.location_id,
        "customer_id": sale.customer_id,
        "currency_code": sale.currency_code,
        "subtotal": sale.subtotal,
        "discount_total": sale.discount_total,
        "tax_total": sale.tax_total,
        "total": sale.total,
        "paid_total": sale.paid_total,
        "refunded_total": sale.refunded_total,
        "pending_total": sale.pending_total,
        "amount_due": sale.amount_due,
        "tip_total": sale.tip_total,
        "item_count": sum(line.quantity for line in sale.line_items),
        "external_order_id": sale.external_order_id,
        "import_channel": sale.import_channel,
        "created_at": sale.placed_at or sale.created_on,  # an imported order: when placed
        "updated_at": sale.modified_on,
        "completed_at": sale.completed_at,
        "canceled_at": sale.canceled_at,
    }


def line_rows(sale: Sale) -> list[dict[str, Any]]:
    return [
        {
            "sale_id": sale.id,
            "line_no": n,
            "line_id": line.line_id,
            "merchant_id": sale.merchant_id,
            "sku": line.sku,
            "name": line.name,
            "product_id": line.product_id,
            "quantity": line.quantity,
            "unit_price": line.unit_price,
            "discount": line.discount,
            "tax_rate_ppm": line.tax_rate_ppm,
            "gross_amount": line.gross_amount,
            "tax_amount": line.tax_amount,
            "total_amount": line.total_amount,
        }
        for n, line in enumerate(sale.line_items)
    ]


def payment_rows(sale: Sale) -> list[dict[str, Any]]:
    return [
        {
            "payment_id": p.id,
            "sale_id": sale.id,
            "merchant_id": sale.merchant_id,
            "status": p.status.value,
            "amount": p.amount,
            "approved_amount": p.approved_amount,
            "refunded_amount": p.refunded_amount,
            "owed_amount": p.owed_amount,
            "processor_reference": p.processor_reference,
            "state": p.state,
            "requested_at": p.requested_at,
            "expires_at": p.expires_at,
        }
        for p in sale.payments.values()
    ]


class OrdersView(View):
    name = "orders"
    handles = SALE_EVENTS
    ignores = (StockItem, Product, Customer, ExternalIdClaim)
    ddl = DDL
    tables = ("orders", "order_lines", "payments")

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def apply(self, curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        versions = source.latest_versions(events, Sale)
        if not versions:
            return
        positions = {e.originator_id: e.position for e in events}
        sales = source.aggregates_at(self.log, versions, events)
        curs.executemany(
            q(UPSERT_ORDER, schema),
            [order_row(sale, positions[sale_id]) for sale_id, sale in sales.items()],
        )
        curs.execute(q(DELETE_LINES, schema), (list(sales),))
        lines = [row for sale in sales.values() for row in line_rows(sale)]
        copy_rows(curs, schema, "order_lines", lines)
        curs.execute(q(DELETE_PAYMENTS, schema), (list(sales),))
        payments = [row for sale in sales.values() for row in payment_rows(sale)]
        copy_rows(curs, schema, "payments", payments)


# ---- queries ---------------------------------------------------------------------------------

LIST_SALES = """
    SELECT * FROM {schema}.orders
    WHERE merchant_id = %(merchant_id)s
      AND (%(status)s::text IS NULL OR status = %(status)s)
      AND (%(channel)s::text IS NULL OR channel = %(channel)s)
      AND (%(location_id)s::text IS NULL OR location_id = %(location_id)s)
      AND (%(customer_id)s::text IS NULL OR customer_id = %(customer_id)s)
      AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
      AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
      AND (%(after_created)s::timestamptz IS NULL
           OR (created_at, sale_id) < (%(after_created)s, %(after_id)s::uuid))
    ORDER BY created_at DESC, sale_id DESC
    LIMIT %(limit)s"""
FIND_PAYMENTS = """
    SELECT * FROM {schema}.payments
    WHERE merchant_id = %(merchant_id)s
      AND (%(payment_id)s::text IS NULL OR payment_id = %(payment_id)s)
      AND (%(processor_reference)s::text IS NULL
           OR processor_reference = %(processor_reference)s)
      AND (%(state)s::text IS NULL OR (md5(state) = md5(%(state)s) AND state = %(state)s))
      AND (NOT %(owed_only)s OR owed_amount > 0)
      AND (%(after_requested)s::timestamptz IS NULL
           OR (requested_at, payment_id) < (%(after_requested)s, %(after_id)s))
    ORDER BY requested_at DESC, payment_id DESC
    LIMIT %(limit)s"""
LINES_OF = "SELECT * FROM {schema}.order_lines WHERE sale_id = ANY(%s) ORDER BY sale_id, line_no"
