"""Helpers for the integration tier: real PostgreSQL, one fresh schema per test.

`db` reads the ledger's tables directly (never through the application), so a test can
check what was really committed. The sale helpers build the usual starting points.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.sql import SQL, Composed, Identifier

from ledger.application import Context, Ledger
from ledger.domain import commands as c
from ledger.domain.customer import CreateCustomer
from ledger.domain.sale import Sale
from ledger.store import Settings

EVENTS_TABLE = "ledger_events"
COMMANDS_TABLE = "processed_commands"
API_KEYS_TABLE = "api_keys"

MERCHANT_A = "merchant-a"
MERCHANT_B = "merchant-b"

COFFEE = c.LineItemInput(sku="COF-1", name="Coffee", quantity=2, unit_price=450)
BAGEL = c.LineItemInput(sku="BAG-1", name="Bagel", quantity=1, unit_price=300, tax_rate_ppm=80_000)
CARD = c.CardInput(brand="visa", last4="4242", entry_method=c.EntryMethod.CONTACTLESS)

T = TypeVar("T")


@dataclass(frozen=True)
class StoredRow:
    """One row of `<schema>.ledger_events`, with its state decoded from JSON."""

    notification_id: int
    originator_id: uuid.UUID
    originator_version: int
    topic: str
    raw_state: bytes

    @property
    def state(self) -> dict[str, Any]:
        decoded = json.loads(self.raw_state)
        assert isinstance(decoded, dict)
        return decoded


@dataclass(frozen=True)
class Db:
    """Direct, read-only access to one test schema."""

    url: str
    schema: str

    def _rows(self, query: SQL | Composed, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()

    def count(self, table: str) -> int:
        rows = self._rows(
            SQL("SELECT count(*) AS n FROM {}").format(Identifier(self.schema, table))
        )
        return int(rows[0]["n"])

    def event_count(self) -> int:
        return self.count(EVENTS_TABLE)

    def command_count(self) -> int:
        return self.count(COMMANDS_TABLE)

    def events(self, originator_id: uuid.UUID | str | None = None) -> list[StoredRow]:
        query = SQL("SELECT * FROM {}").format(Identifier(self.schema, EVENTS_TABLE))
        params: tuple[Any, ...] = ()
        if originator_id is not None:
            query += SQL(" WHERE originator_id = %s")
            params = (uuid.UUID(str(originator_id)),)
        query += SQL(" ORDER BY notification_id")
        return [
            StoredRow(
                notification_id=row["notification_id"],
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                raw_state=bytes(row["state"]),
            )
            for row in self._rows(query, params)
        ]

    def topics(self, originator_id: uuid.UUID | str) -> list[str]:
        return [row.topic for row in self.events(originator_id)]

    def commands(self, merchant_id: str | None = None) -> list[dict[str, Any]]:
        query = SQL("SELECT * FROM {}").format(Identifier(self.schema, COMMANDS_TABLE))
        params: tuple[Any, ...] = ()
        if merchant_id is not None:
            query += SQL(" WHERE merchant_id = %s")
            params = (merchant_id,)
        return self._rows(query + SQL(" ORDER BY recorded_at, request_id"), params)

    def table_text(self, table: str) -> str:
        """Every row of a table, rendered as text: for "does this string appear anywhere"."""
        rows = self._rows(
            SQL("SELECT t::text AS row FROM {} AS t").format(Identifier(self.schema, table))
        )
        return "\n".join(str(row["row"]) for row in rows)


@pytest.fixture
def db(settings: Settings, ledger: Ledger) -> Db:
    """The tables of this test's schema (created by `ledger`)."""
    assert settings.database_url is not None
    return Db(settings.database_url, settings.schema)


# ---- building sales ------------------------------------------------------------------------


def new_request_id() -> str:
    return str(uuid.uuid4())


def ctx(merchant_id: str = MERCHANT_A, request_id: str | None = None) -> Context:
    return Context(merchant_id=merchant_id, request_id=request_id or new_request_id())


def new_customer(ledger: Ledger, merchant_id: str = MERCHANT_A, name: str = "Ada") -> str:
    """The id of a new customer of `merchant_id`: a sale's customer must exist."""
    created = ledger.create_customer(ctx(merchant_id), CreateCustomer(name=name))
    return str(created.aggregate.id)


def create_sale_cmd(*lines: c.LineItemInput) -> c.CreateSale:
    return c.CreateSale(
        location_id="loc-1",
        channel=c.Channel.IN_STORE,
        currency_code="USD",
        line_items=lines or (COFFEE,),
    )


def open_sale(ledger: Ledger, merchant_id: str = MERCHANT_A, *lines: c.LineItemInput) -> Sale:
    """A new open sale of `merchant_id` (one coffee line unless lines are given)."""
    return ledger.create_sale(ctx(merchant_id), create_sale_cmd(*lines)).sale


def request_payment_cmd(
    sale_id: str,
    amount: int,
    tenders: tuple[c.Tender, ...] = (c.Tender.CARD, c.Tender.CASH),
) -> c.RequestPayment:
    return c.RequestPayment(
        sale_id=sale_id,
        amount=amount,
        currency_code="USD",
        tender_types=tenders,
        callback_url="https://pay.example.com/callback",
        app_id="pay-app",
        api_version="1.0",
    )


@dataclass(frozen=True)
class PendingPayment:
    sale_id: str
    payment_id: str
    amount: int


def sale_with_pending_payment(
    ledger: Ledger, merchant_id: str = MERCHANT_A, amount: int | None = None
) -> PendingPayment:
    """An open sale with one pending payment (for the whole amount due unless given)."""
    sale = open_sale(ledger, merchant_id)
    sale_id = str(sale.id)
    amount = sale.amount_due if amount is None else amount
    result = ledger.request_payment(ctx(merchant_id), request_payment_cmd(sale_id, amount))
    return PendingPayment(sale_id, result.ids["payment_id"], amount)


def approved_by_card(p: PendingPayment) -> c.RecordPaymentResult:
    return c.RecordPaymentResult(
        sale_id=p.sale_id,
        payment_id=p.payment_id,
        outcome=c.Outcome.APPROVED,
        tender=c.Tender.CARD,
        card=CARD,
        auth_code="A1B2C3",
        processor_reference="proc-123",
    )


def declined_card(p: PendingPayment) -> c.RecordPaymentResult:
    return c.RecordPaymentResult(
        sale_id=p.sale_id,
        payment_id=p.payment_id,
        outcome=c.Outcome.DECLINED,
        tender=c.Tender.CARD,
        card=CARD,
        processor_reference="proc-456",
        error_code="insufficient_funds",
    )


# ---- concurrency ---------------------------------------------------------------------------


def race(*calls: Callable[[], T], timeout: float = 30.0) -> list[T | Exception]:
    """Runs each call in its own thread, all released at once by a barrier.

    Returns each call's result or the exception it raised, in the order of `calls`.
    """
    barrier = threading.Barrier(len(calls))
    outcomes: list[T | Exception | None] = [None] * len(calls)

    def run(i: int, call: Callable[[], T]) -> None:
        barrier.wait()
        try:
            outcomes[i] = call()
        except Exception as e:
            outcomes[i] = e

    threads = [
        threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a racing call did not finish in time"
    results: list[T | Exception] = []
    for outcome in outcomes:
        assert outcome is not None
        results.append(outcome)
    return results


def successes(outcomes: list[T | Exception]) -> list[T]:
    return [o for o in outcomes if not isinstance(o, Exception)]


def failures(outcomes: list[T | Exception]) -> list[Exception]:
    return [o for o in outcomes if isinstance(o, Exception)]
