"""Card data at rest: brand, last 4 and entry method only; never anything like a PAN."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from ledger.application import Ledger
from ledger.domain.errors import InvalidRequest
from tests.integration.conftest import (
    CARD,
    Db,
    approved_by_card,
    ctx,
    declined_card,
    sale_with_pending_payment,
)

PAN = "4111111111111111"
CARD_KEYS = {"brand", "last4", "entry_method"}
DIGIT_RUN = re.compile(rb"\d{13,19}")


def _card_states(db: Db, topic: str) -> list[dict[str, object]]:
    cards = []
    for row in db.events():
        if row.topic == topic:
            card = row.state["card"]
            assert isinstance(card, dict)
            cards.append(card)
    return cards


def test_an_approved_card_payment_stores_only_brand_last4_and_entry_method(
    ledger: Ledger, db: Db
) -> None:
    p = sale_with_pending_payment(ledger)
    ledger.record_payment_result(ctx(), approved_by_card(p))

    (card,) = _card_states(db, "posledger.PaymentApproved")

    assert set(card) == CARD_KEYS
    assert card == {"brand": "visa", "last4": "4242", "entry_method": "contactless"}
    (approved,) = [r for r in db.events() if r.topic == "posledger.PaymentApproved"]
    assert approved.state["auth_code"] == "A1B2C3"
    assert approved.state["processor_reference"] == "proc-123"


def test_a_declined_card_payment_stores_only_brand_last4_and_entry_method(
    ledger: Ledger, db: Db
) -> None:
    p = sale_with_pending_payment(ledger)
    ledger.record_payment_result(ctx(), declined_card(p))

    (card,) = _card_states(db, "posledger.PaymentNotApproved")

    assert set(card) == CARD_KEYS


def test_no_stored_event_holds_a_long_digit_run(ledger: Ledger, db: Db) -> None:
    for _ in range(3):
        p = sale_with_pending_payment(ledger)
        ledger.record_payment_result(ctx(), approved_by_card(p))

    rows = db.events()
    assert len(rows) == 12
    for row in rows:
        assert DIGIT_RUN.search(row.raw_state) is None, row.topic


@pytest.mark.parametrize("field", ["auth_code", "processor_reference", "error_code", "card"])
def test_a_card_number_in_any_text_field_is_refused_and_stored_nowhere(
    ledger: Ledger, db: Db, field: str
) -> None:
    p = sale_with_pending_payment(ledger)
    spaced = "4111 1111 1111 1111"
    bad = {
        "auth_code": replace(approved_by_card(p), auth_code=PAN),
        "processor_reference": replace(approved_by_card(p), processor_reference=PAN),
        "error_code": replace(declined_card(p), error_code=spaced),
        "card": replace(approved_by_card(p), card=replace(CARD, brand=spaced)),
    }[field]
    before = (db.event_count(), db.command_count())

    with pytest.raises(InvalidRequest) as error:
        ledger.record_payment_result(ctx(), bad)

    assert error.value.reason == "CARD_NUMBER_REJECTED"
    assert (db.event_count(), db.command_count()) == before
    for row in db.events():  # (not just b"4111": a random uuid may contain that)
        assert PAN.encode() not in row.raw_state
        assert spaced.encode() not in row.raw_state
    commands = db.table_text("processed_commands")
    assert PAN not in commands
    assert spaced not in commands
