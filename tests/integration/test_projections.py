"""The read side against the real event store: views follow the log exactly once.

Every test compares views with the domain (aggregates loaded by the ledger itself) or with a
fresh rebuild from the start of the log; no test mocks the store. A view's `apply` is
wrapped only where a test needs a crash in the middle of a page, or to see who applied it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import Cursor
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.application import Context, Ledger
from ledger.application.sales import expire_request_id
from ledger.bootstrap import build_views
from ledger.domain import commands as c
from ledger.domain import customer as cust
from ledger.domain import inventory as inv
from ledger.domain import product as prod
from ledger.domain.errors import DomainError, InvalidRequest, NotYetVisible
from ledger.domain.inventory import AdjustmentReason, StockItem
from ledger.domain.sale import Payment, PaymentStatus, Sale
from ledger.store import Settings
from projections import Projections
from projections.queries import ReadModels, SaleFilters
from projections.view import Event
from tests.integration.catalog_support import (
    catalog_line,
    create_product,
    new_sale,
    pay_in_full,
    receive,
)
from tests.integration.conftest import CARD, EVENTS_TABLE, MERCHANT_A, ctx, request_payment_cmd
from tests.integration.projection_support import (
    LOCATIONS,
    VIEW_NAMES,
    assert_catalog_matches_domain,
    assert_customers_match_domain,
    assert_inventory_matches_domain,
    assert_orders_match_domain,
    assert_rebuild_matches,
    catch_up,
    fresh_ledger,
    head,
    ready_projections,
    view_contents,
    view_rows,
)

ApplyFn = Callable[[Cursor[DictRow], str, Sequence[Event]], None]


@pytest.fixture
def projections(ledger: Ledger) -> Projections:
    """The ledger's views, set up (the `settings` fixture drops their schemas afterwards)."""
    return ready_projections(ledger)


# ---- 1. property: every view equals its rebuild and the domain --------------------------------


@dataclass(frozen=True)
class NewProduct:
    price: int
    tax_rate_ppm: int


@dataclass(frozen=True)
class UpdatePrice:
    product: int
    price: int


@dataclass(frozen=True)
class Discontinue:
    product: int


@dataclass(frozen=True)
class StockMove:
    kind: str  # receive, adjust, count, transfer
    product: int
    location: int
    quantity: int


@dataclass(frozen=True)
class NewCustomer:
    name: str
    consent: bool


@dataclass(frozen=True)
class RenameCustomer:
    customer: int
    name: str


@dataclass(frozen=True)
class NewSale:
    lines: tuple[tuple[int | None, int], ...]  # (product index or None for an open item, qty)
    customer: int | None
    location: int
    currency: str
    channel: c.Channel = c.Channel.IN_STORE


@dataclass(frozen=True)
class SaleAction:
    kind: (
        str  # add_line, remove_line, attach, pay, approve, decline, cancel_payment, refund, cancel
    )
    sale: int
    arg: int  # a product/customer/line index, or a percentage of an amount
    restock: bool = False


@dataclass(frozen=True)
class Import:
    lines: tuple[tuple[int, int], ...]  # (product index, qty)
    customer: int | None
    repeat: bool  # the previous order's external id again: a duplicate or a conflict
    open: bool = False  # not yet paid: it reserves like an online sale, paid by sale actions


@dataclass(frozen=True)
class Step:
    view: str
    page_size: int


@dataclass(frozen=True)
class Rebuild:
    view: str


Op = (
    NewProduct | UpdatePrice | Discontinue | StockMove | NewCustomer | RenameCustomer | NewSale
    | SaleAction | Import | Step | Rebuild
)  # fmt: skip

SALE_ACTIONS = (
    "add_line remove_line attach pay pay_approve pay_approve approve decline cancel_payment"
    " late_approve pay_expire expire refund refund cancel"
).split()
index = st.integers(0, 2) | st.integers(0, 50)  # mostly one of the newest few
sale_actions = st.builds(
    SaleAction, st.sampled_from(SALE_ACTIONS), index, st.integers(1, 100), st.booleans()
)
new_sales = st.builds(
    NewSale,
    st.lists(st.tuples(st.none() | index, st.integers(1, 4)), min_size=1, max_size=3).map(tuple),
    st.none() | index,
    st.integers(0, 1),
    st.sampled_from(["USD", "USD", "EUR"]),
    st.sampled_from([c.Channel.IN_STORE, c.Channel.ONLINE, c.Channel.MARKETPLACE, c.Channel.PHONE]),
)
new_products = st.builds(NewProduct, st.integers(0, 5000), st.sampled_from([0, 80_000, 200_000]))
stock_moves = st.builds(
    StockMove,
    st.sampled_from(["receive", "adjust", "count", "transfer"]),
    index,
    st.integers(0, 1),
    st.integers(-5, 20),
)
# `one_of` picks its branches evenly: repeats weight them (sale actions about a third).
ops: st.SearchStrategy[Op] = st.one_of(
    new_products,
    new_products,
    st.builds(UpdatePrice, index, st.integers(0, 5000)),
    st.builds(Discontinue, index),
    stock_moves,
    stock_moves,
    st.builds(NewCustomer, st.sampled_from(["Ann", "Bob", "Cy", "Dee"]), st.booleans()),
    st.builds(RenameCustomer, index, st.sampled_from(["Eve", "Fay"])),
    new_sales,
    new_sales,
    *[sale_actions] * 8,
    st.builds(
        Import,
        st.lists(st.tuples(index, st.integers(1, 3)), min_size=1, max_size=2).map(tuple),
        st.none() | index,
        st.booleans(),
        st.booleans(),
    ),
    st.builds(Step, st.sampled_from(VIEW_NAMES), st.integers(1, 6)),
    st.builds(Rebuild, st.sampled_from(VIEW_NAMES)),
)


