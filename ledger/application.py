"""The ledger application: one method per command, each shaped load → decide → save.

Around every command it provides what DESIGN.md promises everywhere:
- idempotency: the command's record commits in the same transaction as its events; a retry
  with the same request id is answered from that record and writes nothing;
- tenancy: a sale of another merchant answers exactly like a missing one;
- optimistic concurrency: `expected_version` is checked, and a command that lost a race to
  another writer is re-run on fresh state a bounded number of times.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from ledger.domain import commands as c
from ledger.domain.errors import NotFound, RequestIdReused, VersionConflict
from ledger.domain.sale import Sale
from ledger.keys import ApiKeys
from ledger.store import (
    CommandRecord,
    LedgerRecorder,
    Settings,
    database_url,
    eventsourcing_env,
    is_duplicate_command,
    schema_lock,
)

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Context:
    """Who asks, and the envelope of a mutating request."""

    merchant_id: str
    request_id: str = ""
    expected_version: int | None = None


@dataclass(frozen=True)
class SaleResult:
    """A sale as a command left it, with the ids the command created."""

    sale: Sale
    ids: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


class Ledger(Application[UUID]):
    """Sales and payments, stored as events in PostgreSQL."""

    name = "Ledger"  # events live in the table `ledger_events`

    @classmethod
    def open(cls, settings: Settings | None = None) -> Ledger:
        """Connects to the configured database and creates missing tables safely."""
        settings = settings or Settings.from_env()
        url = database_url(settings)
        ledger = cls(env=eventsourcing_env(url, settings))
        with schema_lock(url, settings.schema):
            ledger.ledger_recorder.create_table()
            ledger.api_keys.create_table()
        return ledger

    @cached_property
    def api_keys(self) -> ApiKeys:
        return ApiKeys(self.ledger_recorder.datastore)

    @property
    def ledger_recorder(self) -> LedgerRecorder:
        assert isinstance(self.recorder, LedgerRecorder)
        return self.recorder

    # ---- commands ------------------------------------------------------------------------

    def create_sale(self, ctx: Context, cmd: c.CreateSale) -> SaleResult:
        def decide(_: Sale | None) -> tuple[Sale, dict[str, str]]:
            assert cmd.channel is not None
            sale = Sale.create(
                merchant_id=ctx.merchant_id,
                location_id=cmd.location_id,
                channel=cmd.channel,
                currency_code=cmd.currency_code,
                line_items=cmd.line_items,
                customer_id=cmd.customer_id,
                external_order_id=cmd.external_order_id,
                note=cmd.note,
            )
            return sale, {}

        return self._execute(ctx, cmd, None, decide)

    def add_line_item(self, ctx: Context, cmd: c.AddLineItem) -> SaleResult:
        def decide(sale: Sale) -> dict[str, str]:
            assert cmd.line_item is not None
            return {"line_id": sale.add_line_item(cmd.line_item)}

        return self._execute_on(ctx, cmd, decide)

    def remove_line_item(self, ctx: Context, cmd: c.RemoveLineItem) -> SaleResult:
        return self._execute_on(ctx, cmd, lambda sale: sale.remove_line_item(cmd.line_id))

    def attach_customer(self, ctx: Context, cmd: c.AttachCustomer) -> SaleResult:
        return self._execute_on(ctx, cmd, lambda sale: sale.attach_customer(cmd.customer_id))

    def request_payment(self, ctx: Context, cmd: c.RequestPayment) -> SaleResult:
        def decide(sale: Sale) -> dict[str, str]:
            payment_id = sale.request_payment(
                amount=cmd.amount,
                currency_code=cmd.currency_code,
                tender_types=[t for t in cmd.tender_types if t is not None],
                callback_url=cmd.callback_url,
                app_id=cmd.app_id,
                api_version=cmd.api_version,
                note=cmd.note,
                state=cmd.state,
            )
            return {"payment_id": payment_id}

        return self._execute_on(ctx, cmd, decide)

    def record_payment_result(self, ctx: Context, cmd: c.RecordPaymentResult) -> SaleResult:
        def decide(sale: Sale) -> dict[str, str]:
            sale.record_payment_result(cmd)
            return {"payment_id": cmd.payment_id}

        return self._execute_on(ctx, cmd, decide)

    def cancel_payment(self, ctx: Context, cmd: c.CancelPayment) -> SaleResult:
        def decide(sale: Sale) -> dict[str, str]:
            sale.cancel_payment(cmd.payment_id, cmd.reason)
            return {"payment_id": cmd.payment_id}

        return self._execute_on(ctx, cmd, decide)

    def refund_payment(self, ctx: Context, cmd: c.RefundPayment) -> SaleResult:
        def decide(sale: Sale) -> dict[str, str]:
            refund_id = sale.refund_payment(
                cmd.payment_id, cmd.amount, cmd.reason, cmd.processor_reference
            )
            return {"refund_id": refund_id}

        return self._execute_on(ctx, cmd, decide)

    def cancel_sale(self, ctx: Context, cmd: c.CancelSale) -> SaleResult:
        return self._execute_on(ctx, cmd, lambda sale: sale.cancel(cmd.reason))

    # ---- queries -------------------------------------------------------------------------

    def get_sale(self, merchant_id: str, sale_id: str) -> Sale:
        c.check_sale_id(sale_id)
        return self._load(merchant_id, sale_id)

    def _load(self, merchant_id: str, sale_id: str, version: int | None = None) -> Sale:
        """The merchant's sale, at `version` if given. Foreign and missing sales look alike."""
        sale: object
        try:
            sale = self.repository.get(UUID(sale_id), version=version)
        except (AggregateNotFoundError, ValueError):
            sale = None
        if not isinstance(sale, Sale) or sale.merchant_id != merchant_id:
            raise NotFound(f"sale {sale_id} not found", reason="SALE_NOT_FOUND")
        return sale

    # ---- the shape every command shares --------------------------------------------------

    def _execute_on(
        self,
        ctx: Context,
        cmd: Any,
        act: Callable[[Sale], dict[str, str] | None],
    ) -> SaleResult:
        """Runs a command on an existing sale (`cmd.sale_id`)."""

        def decide(sale: Sale | None) -> tuple[Sale, dict[str, str]]:
            assert sale is not None
            return sale, act(sale) or {}

        return self._execute(ctx, cmd, cmd.sale_id, decide)

    def _execute(
        self,
        ctx: Context,
        cmd: c.SaleCommand,
        sale_id: str | None,
        decide: Callable[[Sale | None], tuple[Sale, dict[str, str]]],
    ) -> SaleResult:
        c.check_request_id(ctx.request_id)
        c.check_expected_version(ctx.expected_version)
        c.validate(cmd)
        fingerprint = _fingerprint(cmd, ctx.expected_version)
        replayed = self._replay(ctx, fingerprint)
        if replayed is not None:
            return replayed

        for attempt in range(MAX_ATTEMPTS):
            current = None if sale_id is None else self._load(ctx.merchant_id, sale_id)
            if (
                current is not None
                and ctx.expected_version is not None
                and current.version != ctx.expected_version
            ):
                raise VersionConflict(
                    f"sale {sale_id} is at version {current.version}, "
                    f"not the expected {ctx.expected_version}"
                )
            sale, ids = decide(current)
            record = CommandRecord(
                merchant_id=ctx.merchant_id,
                request_id=ctx.request_id,
                command=type(cmd).__name__,
                fingerprint=fingerprint,
                aggregate_id=sale.id,
                aggregate_version=sale.version,
                result=ids,
            )
            try:
                self.save(sale, command_record=record)
            except IntegrityError as e:
                if is_duplicate_command(e):
                    # A twin of this request committed first: answer as it was answered.
                    replayed = self._replay(ctx, fingerprint)
                    assert replayed is not None
                    return replayed
                if ctx.expected_version is not None:
                    raise VersionConflict(f"sale {sale_id} was changed concurrently") from None
                time.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311
                continue
            return SaleResult(sale=sale, ids=ids)
        raise VersionConflict(
            f"sale {sale_id} is changing too fast; gave up after {MAX_ATTEMPTS} attempts",
            reason="CONCURRENT_MODIFICATION",
        )

    def _replay(self, ctx: Context, fingerprint: str) -> SaleResult | None:
        record = self.ledger_recorder.select_command_record(ctx.merchant_id, ctx.request_id)
        if record is None:
            return None
        if record.fingerprint != fingerprint:
            raise RequestIdReused(
                f"request_id {ctx.request_id!r} was already used for a different request "
                f"({record.command})"
            )
        sale = self._load(ctx.merchant_id, str(record.aggregate_id), record.aggregate_version)
        return SaleResult(sale=sale, ids=record.result, replayed=True)


def _fingerprint(cmd: c.SaleCommand, expected_version: int | None) -> str:
    """A digest of what a request asks for, to tell a retry from a reuse of its id."""
    body = {"command": type(cmd).__name__, "args": asdict(cmd), "expected": expected_version}
    canonical = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
