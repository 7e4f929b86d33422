"""SalesService: parse the request, call the ledger, build the response. Nothing else.

Domain errors propagate to the interceptor, which turns them into gRPC statuses.
"""

from __future__ import annotations

from typing import Any

import grpc

from ledger.application import Context, Ledger
from ledger.grpc import convert
from ledger.grpc.interceptors import current_principal
from ledger.v1 import sales_pb2 as pb
from ledger.v1 import sales_pb2_grpc


def _context(request: Any) -> Context:
    """The envelope of a mutating request: caller, request id, expected version."""
    has_version = "expected_version" in request.DESCRIPTOR.fields_by_name and request.HasField(
        "expected_version"
    )
    return Context(
        merchant_id=current_principal().merchant_id,
        request_id=request.request_id,
        expected_version=request.expected_version if has_version else None,
    )


class SalesServicer(sales_pb2_grpc.SalesServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def CreateSale(
        self, request: pb.CreateSaleRequest, context: grpc.ServicerContext
    ) -> pb.CreateSaleResponse:
        result = self.ledger.create_sale(_context(request), convert.create_sale(request))
        return pb.CreateSaleResponse(sale=convert.sale_message(result.sale))

    def AddLineItem(
        self, request: pb.AddLineItemRequest, context: grpc.ServicerContext
    ) -> pb.AddLineItemResponse:
        result = self.ledger.add_line_item(_context(request), convert.add_line_item(request))
        return pb.AddLineItemResponse(
            sale=convert.sale_message(result.sale), line_id=result.ids["line_id"]
        )

    def RemoveLineItem(
        self, request: pb.RemoveLineItemRequest, context: grpc.ServicerContext
    ) -> pb.RemoveLineItemResponse:
        result = self.ledger.remove_line_item(_context(request), convert.remove_line_item(request))
        return pb.RemoveLineItemResponse(sale=convert.sale_message(result.sale))

    def AttachCustomer(
        self, request: pb.AttachCustomerRequest, context: grpc.ServicerContext
    ) -> pb.AttachCustomerResponse:
        result = self.ledger.attach_customer(_context(request), convert.attach_customer(request))
        return pb.AttachCustomerResponse(sale=convert.sale_message(result.sale))

    def RequestPayment(
        self, request: pb.RequestPaymentRequest, context: grpc.ServicerContext
    ) -> pb.RequestPaymentResponse:
        result = self.ledger.request_payment(_context(request), convert.request_payment(request))
        payment = result.sale.payments[result.ids["payment_id"]]
        return pb.RequestPaymentResponse(
            payment=convert.payment_message(payment), sale=convert.sale_message(result.sale)
        )

    def RecordPaymentResult(
        self, request: pb.RecordPaymentResultRequest, context: grpc.ServicerContext
    ) -> pb.RecordPaymentResultResponse:
        result = self.ledger.record_payment_result(
            _context(request), convert.record_payment_result(request)
        )
        payment = result.sale.payments[result.ids["payment_id"]]
        return pb.RecordPaymentResultResponse(
            payment=convert.payment_message(payment), sale=convert.sale_message(result.sale)
        )

    def CancelPayment(
        self, request: pb.CancelPaymentRequest, context: grpc.ServicerContext
    ) -> pb.CancelPaymentResponse:
        result = self.ledger.cancel_payment(_context(request), convert.cancel_payment(request))
        payment = result.sale.payments[result.ids["payment_id"]]
        return pb.CancelPaymentResponse(
            payment=convert.payment_message(payment), sale=convert.sale_message(result.sale)
        )

    def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: grpc.ServicerContext
    ) -> pb.RefundPaymentResponse:
        result = self.ledger.refund_payment(_context(request), convert.refund_payment(request))
        refund = next(r for r in result.sale.refunds if r.id == result.ids["refund_id"])
        return pb.RefundPaymentResponse(
            refund=convert.refund_message(refund), sale=convert.sale_message(result.sale)
        )

    def CancelSale(
        self, request: pb.CancelSaleRequest, context: grpc.ServicerContext
    ) -> pb.CancelSaleResponse:
        result = self.ledger.cancel_sale(_context(request), convert.cancel_sale(request))
        return pb.CancelSaleResponse(sale=convert.sale_message(result.sale))

    def GetSale(
        self, request: pb.GetSaleRequest, context: grpc.ServicerContext
    ) -> pb.GetSaleResponse:
        sale = self.ledger.get_sale(current_principal().merchant_id, request.sale_id)
        return pb.GetSaleResponse(sale=convert.sale_message(sale))