class World:
    """Runs random commands against one ledger and remembers what they created."""

    def __init__(self, ledger: Ledger, projections: Projections) -> None:
        self.ledger = ledger
        self.projections = projections
        self.products: list[str] = []
        self.customers: list[str] = []
        self.sales: list[str] = []
        self.imports = 0
        # Every approval the ledger accepted: payment id -> (sale id, approved amount, tip).
        self.approvals: dict[str, tuple[str, int, int]] = {}
        # Every payment the ledger expired: payment id -> sale id.
        self.expired: dict[str, str] = {}

    def pick(self, items: list[str], i: int | None) -> str | None:
        """The i-th newest item: small indexes (the likeliest) keep working on one sale."""
        return items[-1 - i % len(items)] if items and i is not None else None

    def run(self, op: Op) -> None:
        # A refusal records nothing; the views must agree with that too.
        with contextlib.suppress(DomainError):
            self._run(op)

    def _run(self, op: Op) -> None:
        led = self.ledger
        match op:
            case NewProduct():
                sku = f"SKU-{len(self.products)}"
                product = create_product(led, sku=sku, price=op.price, tax_rate_ppm=op.tax_rate_ppm)
                self.products.append(str(product.id))
            case UpdatePrice():
                if (pid := self.pick(self.products, op.product)) is not None:
                    cmd = prod.UpdateProduct(pid, (("price", op.price),))
                    led.update_product(ctx(), cmd)
            case Discontinue():
                if (pid := self.pick(self.products, op.product)) is not None:
                    led.discontinue_product(ctx(), prod.DiscontinueProduct(pid, "gone"))
            case StockMove():
                self._stock(op)
            case NewCustomer():
                channel = c.Channel.IN_STORE if op.consent else None
                new = cust.CreateCustomer(
                    name=op.name, marketing_consent=op.consent, consent_channel=channel
                )
                self.customers.append(str(led.create_customer(ctx(), new).aggregate.id))
            case RenameCustomer():
                if (cid := self.pick(self.customers, op.customer)) is not None:
                    led.update_customer(ctx(), cust.UpdateCustomer(cid, (("name", op.name),)))
            case NewSale():
                sale_cmd = c.CreateSale(
                    location_id=LOCATIONS[op.location],
                    channel=op.channel,
                    currency_code=op.currency,
                    line_items=tuple(self._line(p, q) for p, q in op.lines),
                    customer_id=self.pick(self.customers, op.customer) or "",
                )
                self.sales.append(str(led.create_sale(ctx(), sale_cmd).sale.id))
            case SaleAction():
                if (sid := self.pick(self.sales, op.sale)) is not None:
                    self._sale_action(op, sid)
            case Import():
                self._import(op)
            case Step():
                self.projections.step(self.projections.views[op.view], op.page_size)
            case Rebuild():
                self.projections.rebuild(op.view)

    def _line(self, product: int | None, quantity: int) -> c.LineItemInput:
        pid = self.pick(self.products, product)
        if pid is None:
            return c.LineItemInput(sku="OPEN", name="Open item", quantity=quantity, unit_price=250)
        sku = self.ledger.get_product(MERCHANT_A, pid).sku
        return catalog_line(sku=sku, quantity=quantity)

    def _stock(self, op: StockMove) -> None:
        pid = self.pick(self.products, op.product)
        if pid is None:
            return
        loc = LOCATIONS[op.location]
        led = self.ledger
        match op.kind:
            case "receive":
                led.receive_stock(ctx(), inv.ReceiveStock(pid, loc, max(op.quantity, 1)))
            case "adjust":
                reason = AdjustmentReason.CORRECTION
                led.adjust_stock(ctx(), inv.AdjustStock(pid, loc, op.quantity or 1, reason))
            case "count":
                led.record_stock_count(ctx(), inv.RecordStockCount(pid, loc, abs(op.quantity)))
            case _:
                other = LOCATIONS[1 - op.location]
                cmd = inv.TransferStock(pid, loc, other, max(op.quantity, 1))
                led.transfer_stock(ctx(), cmd)

    def _sale_action(self, op: SaleAction, sale_id: str) -> None:
        led = self.ledger
        sale: Sale = led.get_sale(MERCHANT_A, sale_id)
        pending = [p for p in sale.payments.values() if p.status is PaymentStatus.PENDING]
        ended = (PaymentStatus.CANCELED, PaymentStatus.EXPIRED)
        canceled = [p for p in sale.payments.values() if p.status in ended]
        approved = [p for p in sale.payments.values() if p.refundable > 0]
        match op.kind:
            case "add_line":
                line = self._line(op.arg if op.arg % 3 else None, 1 + op.arg % 3)
                led.add_line_item(ctx(), c.AddLineItem(sale_id, line))
            case "remove_line" if sale.line_items:
                line_id = sale.line_items[op.arg % len(sale.line_items)].line_id
                led.remove_line_item(ctx(), c.RemoveLineItem(sale_id, line_id))
            case "attach" if self.customers:
                customer = self.customers[op.arg % len(self.customers)]
                led.attach_customer(ctx(), c.AttachCustomer(sale_id, customer))
            case "pay" | "pay_approve" | "pay_expire":
                amount = max(1, sale.amount_due * op.arg // 100)
                cmd = request_payment_cmd(sale_id, amount)
                requested = led.request_payment(ctx(), cmd)
                payment_id = requested.ids["payment_id"]
                if op.kind == "pay_approve":
                    self._approve(_approval(sale_id, payment_id))
                if op.kind == "pay_expire":
                    self._expire(requested.sale.payment(payment_id), sale_id)
            case "approve" if pending:
                result = c.RecordPaymentResult(
                    sale_id=sale_id,
                    payment_id=pending[0].id,
                    outcome=c.Outcome.APPROVED,
                    tender=c.Tender.CARD,
                    card=CARD,
                    auth_code="OK",
                    tip_amount=op.arg if op.restock else 0,
                )
                self._approve(result)
            case "late_approve" if canceled:
                self._approve(_approval(sale_id, canceled[0].id))
            case "expire" if pending:
                self._expire(pending[0], sale_id)
            case "decline" if pending:
                result = c.RecordPaymentResult(
                    sale_id=sale_id,
                    payment_id=pending[0].id,
                    outcome=c.Outcome.DECLINED,
                    tender=c.Tender.CARD,
                    card=CARD,
                )
                led.record_payment_result(ctx(), result)
            case "cancel_payment" if pending:
                led.cancel_payment(ctx(), c.CancelPayment(sale_id, pending[0].id, "changed mind"))
            case "refund" if approved:
                payment = approved[0]
                stocked = [line for line in sale.line_items if line.product_id]
                restock = (c.RestockItem(stocked[0].line_id, 1),) if op.restock and stocked else ()
                amount = max(1, payment.refundable * op.arg // 100)
                refund = c.RefundPayment(sale_id, payment.id, amount, restock_items=restock)
                led.refund_payment(ctx(), refund)
            case "cancel":
                led.cancel_sale(ctx(), c.CancelSale(sale_id, "walked out"))
            case _:
                pass

    def _expire(self, payment: Payment, sale_id: str) -> None:
        """As the expiry worker does once the deadline has passed; its retry (or a second
        worker) records nothing more."""
        assert payment.expires_at is not None
        expire = c.ExpirePayment(sale_id, payment.id)
        by_worker = Context(MERCHANT_A, request_id=expire_request_id(payment.id))
        due = payment.expires_at + timedelta(seconds=1)
        assert not self.ledger.expire_payment(by_worker, expire, now=due).replayed
        assert self.ledger.expire_payment(by_worker, expire, now=due).replayed
        self.expired[payment.id] = sale_id

    def _approve(self, result: c.RecordPaymentResult) -> None:
        outcome = self.ledger.record_payment_result(ctx(), result)
        payment = outcome.sale.payment(result.payment_id)
        self.approvals[payment.id] = (result.sale_id, payment.approved_amount, payment.tip_amount)

    def _import(self, op: Import) -> None:
        lines = []
        for p, quantity in op.lines:
            pid = self.pick(self.products, p)
            if pid is None:
                return
            product = self.ledger.get_product(MERCHANT_A, pid)
            lines.append(
                c.LineItemInput(
                    sku=product.sku,
                    name=product.name,
                    quantity=quantity,
                    unit_price=product.price + 1,
                    tax_rate_ppm=0,
                )
            )
        if not op.repeat or not self.imports:
            self.imports += 1
        total = sum(line.quantity * (line.unit_price or 0) for line in lines)
        order = c.ImportOrder(
            channel="webshop",
            external_order_id=f"EXT-{self.imports}",
            sales_channel=c.Channel.ONLINE,
            location_id=LOCATIONS[0],
            currency_code="USD",
            line_items=tuple(lines),
            payments=()
            if op.open
            else (c.ImportedPayment(tender=c.Tender.CARD, amount=total, card=CARD),),
            customer_id=self.pick(self.customers, op.customer) or "",
            open=op.open,
        )
        (result,) = self.ledger.import_sales(ctx(), [order])
        if result.sale_id and result.sale_id not in self.sales:
            self.sales.append(result.sale_id)


@hypothesis_settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=st.lists(ops, min_size=1, max_size=40), follow=st.none() | st.integers(1, 4))
def test_views_equal_a_rebuild_and_the_domain(
    database_url: str, steps: list[Op], follow: int | None
) -> None:
    """`follow`: after each command every view applies one page of that many events, as a
    live runner would, so live pages end in other places than a rebuild's."""
    with fresh_ledger(database_url) as ledger:
        projections = ready_projections(ledger)
        world = World(ledger, projections)
        for op in steps:
            world.run(op)
            if follow is not None:
                for view in projections.views.values():
                    projections.step(view, follow)
        catch_up(projections)
        assert_world_holds(ledger, projections, world)


PAYMENT_ACTIONS = (
    "pay pay pay_approve pay_expire approve decline cancel_payment expire expire late_approve"
    " refund cancel add_line"
).split()
# Payments on the newest sales, in one currency, so that most of them go through: mostly
# payment actions (`one_of` would pick its three branches evenly), some new sales and stock.
payment_heavy_branches: dict[str, st.SearchStrategy[Op]] = {
    "sale": st.builds(
        NewSale,
        st.lists(st.tuples(st.integers(0, 1), st.integers(1, 3)), min_size=1, max_size=2).map(
            tuple
        ),
        st.none(),
        st.just(0),
        st.just("USD"),
        st.sampled_from([c.Channel.IN_STORE, c.Channel.ONLINE, c.Channel.PHONE]),
    ),
    "stock": st.builds(
        StockMove, st.just("receive"), st.integers(0, 1), st.just(0), st.integers(1, 3)
    ),
    "action": st.builds(
        SaleAction,
        st.sampled_from(PAYMENT_ACTIONS),
        st.integers(0, 1),
        st.integers(1, 100),
        st.booleans(),
    ),
    # An open order from a web shop: it reserves (or is rejected short), then is paid,
    # expires or is canceled by the same actions as any sale.
    "import": st.builds(
        Import,
        st.lists(st.tuples(st.integers(0, 1), st.integers(1, 3)), min_size=1, max_size=2).map(
            tuple
        ),
        st.none(),
        st.booleans(),
        st.just(True),
    ),
}
payment_heavy: st.SearchStrategy[Op] = st.sampled_from(
    ["sale", "sale", "import", "stock", *["action"] * 7]
).flatmap(payment_heavy_branches.__getitem__)


@hypothesis_settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=st.lists(payment_heavy, min_size=10, max_size=30))
def test_payments_that_expire_or_arrive_late_keep_stock_and_money_whole(
    database_url: str, steps: list[Op]
) -> None:
    """Sales on several channels and open imported orders, whose payments succeed, fail, are
    canceled, expire and are approved late, against little stock: the same invariants as
    above."""
    with fresh_ledger(database_url) as ledger:
        projections = ready_projections(ledger)
        world = World(ledger, projections)
        given_stock = [NewProduct(500, 0), NewProduct(900, 0)] + [
            StockMove("receive", product, 0, 4) for product in (0, 1)
        ]
        for op in [*given_stock, *steps]:
            world.run(op)
        catch_up(projections)
        assert_world_holds(ledger, projections, world)


