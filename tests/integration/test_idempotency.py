"""Idempotent commands against the real event store.

A request id names one request of one merchant. Its record commits in the same transaction
as its events; a retry is answered from that record and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import pytest
from eventsourcing.persistence import IntegrityError

from ledger.application import Context, Ledger, SaleResult
from ledger.application.base import ReadSet
from ledger.domain import commands as c
from ledger.domain.errors import InvalidRequest, RequestIdReused, RuleViolated
from ledger.domain.sale import PaymentStatus, Sale
from ledger.group_commit import CommandRecord
from ledger.store import is_duplicate_command
from tests.integration.conftest import (
    BAGEL,
    COFFEE,
    MERCHANT_A,
    MERCHANT_B,
    Db,
    approved_by_card,
    create_sale_cmd,
    ctx,
    failures,
    new_customer,
    new_request_id,
    open_sale,
    race,
    request_payment_cmd,
    sale_with_pending_payment,
    successes,
)


def assert_same_answer(first: SaleResult, second: SaleResult) -> None:
    assert second.sale.id == first.sale.id
    assert second.sale.version == first.sale.version
    assert second.ids == first.ids
    assert second.sale.total == first.sale.total
    assert [i.line_id for i in second.sale.line_items] == [i.line_id for i in first.sale.line_items]


# ---- retries -------------------------------------------------------------------------------


def test_retried_create_sale_returns_the_same_sale_and_writes_nothing(
    ledger: Ledger, db: Db
) -> None:
    context = ctx()
    first = ledger.create_sale(context, create_sale_cmd(COFFEE, BAGEL))
    events, commands = db.event_count(), db.command_count()
    assert (events, commands) == (1, 1)

    again = ledger.create_sale(context, create_sale_cmd(COFFEE, BAGEL))

    assert not first.replayed
    assert again.replayed
    assert_same_answer(first, again)
    assert (db.event_count(), db.command_count()) == (events, commands)


def test_retried_payment_request_returns_the_same_payment_id(ledger: Ledger, db: Db) -> None:
    sale = open_sale(ledger)
    context = ctx()
    cmd = request_payment_cmd(str(sale.id), 500)
    first = ledger.request_payment(context, cmd)
    before = (db.event_count(), db.command_count())

    again = ledger.request_payment(context, cmd)

    assert again.replayed
    assert again.ids == first.ids
    assert set(again.ids) == {"payment_id"}
    assert again.sale.version == first.sale.version
    assert list(again.sale.payments) == [first.ids["payment_id"]]
    assert (db.event_count(), db.command_count()) == before
    assert len(ledger.get_sale(MERCHANT_A, str(sale.id)).payments) == 1


def test_retry_answers_from_the_state_the_command_left(ledger: Ledger, db: Db) -> None:
    """The replayed sale is the sale as the original command left it, not as it is now."""
    sale_id = str(open_sale(ledger).id)
    context = ctx()
    cmd = c.AddLineItem(sale_id, BAGEL)
    first = ledger.add_line_item(context, cmd)
    ledger.add_line_item(ctx(), c.AddLineItem(sale_id, COFFEE))
    before = db.event_count()

    again = ledger.add_line_item(context, cmd)

    assert again.replayed
    assert again.ids == first.ids
    assert again.sale.version == first.sale.version == 2
    assert len(again.sale.line_items) == 2
    assert ledger.get_sale(MERCHANT_A, sale_id).version == 3
    assert db.event_count() == before


def test_retried_payment_result_is_replayed(ledger: Ledger, db: Db) -> None:
    p = sale_with_pending_payment(ledger)
    context = ctx()
    first = ledger.record_payment_result(context, approved_by_card(p))
    before = (db.event_count(), db.command_count())

    again = ledger.record_payment_result(context, approved_by_card(p))

    assert again.replayed
    assert_same_answer(first, again)
    assert again.sale.payments[p.payment_id].status is PaymentStatus.APPROVED
    assert (db.event_count(), db.command_count()) == before


# ---- reuse of a request id -----------------------------------------------------------------


def test_same_request_id_for_a_different_command_is_rejected(ledger: Ledger, db: Db) -> None:
    sale_id = str(open_sale(ledger).id)
    context = ctx()
    ledger.add_line_item(context, c.AddLineItem(sale_id, BAGEL))
    before = (db.event_count(), db.command_count())

    with pytest.raises(RequestIdReused) as other_args:
        ledger.add_line_item(context, c.AddLineItem(sale_id, COFFEE))
    with pytest.raises(RequestIdReused) as other_kind:
        ledger.attach_customer(context, c.AttachCustomer(sale_id, "cust-1"))
    with pytest.raises(RequestIdReused) as other_version:
        ledger.add_line_item(
            Context(MERCHANT_A, context.request_id, expected_version=2),
            c.AddLineItem(sale_id, BAGEL),
        )

    for error in (other_args, other_kind, other_version):
        assert error.value.reason == "REQUEST_ID_REUSED"
    assert (db.event_count(), db.command_count()) == before
    assert ledger.get_sale(MERCHANT_A, sale_id).customer_id == ""


def test_request_ids_are_per_merchant(ledger: Ledger, db: Db) -> None:
    shared = new_request_id()
    a = ledger.create_sale(ctx(MERCHANT_A, shared), create_sale_cmd(COFFEE))
    b = ledger.create_sale(ctx(MERCHANT_B, shared), create_sale_cmd(COFFEE))

    assert not a.replayed
    assert not b.replayed
    assert a.sale.id != b.sale.id
    assert a.sale.merchant_id == MERCHANT_A
    assert b.sale.merchant_id == MERCHANT_B
    assert db.event_count() == 2
    assert {(r["merchant_id"], r["request_id"]) for r in db.commands()} == {
        (MERCHANT_A, shared),
        (MERCHANT_B, shared),
    }
    # Each merchant's retry finds its own record.
    assert ledger.create_sale(ctx(MERCHANT_B, shared), create_sale_cmd(COFFEE)).sale.id == b.sale.id
    # And B reusing the id for something else is B's problem only.
    with pytest.raises(RequestIdReused):
        ledger.create_sale(ctx(MERCHANT_B, shared), create_sale_cmd(BAGEL))
    assert ledger.create_sale(ctx(MERCHANT_A, shared), create_sale_cmd(COFFEE)).sale.id == a.sale.id


def test_a_failed_command_records_nothing_and_can_be_retried(ledger: Ledger, db: Db) -> None:
    sale = open_sale(ledger)
    sale_id = str(sale.id)
    context = ctx()
    before = (db.event_count(), db.command_count())

    with pytest.raises(RuleViolated) as too_much:
        ledger.request_payment(context, request_payment_cmd(sale_id, sale.total + 1))
    with pytest.raises(InvalidRequest):
        ledger.request_payment(context, request_payment_cmd(sale_id, 0))

    assert too_much.value.reason == "AMOUNT_EXCEEDS_DUE"
    assert (db.event_count(), db.command_count()) == before
    assert ledger.ledger_recorder.select_command_record(MERCHANT_A, context.request_id) is None

    fixed = ledger.request_payment(context, request_payment_cmd(sale_id, sale.total))
    assert not fixed.replayed
    assert "payment_id" in fixed.ids
    assert (db.event_count(), db.command_count()) == (before[0] + 1, before[1] + 1)


def test_a_natural_no_op_still_records_the_request(ledger: Ledger, db: Db) -> None:
    sale_id = str(open_sale(ledger).id)
    customer, other_customer = new_customer(ledger), new_customer(ledger, name="Grace")
    attached = ledger.attach_customer(ctx(), c.AttachCustomer(sale_id, customer))
    events = db.event_count()
    context = ctx()

    same = ledger.attach_customer(context, c.AttachCustomer(sale_id, customer))

    assert not same.replayed
    assert same.sale.version == attached.sale.version
    assert db.event_count() == events
    record = ledger.ledger_recorder.select_command_record(MERCHANT_A, context.request_id)
    assert record is not None
    assert record.command == "AttachCustomer"
    assert record.aggregate_version == attached.sale.version
    # The id is now taken: a retry replays, another request with it is refused.
    assert ledger.attach_customer(context, c.AttachCustomer(sale_id, customer)).replayed
    with pytest.raises(RequestIdReused):
        ledger.attach_customer(context, c.AttachCustomer(sale_id, other_customer))
    assert db.event_count() == events


def test_a_uuid_request_id_is_never_mistaken_for_a_card_number(ledger: Ledger, db: Db) -> None:
    """About 1 in 400 random UUIDs holds a Luhn-valid run of 13+ digits; that is no PAN."""
    looks_like_a_pan = "12973f62-a2c9-493a-ab75-291651054400"  # 75291651054400 passes Luhn
    created = ledger.create_sale(ctx(MERCHANT_A, looks_like_a_pan), create_sale_cmd(COFFEE))
    assert not created.replayed
    assert ledger.create_sale(ctx(MERCHANT_A, looks_like_a_pan), create_sale_cmd(COFFEE)).replayed

    with pytest.raises(InvalidRequest) as pan:
        ledger.create_sale(ctx(MERCHANT_A, "4111 1111 1111 1111"), create_sale_cmd(COFFEE))

    assert pan.value.reason == "CARD_NUMBER_REJECTED"
    assert "4111 1111 1111 1111" not in db.table_text("processed_commands")
    assert db.event_count() == 1


# ---- twins: the same request sent twice at once --------------------------------------------


def _assert_twins_agree(outcomes: list[SaleResult | Exception]) -> tuple[SaleResult, SaleResult]:
    assert failures(outcomes) == []
    first, second = successes(outcomes)
    assert_same_answer(first, second)
    assert sorted([first.replayed, second.replayed]) == [False, True]
    return first, second


def test_concurrent_twins_of_create_sale_write_one_sale(ledger: Ledger, db: Db) -> None:
    for _ in range(5):
        context = ctx()
        before = (db.event_count(), db.command_count())
        cmd = create_sale_cmd(COFFEE)

        first, _second = _assert_twins_agree(
            race(
                partial(ledger.create_sale, context, cmd), partial(ledger.create_sale, context, cmd)
            )
        )

        assert (db.event_count(), db.command_count()) == (before[0] + 1, before[1] + 1)
        assert db.topics(first.sale.id) == ["posledger.SaleCreated"]


def test_concurrent_twins_of_add_line_item_write_one_line(ledger: Ledger, db: Db) -> None:
    sale_id = str(open_sale(ledger).id)
    for n in range(5):
        context = ctx()
        cmd = c.AddLineItem(sale_id, BAGEL)

        first, _second = _assert_twins_agree(
            race(
                partial(ledger.add_line_item, context, cmd),
                partial(ledger.add_line_item, context, cmd),
            )
        )

        assert first.sale.version == n + 2
        assert len(db.events(sale_id)) == n + 2
        assert db.command_count() == n + 2
    assert len(ledger.get_sale(MERCHANT_A, sale_id).line_items) == 6


def test_concurrent_twins_of_a_payment_result_write_one_result(ledger: Ledger, db: Db) -> None:
    for _ in range(5):
        p = sale_with_pending_payment(ledger)
        context = ctx()
        cmd = approved_by_card(p)

        _assert_twins_agree(
            race(
                partial(ledger.record_payment_result, context, cmd),
                partial(ledger.record_payment_result, context, cmd),
            )
        )

        assert db.topics(p.sale_id).count("posledger.PaymentApproved") == 1
        assert db.command_count() == len(
            {(r["merchant_id"], r["request_id"]) for r in db.commands()}
        )


def test_concurrent_twins_of_a_one_shot_command_both_get_the_answer(ledger: Ledger, db: Db) -> None:
    """Commands the state forbids a second time (cancel, pay the whole due) still replay."""
    for _ in range(4):
        sale_id = str(open_sale(ledger).id)
        cancel, cancel_cmd = ctx(), c.CancelSale(sale_id, "customer left")
        _assert_twins_agree(
            race(
                partial(ledger.cancel_sale, cancel, cancel_cmd),
                partial(ledger.cancel_sale, cancel, cancel_cmd),
            )
        )
        assert db.topics(sale_id).count("posledger.SaleCanceled") == 1

        sale = open_sale(ledger)
        pay, pay_cmd = ctx(), request_payment_cmd(str(sale.id), sale.total)
        first, _ = _assert_twins_agree(
            race(
                partial(ledger.request_payment, pay, pay_cmd),
                partial(ledger.request_payment, pay, pay_cmd),
            )
        )
        assert db.topics(sale.id).count("posledger.PaymentRequested") == 1
        assert list(ledger.get_sale(MERCHANT_A, str(sale.id)).payments) == [first.ids["payment_id"]]


TwinCommand = Callable[[Ledger, str], Callable[[], SaleResult]]

# Commands whose second copy, run on the state the first left, would fail on its own.
# Each is bound to one request id: calling it twice sends the same request twice.
ONE_SHOT: dict[str, TwinCommand] = {
    "cancel_sale": lambda led, sale_id: partial(
        led.cancel_sale, ctx(), c.CancelSale(sale_id, "customer left")
    ),
    "add_line_item_at_expected_version": lambda led, sale_id: partial(
        led.add_line_item,
        Context(MERCHANT_A, new_request_id(), expected_version=1),
        c.AddLineItem(sale_id, BAGEL),
    ),
}


@pytest.mark.parametrize("command", sorted(ONE_SHOT))
def test_a_twin_that_arrives_just_after_the_first_commits_gets_the_same_answer(
    ledger: Ledger, db: Db, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """The worst interleaving, made deterministic.

    The second request has been received (no record of it exists yet), then the first
    commits, then the second loads the sale: it must get the first one's answer, not
    SALE_NOT_OPEN or VERSION_CONFLICT.
    """
    sale_id = str(open_sale(ledger).id)
    send = ONE_SHOT[command](ledger, sale_id)
    real_reading = ledger._reading
    armed = [True]
    twin: list[SaleResult] = []

    @contextmanager
    def let_the_twin_commit_then_read(*, fresh: bool) -> Iterator[ReadSet]:
        if armed:
            armed.clear()
            twin.append(send())  # runs to its commit right here
        with real_reading(fresh=fresh) as reads:
            yield reads

    monkeypatch.setattr(ledger, "_reading", let_the_twin_commit_then_read)
    before = db.event_count()
    second = send()

    assert not twin[0].replayed
    assert second.replayed
    assert_same_answer(twin[0], second)
    assert db.event_count() == before + 1
    assert [row.originator_version for row in db.events(sale_id)] == [1, 2]


# ---- the record and the events commit together ---------------------------------------------


def test_no_events_are_written_when_the_command_record_fails(ledger: Ledger, db: Db) -> None:
    context = ctx()
    created = ledger.create_sale(context, create_sale_cmd(COFFEE))
    sale: object = ledger.repository.get(created.sale.id)
    assert isinstance(sale, Sale)
    sale.add_line_item(BAGEL)
    duplicate = CommandRecord(
        merchant_id=MERCHANT_A,
        request_id=context.request_id,  # already recorded by create_sale
        command="AddLineItem",
        fingerprint="x" * 64,
        aggregate_id=sale.id,
        aggregate_version=sale.version,
    )
    before = (db.event_count(), db.command_count())

    with pytest.raises(IntegrityError) as error:
        ledger.save(sale, command_record=duplicate)

    assert is_duplicate_command(error.value)
    assert (db.event_count(), db.command_count()) == before
    assert db.topics(sale.id) == ["posledger.SaleCreated"]
    assert ledger.get_sale(MERCHANT_A, str(sale.id)).version == 1
    record = ledger.ledger_recorder.select_command_record(MERCHANT_A, context.request_id)
    assert record is not None
    assert record.command == "CreateSale"


def test_no_command_record_is_written_when_the_events_clash(ledger: Ledger, db: Db) -> None:
    sale_id = open_sale(ledger).id
    mine: object = ledger.repository.get(sale_id)
    theirs: object = ledger.repository.get(sale_id)
    assert isinstance(mine, Sale)
    assert isinstance(theirs, Sale)
    theirs.attach_customer("cust-1")
    ledger.save(theirs)
    mine.add_line_item(BAGEL)
    request_id = new_request_id()
    record = CommandRecord(
        merchant_id=MERCHANT_A,
        request_id=request_id,
        command="AddLineItem",
        fingerprint="y" * 64,
        aggregate_id=mine.id,
        aggregate_version=mine.version,
    )
    before = (db.event_count(), db.command_count())

    with pytest.raises(IntegrityError) as error:
        ledger.save(mine, command_record=record)

    assert not is_duplicate_command(error.value)
    assert (db.event_count(), db.command_count()) == before
    assert ledger.ledger_recorder.select_command_record(MERCHANT_A, request_id) is None
    assert db.topics(sale_id) == ["posledger.SaleCreated", "posledger.SaleCustomerAttached"]
