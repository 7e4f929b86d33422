"""SalesService: requests → sale commands, sales and payments → messages, listing filters."""

from __future__ import annotations

from typing import Any

from ledger.application import ImportResult, ImportStatus
from ledger.domain import commands as c
from ledger.domain.line_items import LineItem
from ledger.domain.payments import Payment, PaymentStatus, Refund
from ledger.domain.sale import Sale
from ledger.domain.sale_state import SaleStatus
from ledger.domain.validation import Checks
from ledger.grpc.card_data import check_request
from ledger.grpc.context import timestamp
from ledger.grpc.convert.shared import (
    CHANNELS,
    CHANNELS_TO_WIRE,
    canonical_id,
    enum_filter,
    timestamp_field,
)
from ledger.v1 import sales_pb2 as pb
from projections.queries import SaleFilters

TENDERS = {
    pb.TENDER_TYPE_CARD: c.Tender.CARD,
    pb.TENDER_TYPE_CASH: c.Tender.CASH,
    pb.TENDER_TYPE_GIFT_CARD: c.Tender.GIFT_CARD,
    pb.TENDER_TYPE_CARD_ON_FILE: c.Tender.CARD_ON_FILE,
    pb.TENDER_TYPE_OTHER: c.Tender.OTHER,
}
OUTCOMES = {
    pb.PAYMENT_OUTCOME_APPROVED: c.Outcome.APPROVED,
    pb.PAYMENT_OUTCOME_DECLINED: c.Outcome.DECLINED,
    pb.PAYMENT_OUTCOME_CANCELED: c.Outcome.CANCELED,
    pb.PAYMENT_OUTCOME_FAILED: c.Outcome.FAILED,
}
ENTRY_METHODS = {
    pb.CARD_ENTRY_METHOD_SWIPED: c.EntryMethod.SWIPED,
    pb.CARD_ENTRY_METHOD_DIPPED: c.EntryMethod.DIPPED,
    pb.CARD_ENTRY_METHOD_CONTACTLESS: c.EntryMethod.CONTACTLESS,
    pb.CARD_ENTRY_METHOD_KEYED: c.EntryMethod.KEYED,
    pb.CARD_ENTRY_METHOD_ON_FILE: c.EntryMethod.ON_FILE,
}
SALE_STATUSES = {
    SaleStatus.OPEN: pb.SALE_STATUS_OPEN,
    SaleStatus.COMPLETED: pb.SALE_STATUS_COMPLETED,
    SaleStatus.CANCELED: pb.SALE_STATUS_CANCELED,
    SaleStatus.REFUNDED: pb.SALE_STATUS_REFUNDED,
}
PAYMENT_STATUSES = {
    PaymentStatus.PENDING: pb.PAYMENT_STATUS_PENDING,
    PaymentStatus.APPROVED: pb.PAYMENT_STATUS_APPROVED,
    PaymentStatus.DECLINED: pb.PAYMENT_STATUS_DECLINED,
    PaymentStatus.CANCELED: pb.PAYMENT_STATUS_CANCELED,
    PaymentStatus.FAILED: pb.PAYMENT_STATUS_FAILED,
    PaymentStatus.APPROVED_AFTER_CANCEL: pb.PAYMENT_STATUS_APPROVED_AFTER_CANCEL,
    PaymentStatus.EXPIRED: pb.PAYMENT_STATUS_EXPIRED,
}
IMPORT_STATUSES = {
    ImportStatus.IMPORTED: pb.IMPORT_STATUS_IMPORTED,
    ImportStatus.DUPLICATE: pb.IMPORT_STATUS_DUPLICATE,
    ImportStatus.CONFLICT: pb.IMPORT_STATUS_CONFLICT,
    ImportStatus.REJECTED: pb.IMPORT_STATUS_REJECTED,
}
TENDERS_TO_WIRE = {v.value: k for k, v in TENDERS.items()}
ENTRY_METHODS_TO_WIRE = {v.value: k for k, v in ENTRY_METHODS.items()}


