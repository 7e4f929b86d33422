"""Request fingerprints are stored with every command record: they must never change.

The digests below were computed by the first implementation (canonical JSON of
`dataclasses.asdict(cmd)`); a retry sent across an upgrade must still match its record.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.application.fingerprint import request_fingerprint
from ledger.application.imports import order_fingerprint
from ledger.domain import commands as c

ITEMS = (
    c.LineItemInput(sku="A", name="Å", quantity=1, unit_price=100),
    c.LineItemInput(sku="B", name="B", quantity=2, unit_price=250, discount=10, tax_rate_ppm=80000),
)
CASES = [
    (
        c.CreateSale(
            location_id="loc",
            channel=c.Channel.IN_STORE,
            currency_code="USD",
            line_items=ITEMS,
            customer_id="cust-1",
            note="n",
        ),
        None,
        "3476568932d4af119455a76af0efd9ff1bf1f9e72a0ad62ed062335a87dfd5c0",
    ),
    (
        c.RecordPaymentResult(
            sale_id="3f0e5a4e-7c1b-4a51-9a37-0f5f1c9b2d11",
            payment_id="p",
            outcome=c.Outcome.APPROVED,
            tender=c.Tender.CARD,
            card=c.CardInput(brand="visa", last4="4242", entry_method=c.EntryMethod.CONTACTLESS),
            auth_code="A1",
            processor_reference="r",
        ),
        3,
        "7baeff29a25861d662d99c0d82208b3c7c66d14846000e97f08c5b204f6e4b4d",
    ),
]


@pytest.mark.parametrize(("cmd", "expected_version", "digest"), CASES)
def test_fingerprints_of_stored_records_never_change(
    cmd: object, expected_version: int | None, digest: str
) -> None:
    assert request_fingerprint(cmd, expected_version) == digest


def test_any_difference_in_the_request_changes_the_fingerprint() -> None:
    cmd, _, digest = CASES[0]
    assert isinstance(cmd, c.CreateSale)
    assert request_fingerprint(cmd, 1) != digest
    other_line = (ITEMS[0], c.LineItemInput(sku="B", name="B", quantity=3, unit_price=250))
    changed = c.CreateSale(
        location_id="loc",
        channel=c.Channel.IN_STORE,
        currency_code="USD",
        line_items=other_line,
        customer_id="cust-1",
        note="n",
    )
    assert request_fingerprint(changed, None) != digest


def test_imported_order_fingerprints_never_change() -> None:
    """Stored in every SaleImported event: a re-import must keep answering DUPLICATE."""
    order = c.ImportOrder(
        channel="shopify",
        external_order_id="1001",
        sales_channel=c.Channel.ONLINE,
        location_id="web",
        currency_code="EUR",
        line_items=(ITEMS[0],),
        payments=(c.ImportedPayment(tender=c.Tender.CARD, amount=100),),
        placed_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    )
    expected = "f1c5af7d4ae28a648745169c1cbe72d9b68760445517d9dee81334a78aef6000"
    assert order_fingerprint(order) == expected