def assert_world_holds(ledger: Ledger, projections: Projections, world: World) -> None:
    sales = set(world.sales)
    assert_orders_match_domain(ledger, projections, MERCHANT_A, sales)
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, world.products)
    assert_catalog_matches_domain(ledger, projections, MERCHANT_A, world.products)
    assert_customers_match_domain(ledger, projections, MERCHANT_A, world.customers, sales)
    assert_rebuild_matches(projections)
    assert_reservations_hold(ledger, world)
    # Every approval ever reported is in the ledger, paying the sale or owed back.
    for payment_id, (sale_id, approved, tip) in world.approvals.items():
        payment = ledger.get_sale(MERCHANT_A, sale_id).payment(payment_id)
        assert payment.status in (PaymentStatus.APPROVED, PaymentStatus.APPROVED_AFTER_CANCEL)
        assert (payment.approved_amount, payment.tip_amount) == (approved, tip)
    # Every expiry is one event, whatever came after it.
    for payment_id, sale_id in world.expired.items():
        expiries = [
            e
            for e in ledger.events.get(uuid.UUID(sale_id))
            if isinstance(e, Sale.PaymentExpired) and e.payment_id == payment_id
        ]
        assert len(expiries) == 1
        status = ledger.get_sale(MERCHANT_A, sale_id).payment(payment_id).status
        assert status in (PaymentStatus.EXPIRED, PaymentStatus.APPROVED_AFTER_CANCEL)