# ---- requests → commands -----------------------------------------------------------------


def line_item(item: pb.LineItemInput) -> c.LineItemInput:
    return c.LineItemInput(
        sku=item.sku,
        name=item.name,
        quantity=item.quantity,
        unit_price=item.unit_price if item.HasField("unit_price") else None,
        discount=item.discount,
        tax_rate_ppm=item.tax_rate_ppm if item.HasField("tax_rate_ppm") else None,
    )


def create_sale(req: pb.CreateSaleRequest) -> c.CreateSale:
    return c.CreateSale(
        location_id=req.location_id,
        channel=CHANNELS.get(req.channel),
        currency_code=req.currency_code,
        line_items=tuple(line_item(item) for item in req.line_items),
        customer_id=req.customer_id,
        external_order_id=req.external_order_id,
        note=req.note,
    )


def add_line_item(req: pb.AddLineItemRequest) -> c.AddLineItem:
    return c.AddLineItem(
        sale_id=canonical_id(req.sale_id),
        line_item=line_item(req.line_item) if req.HasField("line_item") else None,
    )


def remove_line_item(req: pb.RemoveLineItemRequest) -> c.RemoveLineItem:
    return c.RemoveLineItem(sale_id=canonical_id(req.sale_id), line_id=canonical_id(req.line_id))


def attach_customer(req: pb.AttachCustomerRequest) -> c.AttachCustomer:
    return c.AttachCustomer(sale_id=canonical_id(req.sale_id), customer_id=req.customer_id)


def request_payment(req: pb.RequestPaymentRequest) -> c.RequestPayment:
    return c.RequestPayment(
        sale_id=canonical_id(req.sale_id),
        amount=req.amount,
        currency_code=req.currency_code,
        tender_types=tuple(TENDERS.get(t) for t in req.tender_types),
        callback_url=req.callback_url,
        app_id=req.app_id,
        api_version=req.api_version,
        note=req.note,
        state=req.state,
        expires_after=req.expires_after.ToTimedelta() if req.HasField("expires_after") else None,
    )


def record_payment_result(req: pb.RecordPaymentResultRequest) -> c.RecordPaymentResult:
    card = _card(req.card) if req.HasField("card") else None
    return c.RecordPaymentResult(
        sale_id=canonical_id(req.sale_id),
        payment_id=canonical_id(req.payment_id),
        outcome=OUTCOMES.get(req.outcome),
        tender=TENDERS.get(req.tender),
        card=card,
        auth_code=req.auth_code,
        processor_reference=req.processor_reference,
        approved_amount=req.approved_amount if req.HasField("approved_amount") else None,
        tip_amount=req.tip_amount,
        cash_tendered=req.cash_tendered,
        change_given=req.change_given,
        error_code=req.error_code,
        occurred_at=(
            timestamp_field("occurred_at", req.occurred_at) if req.HasField("occurred_at") else None
        ),
    )


def cancel_payment(req: pb.CancelPaymentRequest) -> c.CancelPayment:
    return c.CancelPayment(
        sale_id=canonical_id(req.sale_id),
        payment_id=canonical_id(req.payment_id),
        reason=req.reason,
    )


def refund_payment(req: pb.RefundPaymentRequest) -> c.RefundPayment:
    return c.RefundPayment(
        sale_id=canonical_id(req.sale_id),
        payment_id=canonical_id(req.payment_id),
        amount=req.amount,
        reason=req.reason,
        processor_reference=req.processor_reference,
        restock_items=tuple(
            c.RestockItem(line_id=canonical_id(item.line_id), quantity=item.quantity)
            for item in req.restock_items
        ),
    )


def _card(card: pb.CardDetails) -> c.CardInput:
    return c.CardInput(
        brand=card.brand, last4=card.last4, entry_method=ENTRY_METHODS.get(card.entry_method)
    )


