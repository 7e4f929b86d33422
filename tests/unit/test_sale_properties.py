"""Properties of the Sale aggregate over random command sequences.

Each step validates a command the way the application does, applies it to the sale and
ignores refusals (DomainError). After every step the money invariants hold, and the sale
rebuilt from its recorded events looks exactly like the live one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain.commands import (
    CARD_TENDERS,
    AddLineItem,
    AttachCustomer,
    CancelPayment,
    CancelSale,
    CardInput,
    Channel,
    EntryMethod,
    LineItemInput,
    Outcome,
    RecordPaymentResult,
    RefundPayment,
    RemoveLineItem,
    RequestPayment,
    Tender,
    validate,
)
from ledger.domain.errors import DomainError
from ledger.domain.money import MAX_AMOUNT
from ledger.domain.sale import PaymentStatus, Sale, SaleStatus

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
CARD = CardInput(brand="visa", last4="4242", entry_method=EntryMethod.CONTACTLESS)


# ---- steps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddItem:
    quantity: int
    unit_price: int
    discount_percent: int
    tax_rate_ppm: int

    def run(self, sale: Sale) -> None:
        gross = self.quantity * self.unit_price
        item = LineItemInput(
            sku="SKU",
            name="Item",
            quantity=self.quantity,
            unit_price=self.unit_price,
            discount=gross * self.discount_percent // 100,
            tax_rate_ppm=self.tax_rate_ppm,
        )
        validate(AddLineItem(sale_id=str(sale.id), line_item=item))
        sale.add_line_item(item)


@dataclass(frozen=True)
class RemoveItem:
    index: int

    def run(self, sale: Sale) -> None:
        lines = sale.line_items
        line_id = lines[self.index % len(lines)].line_id if lines else UNKNOWN_ID
        validate(RemoveLineItem(sale_id=str(sale.id), line_id=line_id))
        sale.remove_line_item(line_id)


@dataclass(frozen=True)
class Attach:
    customer_id: str

    def run(self, sale: Sale) -> None:
        validate(AttachCustomer(sale_id=str(sale.id), customer_id=self.customer_id))
        sale.attach_customer(self.customer_id)


@dataclass(frozen=True)
class Request:
    amount: int | str | None  # None: whatever is due; "line": one line item's total
    line_index: int
    tenders: tuple[Tender, ...]
    currency_code: str

    def run(self, sale: Sale) -> None:
        if self.amount is None:
            amount = sale.amount_due
        elif self.amount == "line" and sale.line_items:
            amount = sale.line_items[self.line_index % len(sale.line_items)].total_amount
        else:
            amount = self.amount if isinstance(self.amount, int) else 1
        command = RequestPayment(
            sale_id=str(sale.id),
            amount=amount,
            currency_code=self.currency_code,
            tender_types=self.tenders,
            callback_url="https://pos.example.com/cb",
            app_id="pos-app",
            api_version="1.0",
        )
        validate(command)
        sale.request_payment(
            amount=amount,
            currency_code=self.currency_code,
            tender_types=list(self.tenders),
            callback_url=command.callback_url,
            app_id=command.app_id,
            api_version=command.api_version,
        )


def _payment_id(sale: Sale, index: int) -> str:
    ids = list(sale.payments)
    return ids[index % len(ids)] if ids else UNKNOWN_ID


@dataclass(frozen=True)
class Result:
    index: int
    pending_first: bool  # pick among pending payments when there are any
    outcome: Outcome
    tender_index: int  # into the payment's tender types; past the end: a tender not allowed
    approved_percent: int | None  # None: the amount requested
    tip_amount: int
    cash_over: int | None  # cash handed over beyond what is owed; None: not reported
    change_error: int

    def run(self, sale: Sale) -> None:
        command = self.command(sale)
        validate(command)
        sale.record_payment_result(command)

    def command(self, sale: Sale) -> RecordPaymentResult:
        pending = [p for p in sale.payments.values() if p.status is PaymentStatus.PENDING]
        if self.pending_first and pending:
            payment_id = pending[self.index % len(pending)].id
        else:
            payment_id = _payment_id(sale, self.index)
        payment = sale.payments.get(payment_id)
        allowed = payment.tender_types if payment else ["card"]
        tender = Tender(allowed[self.tender_index] if self.tender_index < len(allowed) else "other")
        approved = self.outcome is Outcome.APPROVED
        approved_amount = None
        if approved and self.approved_percent is not None and payment is not None:
            approved_amount = max(1, payment.amount * self.approved_percent // 100)
        cash_tendered = change_given = 0
        if approved and tender is Tender.CASH and self.cash_over is not None and payment:
            owed = (approved_amount or payment.amount) + self.tip_amount
            cash_tendered = owed + self.cash_over
            change_given = self.cash_over + self.change_error
        return RecordPaymentResult(
            sale_id=str(sale.id),
            payment_id=payment_id,
            outcome=self.outcome,
            tender=tender,
            card=CARD if tender in CARD_TENDERS else None,
            auth_code="A1" if approved else "",
            approved_amount=approved_amount,
            tip_amount=self.tip_amount if approved else 0,
            cash_tendered=cash_tendered,
            change_given=change_given,
            error_code="" if approved else "E1",
        )


@dataclass(frozen=True)
class CancelPaymentStep:
    index: int

    def run(self, sale: Sale) -> None:
        payment_id = _payment_id(sale, self.index)
        validate(CancelPayment(sale_id=str(sale.id), payment_id=payment_id))
        sale.cancel_payment(payment_id, "")


@dataclass(frozen=True)
class Refund:
    index: int
    amount: int | None  # None: all that is refundable

    def run(self, sale: Sale) -> None:
        payment_id = _payment_id(sale, self.index)
        payment = sale.payments.get(payment_id)
        amount = self.amount
        if amount is None:
            amount = payment.refundable if payment else 1
        validate(RefundPayment(sale_id=str(sale.id), payment_id=payment_id, amount=amount))
        sale.refund_payment(payment_id, amount, "", "")


@dataclass(frozen=True)
class Cancel:
    def run(self, sale: Sale) -> None:
        validate(CancelSale(sale_id=str(sale.id)))
        sale.cancel("")


Step = AddItem | RemoveItem | Attach | Request | Result | CancelPaymentStep | Refund | Cancel

small_amounts = st.integers(min_value=1, max_value=3000)
add_items = st.builds(
    AddItem,
    quantity=st.integers(1, 4),
    unit_price=st.integers(0, 19).map(lambda i: MAX_AMOUNT // 2 if i == 13 else i * 125),
    discount_percent=st.sampled_from([0, 0, 10, 50, 100]),
    tax_rate_ppm=st.sampled_from([0, 50_000, 88_750, 100_000, 1_000_000]),
)
requests = st.builds(
    Request,
    amount=st.one_of(st.none(), st.just("line"), small_amounts),
    line_index=st.integers(0, 5),
    tenders=st.lists(st.sampled_from(list(Tender)), min_size=1, max_size=3, unique=True).map(tuple),
    currency_code=st.integers(0, 9).map(lambda i: "EUR" if i == 7 else "USD"),
)
results = st.builds(
    Result,
    index=st.integers(0, 20),
    pending_first=st.sampled_from([True, True, True, False]),
    outcome=st.sampled_from([Outcome.APPROVED] * 4 + list(Outcome)),
    tender_index=st.sampled_from([0, 0, 1, 2, 3]),
    approved_percent=st.one_of(st.none(), st.none(), st.integers(1, 110)),
    tip_amount=st.sampled_from([0, 0, 50]),
    cash_over=st.one_of(st.none(), st.integers(0, 500)),
    change_error=st.sampled_from([0, 0, 0, 1]),
)
# Weighted by repetition: payments and results often, canceling the whole sale rarely.
weighted_steps: list[st.SearchStrategy[Step]] = [
    *[add_items] * 3,
    st.builds(RemoveItem, index=st.integers(0, 20)),
    st.builds(Attach, customer_id=st.sampled_from(["c-1", "c-2"])),
    *[requests] * 5,
    *[results] * 6,
    st.builds(CancelPaymentStep, index=st.integers(0, 20)),
    *[st.builds(Refund, index=st.integers(0, 20), amount=st.one_of(st.none(), small_amounts))] * 2,
    st.just(Cancel()),
]
steps: st.SearchStrategy[Step] = st.sampled_from(weighted_steps).flatmap(lambda s: s)
initial_items = st.lists(
    st.builds(
        LineItemInput,
        sku=st.just("SKU"),
        name=st.just("Item"),
        quantity=st.integers(1, 3),
        unit_price=st.integers(1, 2000),
        discount=st.just(0),
        tax_rate_ppm=st.sampled_from([0, 88_750, 200_000]),
    ),
    min_size=1,
    max_size=3,
)


# ---- invariants ------------------------------------------------------------------------------


def net_paid(sale: Sale) -> int:
    return sale.paid_total - sale.refunded_total


def check_invariants(sale: Sale, step_events: list[str], all_events: list[str]) -> None:
    assert sale.total == sale.subtotal - sale.discount_total + sale.tax_total
    assert 0 <= sale.total <= MAX_AMOUNT
    assert sale.amount_due >= 0
    assert sale.pending_total >= 0
    assert 0 <= sale.refunded_total <= sale.paid_total
    assert 0 <= sale.tip_total <= MAX_AMOUNT
    for line in sale.line_items:
        assert 0 <= line.discount <= line.gross_amount
        assert line.total_amount == line.gross_amount - line.discount + line.tax_amount
    late = [p for p in sale.payments.values() if p.is_late]
    for payment in sale.payments.values():
        if payment.is_late:  # approved after a cancel: all it took goes back
            assert 0 <= payment.refunded_amount <= payment.approved_amount + payment.tip_amount
            assert payment.approved_amount <= payment.amount
            continue
        assert 0 <= payment.refunded_amount <= payment.approved_amount <= payment.amount
        if payment.status is not PaymentStatus.APPROVED:
            assert payment.approved_amount == payment.refunded_amount == 0
    assert sale.refunded_total == sum(
        p.refunded_amount for p in sale.payments.values() if not p.is_late
    )
    assert sum(r.amount for r in sale.refunds) == sale.refunded_total + sum(
        p.refunded_amount for p in late
    )
    # Money taken is never missing: what paid the sale, or what is owed back or was returned.
    assert sale.owed_total == sum(
        p.approved_amount + p.tip_amount - p.refunded_amount for p in late
    )
    assert sale.owed_total >= 0

    if sale.status is SaleStatus.OPEN:
        assert net_paid(sale) + sale.pending_total + sale.amount_due == sale.total
        # An open sale is never fully paid: reaching the total completes it at once.
        assert sale.total == 0 or net_paid(sale) < sale.total
    else:
        assert sale.amount_due == 0
        assert sale.pending_total == 0

    # Completed iff (once) net payments reached the total.
    assert all_events.count("Completed") <= 1
    assert sale.is_completed == ("Completed" in all_events)
    if "Completed" in step_events:
        assert net_paid(sale) == sale.total > 0
    if sale.status is SaleStatus.REFUNDED:
        assert sale.is_completed
        assert sale.refunded_total == sale.paid_total > 0
    if sale.status is SaleStatus.CANCELED:
        assert net_paid(sale) == 0
        assert not sale.is_completed

    # Once settled, a sale only ever records refunds, and approvals that come after their
    # payment was canceled (money taken is always recorded).
    settled = {"PaymentRefunded", "PaymentApprovedAfterCancel"}
    if "Completed" in all_events:
        after = all_events[all_events.index("Completed") + 1 :]
        assert set(after) <= settled
    if "Canceled" in all_events:
        assert set(all_events[all_events.index("Canceled") + 1 :]) <= settled


DERIVED = (
    "version",
    "created_on",
    "modified_on",
    "status",
    "subtotal",
    "discount_total",
    "tax_total",
    "total",
    "paid_total",
    "tip_total",
    "refunded_total",
    "pending_total",
    "committed_total",
    "amount_due",
    "owed_total",
)


def observable(sale: Sale) -> dict[str, Any]:
    """Everything the sale holds (every attribute but its pending events) and derives."""
    state = {name: value for name, value in vars(sale).items() if name != "_pending_events"}
    state.update((name, getattr(sale, name)) for name in DERIVED)
    state["payment_order"] = list(sale.payments)
    state["payments"] = [asdict(p) for p in sale.payments.values()]
    state["line_items"] = [asdict(line) for line in sale.line_items]
    state["refunds"] = [asdict(r) for r in sale.refunds]
    return state


def replay(events: list[CanMutateAggregate[UUID]]) -> Sale:
    aggregate: Sale | None = None
    for event in events:
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, Sale)
    return aggregate


def stored_and_decoded(events: list[CanMutateAggregate[UUID]]) -> list[CanMutateAggregate[UUID]]:
    """The events as the event store writes and reads them (same transcodings)."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[UUID] = Mapper(transcoder=transcoder)
    decoded = []
    for event in events:
        stored = mapper.to_stored_event(event)
        assert stored.topic.startswith("posledger.")  # stable names, not module paths
        again = mapper.to_domain_event(stored)
        assert isinstance(again, CanMutateAggregate)
        decoded.append(again)
    return decoded