def assert_reservations_hold(ledger: Ledger, world: World) -> None:
    """Reserved is what open sales hold; no sale of a channel that must not oversell ever
    reserved more than was available; on-hand is the sum of the item's movements."""
    sales = {sid: ledger.get_sale(MERCHANT_A, sid) for sid in world.sales}
    for product_id in world.products:
        for location in LOCATIONS:
            item = ledger.get_stock_item(MERCHANT_A, product_id, location)
            if item is None:
                continue
            held = {
                sid: sale.reservation()[product_id]
                for sid, sale in sales.items()
                if sale.location_id == location and sale.reservation()[product_id]
            }
            assert item.reservations == held, f"{product_id} at {location}"
            assert item.reserved == sum(held.values())
            level = inv.StockLevel()
            for event in ledger.events.get(item.id):
                if isinstance(event, StockItem.Reserved):
                    sale = sales.get(event.sale_id)
                    if sale is not None and not sale.may_oversell:
                        assert event.short == 0
                        assert level.available >= event.quantity
                if not isinstance(event, StockItem.Created):
                    level.move(event)
            assert level.values() == inv.StockLevel.of(vars(item)).values()
            assert item.on_hand == (
                item.received + item.returned + item.adjusted + item.transferred_in
                - item.sold - item.transferred_out + item.count_variance
            )  # fmt: skip


def test_a_refund_counts_for_the_customer_the_sale_named_then(
    ledger: Ledger, projections: Projections
) -> None:
    """A customer attached after a refund, with a page boundary in between: the live view
    and a rebuild (one big page) once disagreed about whose refund it was."""
    customer = ledger.create_customer(ctx(), cust.CreateCustomer(name="Ann")).aggregate
    sale_id = str(new_sale(ledger, c.LineItemInput("X", "X", 1, 1000)).sale.id)
    first = ledger.request_payment(ctx(), request_payment_cmd(sale_id, 400)).ids["payment_id"]
    ledger.record_payment_result(ctx(), _approval(sale_id, first))
    ledger.refund_payment(ctx(), c.RefundPayment(sale_id, first, 100))
    catch_up(projections, page_size=1)
    ledger.attach_customer(ctx(), c.AttachCustomer(sale_id, str(customer.id)))
    second = ledger.request_payment(ctx(), request_payment_cmd(sale_id, 700)).ids["payment_id"]
    ledger.record_payment_result(ctx(), _approval(sale_id, second))
    catch_up(projections, page_size=1)

    (spend,) = view_rows(projections, "customers", "customer_spend")
    assert (spend["orders"], spend["spend"], spend["refunds"]) == (1, 1000, 0)
    assert_customers_match_domain(ledger, projections, MERCHANT_A, [str(customer.id)], {sale_id})
    assert projections.rebuild("customers", verify=True).differences == []
    (spend,) = view_rows(projections, "customers", "customer_spend")
    assert spend["refunds"] == 0


def test_an_import_split_across_pages_keeps_its_channel(
    ledger: Ledger, projections: Projections
) -> None:
    """Found by the property above: an imported sale's first page lacked `SaleImported`."""
    product = create_product(ledger, price=500)
    order = c.ImportOrder(
        channel="webshop",
        external_order_id="EXT-1",
        sales_channel=c.Channel.ONLINE,
        location_id="loc-1",
        currency_code="USD",
        line_items=(c.LineItemInput(product.sku, "Mug", 2, 500, tax_rate_ppm=0),),
        payments=(c.ImportedPayment(tender=c.Tender.CARD, amount=1000, card=CARD),),
    )
    (result,) = ledger.import_sales(ctx(), [order])
    catch_up(projections, page_size=1)
    (row,) = view_rows(projections, "orders", "orders")
    assert (row["import_channel"], row["status"], row["paid_total"]) == (
        "webshop",
        "completed",
        1000,
    )
    assert_orders_match_domain(ledger, projections, MERCHANT_A, {result.sale_id})
    assert projections.rebuild("orders", verify=True).differences == []