def import_order(order: pb.ImportedOrder) -> c.ImportOrder:
    check_request(order)  # every string of it, the one card-number check (see card_data.py)
    return c.ImportOrder(
        channel=order.channel,
        external_order_id=order.external_order_id,
        sales_channel=CHANNELS.get(order.sales_channel),
        location_id=order.location_id,
        currency_code=order.currency_code,
        line_items=tuple(line_item(item) for item in order.line_items),
        payments=tuple(
            c.ImportedPayment(
                tender=TENDERS.get(p.tender),
                amount=p.amount,
                card=_card(p.card) if p.HasField("card") else None,
                auth_code=p.auth_code,
                processor_reference=p.processor_reference,
            )
            for p in order.payments
        ),
        customer_id=order.customer_id,
        placed_at=timestamp_field("placed_at", order.placed_at)
        if order.HasField("placed_at")
        else None,
        note=order.note,
        open=order.open,
    )


def import_outcome(index: int, order: pb.ImportedOrder, result: ImportResult) -> pb.ImportOutcome:
    return pb.ImportOutcome(
        index=index,
        channel=order.channel,
        external_order_id=order.external_order_id,
        status=IMPORT_STATUSES[result.status],
        sale_id=result.sale_id,
        message=result.message,
    )


def cancel_sale(req: pb.CancelSaleRequest) -> c.CancelSale:
    return c.CancelSale(sale_id=canonical_id(req.sale_id), reason=req.reason)


# ---- state → messages --------------------------------------------------------------------


def line_item_message(item: LineItem, oversold: int = 0) -> pb.LineItem:
    return pb.LineItem(
        line_id=canonical_id(item.line_id),
        sku=item.sku,
        name=item.name,
        quantity=item.quantity,
        unit_price=item.unit_price,
        discount=item.discount,
        tax_rate_ppm=item.tax_rate_ppm,
        gross_amount=item.gross_amount,
        tax_amount=item.tax_amount,
        total_amount=item.total_amount,
        product_id=item.product_id,
        oversold_quantity=oversold,
    )


def payment_message(p: Payment) -> pb.Payment:
    card = None
    if p.card is not None:
        card = pb.CardDetails(
            brand=p.card["brand"],
            last4=p.card["last4"],
            entry_method=ENTRY_METHODS_TO_WIRE.get(
                p.card["entry_method"], pb.CARD_ENTRY_METHOD_UNSPECIFIED
            ),
        )
    return pb.Payment(
        id=p.id,
        status=PAYMENT_STATUSES[p.status],
        amount=p.amount,
        currency_code=p.currency_code,
        tender_types=[TENDERS_TO_WIRE[t] for t in p.tender_types],
        callback_url=p.callback_url,
        app_id=p.app_id,
        api_version=p.api_version,
        note=p.note,
        state=p.state,
        requested_at=timestamp(p.requested_at),
        approved_amount=p.approved_amount,
        tip_amount=p.tip_amount,
        tender=TENDERS_TO_WIRE.get(p.tender, pb.TENDER_TYPE_UNSPECIFIED),
        card=card,
        auth_code=p.auth_code,
        processor_reference=p.processor_reference,
        cash_tendered=p.cash_tendered,
        change_given=p.change_given,
        error_code=p.error_code,
        occurred_at=timestamp(p.occurred_at),
        resolved_at=timestamp(p.resolved_at),
        refunded_amount=p.refunded_amount,
        cancel_reason=p.cancel_reason,
        owed_amount=p.owed_amount,
        expires_at=timestamp(p.expires_at),
    )


def refund_message(r: Refund) -> pb.Refund:
    return pb.Refund(
        id=r.id,
        payment_id=r.payment_id,
        amount=r.amount,
        reason=r.reason,
        processor_reference=r.processor_reference,
        refunded_at=timestamp(r.refunded_at),
    )


