"""References a command makes must hold: a sale's customer exists for the merchant, and a
payment is filed under the app of the key that asked for it."""

from __future__ import annotations

import pytest

from ledger.application import Context, ImportStatus, Ledger
from ledger.domain import commands as c
from ledger.domain.errors import NotFound
from ledger.keys import PermissionDenied
from tests.integration.conftest import (
    CARD,
    COFFEE,
    MERCHANT_A,
    MERCHANT_B,
    Db,
    create_sale_cmd,
    ctx,
    new_customer,
    new_request_id,
    open_sale,
    request_payment_cmd,
)


def _sale_for(customer_id: str) -> c.CreateSale:
    cmd = create_sale_cmd()
    return c.CreateSale(
        location_id=cmd.location_id,
        channel=cmd.channel,
        currency_code=cmd.currency_code,
        line_items=cmd.line_items,
        customer_id=customer_id,
    )


@pytest.mark.parametrize("customer", ["cust-1", "00000000-0000-4000-8000-000000000000", "theirs"])
def test_a_sale_for_a_customer_that_does_not_exist_is_refused(
    ledger: Ledger, db: Db, customer: str
) -> None:
    if customer == "theirs":
        customer = new_customer(ledger, MERCHANT_B)  # another merchant's looks missing
    before = db.event_count()

    with pytest.raises(NotFound) as created:
        ledger.create_sale(ctx(), _sale_for(customer))
    sale_id = str(open_sale(ledger).id)
    with pytest.raises(NotFound) as attached:
        ledger.attach_customer(ctx(), c.AttachCustomer(sale_id, customer))

    assert created.value.reason == attached.value.reason == "CUSTOMER_NOT_FOUND"
    assert db.event_count() == before + 1  # only the open sale


def test_a_sale_for_an_existing_customer_is_recorded(ledger: Ledger) -> None:
    customer = new_customer(ledger)

    sale = ledger.create_sale(ctx(), _sale_for(customer)).sale
    other = open_sale(ledger)
    attached = ledger.attach_customer(ctx(), c.AttachCustomer(str(other.id), customer)).sale

    assert sale.customer_id == attached.customer_id == customer


def test_an_imported_order_for_an_unknown_customer_is_rejected(ledger: Ledger) -> None:
    known = new_customer(ledger)
    orders: list[c.ImportOrder | Exception] = [
        c.ImportOrder(
            channel="webshop",
            external_order_id=f"order-{customer}",
            sales_channel=c.Channel.ONLINE,
            location_id="web",
            currency_code="USD",
            line_items=(COFFEE,),
            payments=(c.ImportedPayment(c.Tender.CARD, 900, CARD, "OK", "ch_1"),),
            customer_id=customer,
        )
        for customer in (known, "cust-unknown")
    ]

    results = ledger.import_sales(Context(MERCHANT_A), orders)  # type: ignore[arg-type]

    assert [r.status for r in results] == [ImportStatus.IMPORTED, ImportStatus.REJECTED]
    assert "customer" in results[1].message


def _keyed(app_id: str) -> Context:
    return Context(MERCHANT_A, new_request_id(), app_id=app_id, key_id="key-till")


def test_a_payment_is_filed_under_the_app_of_the_callers_key(ledger: Ledger) -> None:
    sale = open_sale(ledger)
    cmd = request_payment_cmd(str(sale.id), 100)

    named = ledger.request_payment(_keyed("pay-app"), cmd)  # the key's own app
    unnamed = ledger.request_payment(
        _keyed("pay-app"), c.RequestPayment(**{**vars(cmd), "app_id": ""})
    )

    payments = unnamed.sale.payments
    assert payments[named.ids["payment_id"]].app_id == "pay-app"
    assert payments[unnamed.ids["payment_id"]].app_id == "pay-app"


def test_a_payment_naming_another_app_is_refused(ledger: Ledger, db: Db) -> None:
    sale = open_sale(ledger)
    before = db.event_count()

    with pytest.raises(PermissionDenied) as error:
        ledger.request_payment(_keyed("till"), request_payment_cmd(str(sale.id), 100))

    assert error.value.reason == "APP_ID_MISMATCH"
    assert error.value.metadata == {"app_id": "till"}
    assert db.event_count() == before
