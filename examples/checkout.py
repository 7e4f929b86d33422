"""A checkout against a running ledger: create a sale, request a payment, record its result.

.venv/bin/python examples/checkout.py [--target 127.0.0.1:50051] [--api-key plk_...]
"""

from __future__ import annotations

import argparse
import uuid

import grpc

from ledger.v1 import sales_pb2 as pb
from ledger.v1 import sales_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--api-key", default="", help="omit in development mode")
    args = parser.parse_args()
    metadata = [("authorization", f"Bearer {args.api_key}")] if args.api_key else []

    def request_id() -> str:
        return str(uuid.uuid4())

    with grpc.insecure_channel(args.target) as channel:
        sales = sales_pb2_grpc.SalesServiceStub(channel)
        sale = sales.CreateSale(
            pb.CreateSaleRequest(
                request_id=request_id(),
                location_id="store-1",
                channel=pb.SALES_CHANNEL_IN_STORE,
                currency_code="USD",
                line_items=[
                    pb.LineItemInput(
                        sku="TEA", name="Green tea", quantity=2, unit_price=350, tax_rate_ppm=80_000
                    ),
                ],
            ),
            metadata=metadata,
        ).sale
        print(f"sale {sale.id}: total {sale.total} {sale.currency_code}, due {sale.amount_due}")

        payment = sales.RequestPayment(
            pb.RequestPaymentRequest(
                request_id=request_id(),
                sale_id=sale.id,
                amount=sale.amount_due,
                currency_code="USD",
                tender_types=[pb.TENDER_TYPE_CARD, pb.TENDER_TYPE_CASH],
                callback_url="https://pos.example.com/payments/callback",
                app_id="example-pos",
                api_version="1.0",
                state="order-42",
            ),
            metadata=metadata,
        ).payment
        print(f"payment {payment.id}: {pb.PaymentStatus.Name(payment.status)}")

        result = sales.RecordPaymentResult(
            pb.RecordPaymentResultRequest(
                request_id=request_id(),
                sale_id=sale.id,
                payment_id=payment.id,
                outcome=pb.PAYMENT_OUTCOME_APPROVED,
                tender=pb.TENDER_TYPE_CARD,
                card=pb.CardDetails(
                    brand="visa", last4="4242", entry_method=pb.CARD_ENTRY_METHOD_CONTACTLESS
                ),
                auth_code="A1B2C3",
                processor_reference="ch_123",
            ),
            metadata=metadata,
        )
        print(f"payment {result.payment.id}: {pb.PaymentStatus.Name(result.payment.status)}")

        final = sales.GetSale(pb.GetSaleRequest(sale_id=sale.id), metadata=metadata).sale
        print(
            f"sale {final.id}: {pb.SaleStatus.Name(final.status)}, paid {final.paid_total}, "
            f"version {final.version}"
        )


if __name__ == "__main__":
    main()
