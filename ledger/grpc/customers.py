"""CustomerService: parse, call the ledger, build the response (`convert.customers`)."""

from __future__ import annotations

import grpc

from ledger.application import Ledger
from ledger.domain.errors import NotFound, NotYetVisible
from ledger.grpc.context import command_context
from ledger.grpc.convert import customers as convert
from ledger.grpc.interceptors import current_principal
from ledger.v1 import customers_pb2 as pb
from ledger.v1 import customers_pb2_grpc
from projections.queries import ReadModels


class CustomerServicer(customers_pb2_grpc.CustomerServiceServicer):
    def __init__(self, ledger: Ledger, reads: ReadModels) -> None:
        self.ledger = ledger
        self.reads = reads

    def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: grpc.ServicerContext
    ) -> pb.CreateCustomerResponse:
        cmd = convert.create_customer(request)
        outcome = self.ledger.create_customer(command_context(request), cmd)
        return pb.CreateCustomerResponse(
            customer=convert.customer_message(outcome.aggregate), position=outcome.position
        )

    def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: grpc.ServicerContext
    ) -> pb.UpdateCustomerResponse:
        cmd = convert.update_customer(request)
        outcome = self.ledger.update_customer(command_context(request), cmd)
        return pb.UpdateCustomerResponse(
            customer=convert.customer_message(outcome.aggregate), position=outcome.position
        )

    def GetCustomer(
        self, request: pb.GetCustomerRequest, context: grpc.ServicerContext
    ) -> pb.GetCustomerResponse:
        customer = self.ledger.get_customer(current_principal().merchant_id, request.customer_id)
        return pb.GetCustomerResponse(customer=convert.customer_message(customer))

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
                convert.summary_message(row, page.related.get(row["customer_id"], []))
                for row in page.rows
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
            summary=convert.summary_message(row, page.related.get(row["customer_id"], [])),
            position=page.position,
        )