def new_sale(items: list[LineItemInput]) -> Sale:
    return Sale.create(
        merchant_id="merchant-1",
        location_id="store-1",
        channel=Channel.IN_STORE,
        currency_code="USD",
        line_items=tuple(items),
    )


# ---- properties ------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(items=initial_items, script=st.lists(steps, min_size=12, max_size=40))
def test_invariants_hold_and_replay_equals_live_state(
    items: list[LineItemInput], script: list[Step]
) -> None:
    sale = new_sale(items)
    events: list[CanMutateAggregate[UUID]] = list(sale.collect_events())
    names = [type(e).__name__ for e in events]
    check_invariants(sale, names, names)

    for step in script:
        version = sale.version
        try:
            step.run(sale)
        except DomainError:
            new_events = list(sale.collect_events())
            assert new_events == [], "a refused command records nothing"
            assert sale.version == version
            continue
        new_events = list(sale.collect_events())
        assert sale.version == version + len(new_events)
        events.extend(new_events)
        step_names = [type(e).__name__ for e in new_events]
        names.extend(step_names)
        check_invariants(sale, step_names, names)
        assert observable(replay(events)) == observable(sale)

    assert observable(replay(stored_and_decoded(events))) == observable(sale)


@PROPERTY_SETTINGS
@given(items=initial_items, script=st.lists(steps, min_size=12, max_size=40))
def test_repeating_a_recorded_result_records_nothing(
    items: list[LineItemInput], script: list[Step]
) -> None:
    sale = new_sale(items)
    for step in script:
        command = step.command(sale) if isinstance(step, Result) else None
        try:
            if command is None:
                step.run(sale)
            else:
                validate(command)
                sale.record_payment_result(command)
        except DomainError:
            continue
        finally:
            sale.collect_events()
        if command is not None:
            before = observable(sale)
            sale.record_payment_result(command)  # the very same result again
            assert list(sale.collect_events()) == []
            assert observable(sale) == before