def sale_message(sale: Sale) -> pb.Sale:
    return pb.Sale(
        id=str(sale.id),
        version=sale.version,
        location_id=sale.location_id,
        channel=CHANNELS_TO_WIRE[sale.channel],
        status=SALE_STATUSES[sale.status],
        currency_code=sale.currency_code,
        line_items=[
            line_item_message(item, sale.oversold.get(item.line_id, 0)) for item in sale.line_items
        ],
        customer_id=sale.customer_id,
        external_order_id=sale.external_order_id,
        note=sale.note,
        subtotal=sale.subtotal,
        discount_total=sale.discount_total,
        tax_total=sale.tax_total,
        total=sale.total,
        paid_total=sale.paid_total,
        refunded_total=sale.refunded_total,
        pending_total=sale.pending_total,
        amount_due=sale.amount_due,
        tip_total=sale.tip_total,
        payments=[payment_message(p) for p in sale.payments.values()],
        refunds=[refund_message(r) for r in sale.refunds],
        created_at=timestamp(sale.created_on),
        updated_at=timestamp(sale.modified_on),
        completed_at=timestamp(sale.completed_at),
        canceled_at=timestamp(sale.canceled_at),
        cancel_reason=sale.cancel_reason,
        oversold=bool(sale.oversold),
        owed_total=sale.owed_total,
    )


# ---- views → messages ------------------------------------------------------------------------

SALE_STATUS_FILTERS = {v: k.value for k, v in SALE_STATUSES.items()}


def sale_filters(req: pb.ListSalesRequest) -> SaleFilters:
    return SaleFilters(
        status=enum_filter("status", req.status, SALE_STATUS_FILTERS),
        channel=enum_filter("channel", req.channel, {k: v.value for k, v in CHANNELS.items()}),
        location_id=req.location_id or None,
        customer_id=req.customer_id or None,
        created_after=(
            timestamp_field("created_after", req.created_after)
            if req.HasField("created_after")
            else None
        ),
        created_before=(
            timestamp_field("created_before", req.created_before)
            if req.HasField("created_before")
            else None
        ),
    )


def payment_id_filter(payment_id: str) -> str:
    checks = Checks()
    checks.uuid("payment_id", payment_id)
    checks.raise_if_any()
    return payment_id


def payment_filters(req: pb.FindPaymentsRequest) -> dict[str, Any]:
    """The filters of a payment search; at least one is required."""
    checks = Checks()
    checks.text("processor_reference", req.processor_reference, max_len=128)
    checks.text("state", req.state, max_len=4096)
    if not (req.processor_reference or req.state or req.owed_only):
        checks.fail("processor_reference", "give processor_reference, state or owed_only")
    checks.raise_if_any()
    return {
        "processor_reference": req.processor_reference or None,
        "state": req.state or None,
        "owed_only": req.owed_only,
    }


def sale_summary(row: dict[str, Any], lines: list[dict[str, Any]]) -> pb.SaleSummary:
    return pb.SaleSummary(
        id=str(row["sale_id"]),
        version=row["version"],
        status=SALE_STATUSES[SaleStatus(row["status"])],
        channel=CHANNELS_TO_WIRE[c.Channel(row["channel"])],
        location_id=row["location_id"],
        customer_id=row["customer_id"],
        currency_code=row["currency_code"],
        subtotal=row["subtotal"],
        discount_total=row["discount_total"],
        tax_total=row["tax_total"],
        total=row["total"],
        paid_total=row["paid_total"],
        refunded_total=row["refunded_total"],
        amount_due=row["amount_due"],
        item_count=row["item_count"],
        external_order_id=row["external_order_id"],
        created_at=timestamp(row["created_at"]),
        completed_at=timestamp(row["completed_at"]),
        line_items=[
            pb.LineItem(
                line_id=str(line["line_id"]),
                sku=line["sku"],
                name=line["name"],
                quantity=line["quantity"],
                unit_price=line["unit_price"],
                discount=line["discount"],
                tax_rate_ppm=line["tax_rate_ppm"],
                gross_amount=line["gross_amount"],
                tax_amount=line["tax_amount"],
                total_amount=line["total_amount"],
                product_id=line["product_id"],
            )
            for line in lines
        ],
    )
