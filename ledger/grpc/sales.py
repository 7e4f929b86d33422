"""SalesService: parse the request, call the ledger, build the response. Nothing else.

Domain errors propagate to the interceptor, which turns them into gRPC statuses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import grpc

from ledger.application import Context, Ledger
from ledger.domain.commands import ImportOrder
from ledger.domain.errors import FieldViolation, InvalidRequest, NotFound
from ledger.grpc.context import command_context
from ledger.grpc.convert import sales as convert
from ledger.grpc.interceptors import current_device_id, current_principal
from ledger.grpc.resources import Resources
from ledger.limits import idle_limited
from ledger.v1 import sales_pb2 as pb
from ledger.v1 import sales_pb2_grpc
from projections.queries import ReadModels


class SalesServicer(sales_pb2_grpc.SalesServiceServicer):
    def __init__(self, ledger: Ledger, reads: ReadModels, resources: Resources) -> None:
        self.ledger = ledger
        self.reads = reads
        self.resources = resources

    def CreateSale(
        self, request: pb.CreateSaleRequest, context: grpc.ServicerContext
    ) -> pb.CreateSaleResponse:
        result = self.ledger.create_sale(command_context(request), convert.create_sale(request))
        return pb.CreateSaleResponse(
            sale=convert.sale_message(result.sale), position=result.position
        )

    def AddLineItem(
        self, request: pb.AddLineItemRequest, context: grpc.ServicerContext
    ) -> pb.AddLineItemResponse:
        result = self.ledger.add_line_item(command_context(request), convert.add_line_item(request))
        return pb.AddLineItemResponse(
            sale=convert.sale_message(result.sale),
            line_id=result.ids["line_id"],
            position=result.position,
        )

    def RemoveLineItem(
        self, request: pb.RemoveLineItemRequest, context: grpc.ServicerContext
    ) -> pb.RemoveLineItemResponse:
        result = self.ledger.remove_line_item(
            command_context(request), convert.remove_line_item(request)
        )
        return pb.RemoveLineItemResponse(
            sale=convert.sale_message(result.sale), position=result.position
        )

    def AttachCustomer(
        self, request: pb.AttachCustomerRequest, context: grpc.ServicerContext
    ) -> pb.AttachCustomerResponse:
        result = self.ledger.attach_customer(
            command_context(request), convert.attach_customer(request)
        )
        return pb.AttachCustomerResponse(
            sale=convert.sale_message(result.sale), position=result.position
        )

    def RequestPayment(
        self, request: pb.RequestPaymentRequest, context: grpc.ServicerContext
    ) -> pb.RequestPaymentResponse:
        result = self.ledger.request_payment(
            command_context(request), convert.request_payment(request)
        )
        payment = result.sale.payments[result.ids["payment_id"]]
        return pb.RequestPaymentResponse(
            payment=convert.payment_message(payment),
            sale=convert.sale_message(result.sale),
            position=result.position,
        )

    def RecordPaymentResult(
        self, request: pb.RecordPaymentResultRequest, context: grpc.ServicerContext
    ) -> pb.RecordPaymentResultResponse:
        result = self.ledger.record_payment_result(
            command_context(request), convert.record_payment_result(request)
        )
        payment = result.sale.payments[result.ids["payment_id"]]
        return pb.RecordPaymentResultResponse(
            payment=convert.payment_message(payment),
            sale=convert.sale_message(result.sale),
            position=result.position,
        )

    def CancelPayment(
        self, request: pb.CancelPaymentRequest, context: grpc.ServicerContext
    ) -> pb.CancelPaymentResponse:
        result = self.ledger.cancel_payment(
            command_context(request), convert.cancel_payment(request)
        )
        payment = result.sale.payments[result.ids["payment_id"]]
        return pb.CancelPaymentResponse(
            payment=convert.payment_message(payment),
            sale=convert.sale_message(result.sale),
            position=result.position,
        )

    def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: grpc.ServicerContext
    ) -> pb.RefundPaymentResponse:
        result = self.ledger.refund_payment(
            command_context(request), convert.refund_payment(request)
        )
        refund = next(r for r in result.sale.refunds if r.id == result.ids["refund_id"])
        return pb.RefundPaymentResponse(
            refund=convert.refund_message(refund),
            sale=convert.sale_message(result.sale),
            position=result.position,
        )

    def CancelSale(
        self, request: pb.CancelSaleRequest, context: grpc.ServicerContext
    ) -> pb.CancelSaleResponse:
        result = self.ledger.cancel_sale(command_context(request), convert.cancel_sale(request))
        return pb.CancelSaleResponse(
            sale=convert.sale_message(result.sale), position=result.position
        )

    def GetSale(
        self, request: pb.GetSaleRequest, context: grpc.ServicerContext
    ) -> pb.GetSaleResponse:
        sale = self.ledger.get_sale(current_principal().merchant_id, request.sale_id)
        return pb.GetSaleResponse(sale=convert.sale_message(sale))

    def ImportSales(
        self, request_iterator: Iterator[pb.ImportSalesRequest], context: grpc.ServicerContext
    ) -> pb.ImportSalesResponse:
        principal = current_principal()
        # Imports need no request_id: each order is idempotent by (channel, external id).
        ctx = Context(
            merchant_id=principal.merchant_id,
            app_id=principal.app_id,
            key_id=principal.key_id,
            device_id=current_device_id(),
        )
        with self.resources.imports.held(principal.merchant_id):
            response = self._import(ctx, request_iterator)
        counts = Counter(outcome.status for outcome in response.outcomes)
        response.imported = counts[pb.IMPORT_STATUS_IMPORTED]
        response.duplicates = counts[pb.IMPORT_STATUS_DUPLICATE]
        response.conflicts = counts[pb.IMPORT_STATUS_CONFLICT]
        response.rejected = counts[pb.IMPORT_STATUS_REJECTED]
        # The head of the log now: at or after every event this import recorded.
        response.position = self.ledger.recorder.max_notification_id() or 0
        return response

    def _import(
        self, ctx: Context, request_iterator: Iterator[pb.ImportSalesRequest]
    ) -> pb.ImportSalesResponse:
        """Imports each batch as it arrives (each is committed on its own)."""
        response = pb.ImportSalesResponse()
        limits = self.resources.limits
        batches = idle_limited(
            request_iterator, limits.import_idle_seconds, self.resources.stopping
        )
        for batch in batches:
            if len(batch.orders) > MAX_IMPORT_BATCH:
                raise InvalidRequest(
                    [FieldViolation("orders", f"at most {MAX_IMPORT_BATCH} orders per message")]
                )
            orders: list[ImportOrder | InvalidRequest] = []
            for message in batch.orders:
                try:
                    orders.append(convert.import_order(message))
                except InvalidRequest as e:
                    orders.append(e)
            results = self.ledger.import_sales(ctx, orders)
            for message, result in zip(batch.orders, results, strict=True):
                response.outcomes.append(
                    convert.import_outcome(len(response.outcomes), message, result)
                )
        return response

    def ListSales(
        self, request: pb.ListSalesRequest, context: grpc.ServicerContext
    ) -> pb.ListSalesResponse:
        page = self.reads.list_sales(
            current_principal().merchant_id,
            convert.sale_filters(request),
            page_size=request.page_size,
            page_token=request.page_token,
            min_position=request.min_position,
        )
        return pb.ListSalesResponse(
            sales=[
                convert.sale_summary(row, page.related.get(row["sale_id"], [])) for row in page.rows
            ],
            next_page_token=page.next_page_token,
            position=page.position,
        )

    def GetPayment(
        self, request: pb.GetPaymentRequest, context: grpc.ServicerContext
    ) -> pb.GetPaymentResponse:
        merchant_id = current_principal().merchant_id
        page = self.reads.find_payments(
            merchant_id,
            payment_id=convert.payment_id_filter(request.payment_id),
            page_size=1,
            min_position=request.min_position,
        )
        if not page.rows:
            raise NotFound(f"payment {request.payment_id} not found", reason="PAYMENT_NOT_FOUND")
        found = self._found(merchant_id, page.rows[0])
        return pb.GetPaymentResponse(
            sale_id=found.sale_id, payment=found.payment, position=page.position
        )

    def FindPayments(
        self, request: pb.FindPaymentsRequest, context: grpc.ServicerContext
    ) -> pb.FindPaymentsResponse:
        merchant_id = current_principal().merchant_id
        page = self.reads.find_payments(
            merchant_id,
            **convert.payment_filters(request),
            page_size=request.page_size,
            page_token=request.page_token,
            min_position=request.min_position,
        )
        return pb.FindPaymentsResponse(
            payments=[self._found(merchant_id, row) for row in page.rows],
            next_page_token=page.next_page_token,
            position=page.position,
        )

    def _found(self, merchant_id: str, row: dict[str, object]) -> pb.FoundPayment:
        """The payment a view row names, as its sale now has it."""
        sale = self.ledger.get_sale(merchant_id, str(row["sale_id"]))
        payment = sale.payment(str(row["payment_id"]))
        return pb.FoundPayment(sale_id=str(sale.id), payment=convert.payment_message(payment))


MAX_IMPORT_BATCH = 1000
