"""The expiry worker: the ledger ends payments still pending past their deadline.

It finds due payments in the orders view's payments table and runs ExpirePayment on each
with the request id `expire:<payment_id>`. Workers that race (every server runs one
unless --no-expiry) or a retry after a crash therefore record one expiry: the second
meets the first one's command record and is answered from it. The view may lag: a
payment it still shows pending that has a result by now is refused by the sale and
skipped, and one it has not shown yet is found on a later pass.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any

import structlog

from ledger.application import Context, Ledger
from ledger.application.sales import expire_request_id
from ledger.domain import commands as c
from ledger.domain.errors import DomainError
from ledger.run_loop import in_background, run_until_stopped
from projections.follow import is_store_error
from projections.orders import OrdersView
from projections.runner import Projections
from projections.view import q

log = structlog.get_logger("posledger.expiry")

# How often the worker looks for due payments: a deadline is kept to about this much.
INTERVAL_SECONDS = 1.0
BATCH = 200

FIND_DUE = """
    SELECT merchant_id, sale_id, payment_id FROM {schema}.payments
    WHERE status = 'pending' AND expires_at <= now()
    ORDER BY expires_at
    LIMIT %s"""


class Expiry:
    def __init__(self, ledger: Ledger, projections: Projections) -> None:
        self.ledger = ledger
        self.projections = projections

    def due(self, limit: int = BATCH) -> list[dict[str, Any]]:
        """Payments the orders view shows pending past their deadline, the oldest first."""
        schema, _ = self.projections.live_schema(OrdersView.name)
        with self.projections.datastore.transaction() as curs:
            curs.execute(q(FIND_DUE, schema), (limit,))
            return [dict(row) for row in curs.fetchall()]

    def expire_due(self, limit: int = BATCH) -> int:
        """Expires the payments due now; returns how many this call expired."""
        expired = 0
        for row in self.due(limit):
            ctx = Context(
                merchant_id=row["merchant_id"], request_id=expire_request_id(row["payment_id"])
            )
            cmd = c.ExpirePayment(sale_id=str(row["sale_id"]), payment_id=row["payment_id"])
            try:
                result = self.ledger.expire_payment(ctx, cmd)
            except DomainError as e:
                # It has a result by now, or is not due by this clock: the view is behind.
                log.info("payment_not_expired", payment_id=cmd.payment_id, reason=e.reason)
                continue
            if not result.replayed:
                expired += 1
                log.info("payment_expired", payment_id=cmd.payment_id, sale_id=cmd.sale_id)
        return expired

    def run(self, stop: threading.Event, interval: float = INTERVAL_SECONDS) -> None:
        """Expires due payments until `stop` is set.

        Deadlines must outlive a lost database, a missing view or a bug met on one
        payment: each is logged and the next pass tries again.
        """

        def expire_all_due() -> None:
            while self.expire_due() and not stop.is_set():
                pass  # a full batch: there may be more

        run_until_stopped(
            stop,
            expire_all_due,
            name="expiry",
            is_transient=is_store_error,
            interval=interval,
            retry_bugs=True,
        )

    def running(self, interval: float = INTERVAL_SECONDS) -> AbstractContextManager[object]:
        """Runs the worker in a background thread for the duration of the block."""
        return in_background("expiry", lambda stop: self.run(stop, interval))