def _approval(sale_id: str, payment_id: str) -> c.RecordPaymentResult:
    return c.RecordPaymentResult(
        sale_id=sale_id,
        payment_id=payment_id,
        outcome=c.Outcome.APPROVED,
        tender=c.Tender.CARD,
        card=CARD,
        auth_code="OK",
    )


# ---- 2. a crash in the middle of a page --------------------------------------------------------


def _stock_history(ledger: Ledger, sales: int = 6) -> list[str]:
    """Two products with receipts, counts, transfers and completed sales: many stock events."""
    products = [create_product(ledger, sku=f"P-{i}") for i in range(2)]
    for i in range(sales):
        product = products[i % 2]
        receive(ledger, product, 5 + i)
        sale = new_sale(ledger, catalog_line(sku=product.sku, quantity=1 + i % 3))
        pay_in_full(ledger, str(sale.sale.id))
        if i % 3 == 0:
            cmd = inv.TransferStock(str(product.id), "loc-1", "loc-2", 2)
            ledger.transfer_stock(ctx(), cmd)
    ledger.record_stock_count(ctx(), inv.RecordStockCount(str(products[0].id), "loc-1", 3))
    return [str(p.id) for p in products]


def _crash_halfway(original: ApplyFn, crashes: list[int]) -> ApplyFn:
    """An apply that writes the first half of its page, then fails (once per `crashes` entry)."""

    def apply(curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        if not crashes:
            original(curs, schema, events)
            return
        crashes.pop()
        original(curs, schema, events[: len(events) // 2])
        raise RuntimeError("power cut in the middle of a page")

    return apply


def test_a_crash_mid_page_commits_nothing_and_a_retry_counts_once(
    ledger: Ledger, projections: Projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    product_ids = _stock_history(ledger)
    view = projections.views["inventory"]
    assert projections.step(view, page_size=8) == 8
    _, position = projections.live_schema("inventory")
    before = view_contents(projections, "inventory")
    assert before["stock_movements"], "the first page wrote movements"

    written: list[int] = []
    original = view.apply

    def apply(curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        original(curs, schema, events[:4])
        table = Identifier(schema, "stock_movements")
        count = curs.execute(SQL("SELECT count(*) AS n FROM {}").format(table)).fetchone()
        assert count is not None
        written.append(count["n"])  # the half page is there, inside the transaction
        raise RuntimeError("power cut in the middle of a page")

    monkeypatch.setattr(view, "apply", apply)
    with pytest.raises(RuntimeError, match="power cut"):
        projections.step(view, page_size=8)
    assert written
    assert written[0] > len(before["stock_movements"])
    # Nothing of that page is visible and the position did not move.
    assert projections.live_schema("inventory")[1] == position
    assert view_contents(projections, "inventory") == before

    monkeypatch.setattr(view, "apply", original)
    catch_up(projections, page_size=8)
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, product_ids)


def test_a_runner_survives_a_failed_page_and_applies_it_once(
    ledger: Ledger, projections: Projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    product_ids = _stock_history(ledger)
    sales = {str(r["sale_id"]) for r in _all_sales(ledger)}
    view = projections.views["inventory"]
    crashes = [1]
    monkeypatch.setattr(view, "apply", _crash_halfway(view.apply, crashes))
    # The runner logs the failed page (its half-written rows roll back), keeps the other
    # views going, and retries the page: it is applied exactly once.
    with projections.running():
        for name in projections.views:
            assert projections.wait_for(name, head(ledger), 15)
    assert crashes == [], "the page really failed once"
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, product_ids)
    assert_orders_match_domain(ledger, projections, MERCHANT_A, sales)
    assert_catalog_matches_domain(ledger, projections, MERCHANT_A, product_ids)


def _all_sales(ledger: Ledger) -> list[dict[str, Any]]:
    """The sales in the log (read raw, by topic), as `{"sale_id": ...}` rows."""
    url, schema = ledger.database_url, ledger.ledger_recorder.datastore.schema
    query = SQL("SELECT originator_id AS sale_id FROM {} WHERE topic = %s").format(
        Identifier(schema, EVENTS_TABLE)
    )
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as curs:
        return curs.execute(query, (Sale.Created.TOPIC,)).fetchall()


# ---- 3. writers racing the runner: out of order, gaps, a long transaction ---------------------


def _events_table(ledger: Ledger) -> Identifier:
    return Identifier(ledger.ledger_recorder.datastore.schema, EVENTS_TABLE)


def _burn_ids_by_version_clash(ledger: Ledger, product_id: str) -> None:
    """Two copies of one stock item saved in turn: the second save is refused."""
    item_id = inv.stock_item_id(MERCHANT_A, product_id, "loc-1")
    first: StockItem = ledger.repository.get(item_id)
    second: StockItem = ledger.repository.get(item_id)
    first.receive(1, "clash-1", "")
    ledger.save(first)
    second.receive(1, "clash-2", "")
    with pytest.raises(IntegrityError):
        ledger.save(second)


def _burn_ids_by_rollback(ledger: Ledger, rows: int) -> None:
    """Inserts events by hand and rolls back: their notification ids are gone for good."""
    with psycopg.connect(ledger.database_url) as conn:
        conn.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(_events_table(ledger)))
        for _ in range(rows):
            conn.execute(
                SQL(
                    "INSERT INTO {} (originator_id, originator_version, topic, state)"
                    " VALUES (%s, 1, 'posledger.Nothing', '{{}}')"
                ).format(_events_table(ledger)),
                (uuid.uuid4(),),
            )
        conn.rollback()


def _long_transaction(ledger: Ledger, product_id: str, hold: float) -> None:
    """A writer that locks the log, records a real receipt, and commits only after `hold`."""
    item_id = inv.stock_item_id(MERCHANT_A, product_id, "loc-1")
    with psycopg.connect(ledger.database_url) as conn:
        conn.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(_events_table(ledger)))
        item: StockItem = ledger.repository.get(item_id)
        item.receive(7, "long-transaction", "")
        for stored in map(ledger.mapper.to_stored_event, item.collect_events()):
            conn.execute(
                SQL(
                    "INSERT INTO {} (originator_id, originator_version, topic, state)"
                    " VALUES (%s, %s, %s, %s)"
                ).format(_events_table(ledger)),
                (stored.originator_id, stored.originator_version, stored.topic, stored.state),
            )
        time.sleep(hold)  # every other writer queues behind the table lock meanwhile
    # committed here


def test_racing_writers_gaps_and_a_long_transaction_miss_nothing(
    settings: Settings, ledger: Ledger, projections: Projections
) -> None:
    products = [create_product(ledger, sku=f"P-{i}") for i in range(3)]
    slow = create_product(ledger, sku="SLOW")
    for product in [*products, slow]:
        receive(ledger, product, 50)
    runner_ledger = Ledger.open(settings)  # the runner has a process (pool) of its own
    runner = build_views(runner_ledger)
    sales: list[str] = []
    errors: list[BaseException] = []
    started = threading.Event()

    def writer(k: int) -> None:
        try:
            for i in range(8):
                product = products[(k + i) % len(products)]
                location = LOCATIONS[(k + i) % 2]
                receive(ledger, product, 1 + i % 3, location_id=location)
                sale = new_sale(
                    ledger, catalog_line(sku=product.sku, quantity=1), location_id=location
                )
                pay_in_full(ledger, str(sale.sale.id))
                sales.append(str(sale.sale.id))
                if i == 1:
                    started.set()
        except BaseException as e:
            errors.append(e)

    def troublemaker() -> None:
        try:
            started.wait(10)
            _burn_ids_by_rollback(ledger, 3)
            _burn_ids_by_version_clash(ledger, str(slow.id))
            _long_transaction(ledger, str(slow.id), hold=1.0)
            _burn_ids_by_rollback(ledger, 2)
        except BaseException as e:
            errors.append(e)

    try:
        with runner.running():
            threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
            threads.append(threading.Thread(target=troublemaker))
            for thread in threads:
                thread.start()
            seen: set[int] = set()  # positions of the live view while the writers write
            while any(thread.is_alive() for thread in threads):
                seen.add(runner.live_schema("inventory")[1])
                time.sleep(0.05)
            for thread in threads:
                thread.join(60)
            assert errors == []
            assert len(seen - {0}) >= 3, "the runner followed the writers as they wrote"
            end = head(ledger)
            for name in runner.views:
                assert runner.wait_for(name, end, 15), f"{name} did not catch up"
    finally:
        runner_ledger.close()

    with psycopg.connect(ledger.database_url) as conn:
        row = conn.execute(
            SQL("SELECT max(notification_id) - count(*) FROM {}").format(_events_table(ledger))
        ).fetchone()
    assert row is not None
    # 5 ids burned by rolled-back inserts (a version clash is refused before it inserts
    # anything, so it burns none).
    assert row[0] >= 5, "the log has gaps"
    product_ids = [str(p.id) for p in [*products, slow]]
    assert stock_on_hand(ledger, str(slow.id)) == 50 + 1 + 7
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, product_ids)
    assert_orders_match_domain(ledger, projections, MERCHANT_A, set(sales))
    assert_catalog_matches_domain(ledger, projections, MERCHANT_A, product_ids)
    assert_rebuild_matches(projections)


def stock_on_hand(ledger: Ledger, product_id: str, location_id: str = "loc-1") -> int:
    item = ledger.get_stock_item(MERCHANT_A, product_id, location_id)
    assert item is not None
    return item.on_hand


# ---- 4. one runner per view; a standby takes over ---------------------------------------------


def _holders(url: str, prefix: str) -> dict[str, int]:
    """Advisory locks held per application name, for connections named `prefix...`."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT a.application_name, count(*) FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE %s"
            " GROUP BY a.application_name",
            (prefix + "%",),
        ).fetchall()
    return {name: int(n) for name, n in rows}


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@dataclass
class Runner:
    """A runner in a thread of its own, with a ledger (a pool) of its own, like a process."""

    name: str
    ledger: Ledger
    projections: Projections
    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException]

    @classmethod
    def start(cls, settings: Settings, name: str, applied: list[tuple[str, str, int]]) -> Runner:
        ledger = Ledger.open(settings)
        ledger.database_url = make_conninfo(ledger.database_url, application_name=name)
        projections = build_views(ledger)
        for view in projections.views.values():
            _record_applies(view, name, applied)
        stop, ready, errors = threading.Event(), threading.Event(), []

        def run() -> None:
            try:
                projections.run(stop, ready.set)
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        assert ready.wait(10)
        return cls(name, ledger, projections, stop, thread, errors)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.ledger.close()


def _record_applies(view: Any, runner: str, applied: list[tuple[str, str, int]]) -> None:
    original: ApplyFn = view.apply

    def apply(curs: Cursor[DictRow], schema: str, events: Sequence[Event]) -> None:
        original(curs, schema, events)
        applied.extend((runner, view.name, e.position) for e in events)

    view.apply = apply


def _some_business(ledger: Ledger, tag: str) -> set[str]:
    product = create_product(ledger, sku=f"SKU-{tag}")
    receive(ledger, product, 10)
    sales = set()
    for quantity in (1, 2):
        sale = new_sale(ledger, catalog_line(sku=product.sku, quantity=quantity))
        pay_in_full(ledger, str(sale.sale.id))
        sales.add(str(sale.sale.id))
    return sales


def test_a_standby_runner_waits_and_takes_over(
    settings: Settings, ledger: Ledger, projections: Projections
) -> None:
    prefix = f"{settings.schema}-runner-"
    url = ledger.database_url
    applied: list[tuple[str, str, int]] = []
    first = Runner.start(settings, prefix + "1", applied)
    second: Runner | None = None
    try:
        assert _eventually(lambda: _holders(url, prefix) == {first.name: 4})
        second = Runner.start(settings, prefix + "2", applied)
        sales = _some_business(ledger, "A")
        for name in projections.views:
            assert first.projections.wait_for(name, head(ledger), 10)
        time.sleep(0.6)  # the standby has retried its locks (every 0.5 s) meanwhile
        assert _holders(url, prefix) == {first.name: 4}
        assert applied
        assert {runner for runner, _, _ in applied} == {first.name}

        first.close()  # the first runner goes away; its locks go with its session
        assert _eventually(lambda: _holders(url, prefix) == {second.name: 4})
        takeover = len(applied)
        sales |= _some_business(ledger, "B")
        for name in projections.views:
            assert second.projections.wait_for(name, head(ledger), 10)
        assert {runner for runner, _, _ in applied[takeover:]} == {second.name}
        assert second.errors == []
        assert first.errors == []
    finally:
        first.stop.set()
        if second is not None:
            second.close()

    # Each event was applied to each view once, by one runner or the other.
    applied_once = [(view, position) for _, view, position in applied]
    assert len(applied_once) == len(set(applied_once))
    products = [str(ledger.get_product_by_sku(MERCHANT_A, f"SKU-{t}").id) for t in "AB"]
    assert_orders_match_domain(ledger, projections, MERCHANT_A, sales)
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, products)


@pytest.mark.parametrize(
    "dying",
    [
        pytest.param("", id="every-connection"),
        # The process lives on: it must notice that its views are no longer its own.
        pytest.param(" AND query NOT LIKE 'LISTEN%%'", id="only-the-lock-session"),
    ],
)
def test_a_standby_takes_over_from_a_runner_whose_connections_die(
    settings: Settings, ledger: Ledger, projections: Projections, dying: str
) -> None:
    prefix = f"{settings.schema}-runner-"
    url = ledger.database_url
    applied: list[tuple[str, str, int]] = []
    first = Runner.start(settings, prefix + "1", applied)
    second: Runner | None = None
    try:
        assert _eventually(lambda: _holders(url, prefix) == {first.name: 4})
        second = Runner.start(settings, prefix + "2", applied)
        sales = _some_business(ledger, "A")
        for name in projections.views:
            assert first.projections.wait_for(name, head(ledger), 10)
        with psycopg.connect(url, autocommit=True) as conn:  # the first runner "crashes"
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s" + dying,
                (first.name,),
            ).fetchall()
            assert len(killed) == (2 if not dying else 1)
        # Every view is held again, each by one runner: the standby took over, and the
        # first runner outlived the loss (it reconnects and stands by, or, if it was back
        # first, holds views again; either way each page is applied once).
        assert _eventually(lambda: sum(_holders(url, prefix).values()) == 4)
        assert _eventually(lambda: first.projections.state.running)
        assert first.thread.is_alive(), "the first runner died"
        assert not first.errors
        takeover = len(applied)
        sales |= _some_business(ledger, "B")
        for name in projections.views:
            assert second.projections.wait_for(name, head(ledger), 10)
        after = [(view, position) for _, view, position in applied[takeover:]]
        assert after
        assert len(after) == len(set(after))
    finally:
        first.stop.set()
        first.thread.join(10)
        first.ledger.close()
        if second is not None:
            second.close()
    products = [str(ledger.get_product_by_sku(MERCHANT_A, f"SKU-{t}").id) for t in "AB"]
    assert_orders_match_domain(ledger, projections, MERCHANT_A, sales)
    assert_inventory_matches_domain(ledger, projections, MERCHANT_A, products)


# ---- 6. read-your-writes ----------------------------------------------------------------------


def test_a_running_runner_makes_each_write_readable_at_its_position(
    ledger: Ledger, projections: Projections
) -> None:
    reads = ReadModels(projections, wait_seconds=5)
    latencies = []
    with projections.running():
        product = ledger.create_product(
            ctx(), prod.CreateProduct(sku="MUG-1", name="Mug", price=900, currency_code="USD")
        )
        page = reads.list_products(MERCHANT_A, min_position=product.position)
        assert [r["sku"] for r in page.rows] == ["MUG-1"]
        assert page.position >= product.position

        received = ledger.receive_stock(
            ctx(), inv.ReceiveStock(str(product.aggregate.id), "loc-1", 4)
        )
        level = reads.stock_level(
            MERCHANT_A, str(product.aggregate.id), "loc-1", min_position=received.position
        )
        assert level.rows[0]["on_hand"] == 4

        customer = ledger.create_customer(ctx(), cust.CreateCustomer(name="Ann"))
        summary = reads.customer_summary(
            MERCHANT_A, str(customer.aggregate.id), min_position=customer.position
        )
        assert summary.rows[0]["name"] == "Ann"

        for quantity in range(1, 6):
            started = time.monotonic()
            sale = new_sale(ledger, catalog_line(quantity=quantity))
            assert projections.wait_for("orders", sale.position, 5)
            latencies.append(time.monotonic() - started)
            rows = view_rows(projections, "orders", "orders")
            assert str(sale.sale.id) in {str(r["sale_id"]) for r in rows}
            listed = reads.list_sales(MERCHANT_A, SaleFilters(), min_position=sale.position)
            assert listed.rows[0]["sale_id"] == sale.sale.id
    # Woken by NOTIFY, not by its one-second poll.
    assert sorted(latencies)[len(latencies) // 2] < 0.3, latencies


def test_without_a_runner_a_read_at_a_later_position_is_not_yet_visible(
    ledger: Ledger, projections: Projections
) -> None:
    sale = new_sale(ledger, c.LineItemInput("X", "X", 1, 500))
    reads = ReadModels(projections, wait_seconds=0.2)
    started = time.monotonic()
    assert not projections.wait_for("orders", sale.position, 0.2)
    with pytest.raises(NotYetVisible) as caught:
        reads.list_sales(MERCHANT_A, SaleFilters(), min_position=sale.position)
    assert caught.value.reason == "VIEW_NOT_CAUGHT_UP"
    assert time.monotonic() - started < 2
    # Without a position, the (empty) view answers at once; once applied, the sale shows.
    assert reads.list_sales(MERCHANT_A, SaleFilters()).rows == []
    catch_up(projections)
    page = reads.list_sales(MERCHANT_A, SaleFilters(), min_position=sale.position)
    assert [r["sale_id"] for r in page.rows] == [sale.sale.id]


# ---- 7. keyset pages ----------------------------------------------------------------------------


def _pages(fetch: Callable[[str], Any], key: Callable[[dict[str, Any]], Any]) -> list[Any]:
    """Every row of a listing, page by page, checking that tokens end exactly at the end."""
    keys: list[Any] = []
    token = ""
    for _ in range(100):
        page = fetch(token)
        assert len(page.rows) <= 5
        keys.extend(key(r) for r in page.rows)
        token = page.next_page_token
        if not token:
            return keys
    raise AssertionError("the pages never ended")


def test_every_listing_pages_through_all_rows_once(
    ledger: Ledger, projections: Projections
) -> None:
    products = [create_product(ledger, sku=f"SKU-{i:02}") for i in range(12)]
    create_product(ledger, merchant_id="merchant-b", sku="SKU-B")  # never in A's listings
    customers = [
        str(ledger.create_customer(ctx(), cust.CreateCustomer(name=n)).aggregate.id)
        for n in ["Ann", "Bob", "Ann", "Cy", "Ann", "Dee", "Eve", "Bob", "Fay", "Gus", "Hal"]
    ]
    sales = [
        new_sale(ledger, catalog_line(sku=p.sku), location_id=LOCATIONS[i % 2]).sale
        for i, p in enumerate(products)
    ]
    for i, product in enumerate(products):
        receive(ledger, product, 3, location_id=LOCATIONS[i % 2])
    for quantity in range(1, 12):
        receive(ledger, products[0], quantity, location_id="loc-1")
    catch_up(projections)
    reads = ReadModels(projections)

    got_sales = _pages(
        lambda t: reads.list_sales(MERCHANT_A, SaleFilters(), page_size=5, page_token=t),
        lambda r: r["sale_id"],
    )
    newest_first = sorted(sales, key=lambda s: (s.created_on, s.id), reverse=True)
    assert got_sales == [s.id for s in newest_first]

    got_products = _pages(
        lambda t: reads.list_products(MERCHANT_A, page_size=5, page_token=t),
        lambda r: r["sku"],
    )
    assert got_products == sorted(p.sku for p in products)

    got_customers = _pages(
        lambda t: reads.list_customers(MERCHANT_A, page_size=5, page_token=t),
        lambda r: (r["name"], r["customer_id"]),
    )
    assert len(got_customers) == len(set(got_customers)) == len(customers)
    assert {cid for _, cid in got_customers} == set(customers)
    assert got_customers == sorted(got_customers)

    got_levels = _pages(
        lambda t: reads.list_stock_levels(MERCHANT_A, page_size=5, page_token=t),
        lambda r: (r["location_id"], r["product_id"]),
    )
    assert got_levels == sorted((LOCATIONS[i % 2], str(p.id)) for i, p in enumerate(products))

    product_id = str(products[0].id)
    got_moves = _pages(
        lambda t: reads.list_movements(MERCHANT_A, product_id, "loc-1", page_size=5, page_token=t),
        lambda r: r["position"],
    )
    assert len(got_moves) == 12 == len(set(got_moves))
    assert got_moves == sorted(got_moves, reverse=True)


def test_a_page_token_works_only_for_its_own_listing(
    ledger: Ledger, projections: Projections
) -> None:
    for i in range(3):
        create_product(ledger, sku=f"SKU-{i}")
        new_sale(ledger, catalog_line(sku=f"SKU-{i}"))
        ledger.create_customer(ctx(), cust.CreateCustomer(name=f"C{i}"))
    catch_up(projections)
    reads = ReadModels(projections)
    sales_token = reads.list_sales(MERCHANT_A, SaleFilters(), page_size=1).next_page_token
    products_token = reads.list_products(MERCHANT_A, page_size=1).next_page_token
    customers_token = reads.list_customers(MERCHANT_A, page_size=1).next_page_token
    assert sales_token
    assert products_token
    assert customers_token

    wrong: list[Callable[[], Any]] = [
        lambda: reads.list_products(MERCHANT_A, page_token=sales_token),
        lambda: reads.list_sales(MERCHANT_A, SaleFilters(), page_token=products_token),
        lambda: reads.list_customers(MERCHANT_A, page_token=products_token),
        lambda: reads.list_stock_levels(MERCHANT_A, page_token=customers_token),
        lambda: reads.list_sales(MERCHANT_A, SaleFilters(), page_token="not-a-token"),
        lambda: reads.list_products(MERCHANT_A, page_size=501),
        lambda: reads.list_products(MERCHANT_A, page_size=-1),
    ]
    for call in wrong:
        with pytest.raises(InvalidRequest):
            call()
    # The right token still continues its own listing.
    rest = reads.list_products(MERCHANT_A, page_size=5, page_token=products_token)
    assert [r["sku"] for r in rest.rows] == ["SKU-1", "SKU-2"]
