"""Webhook subscriptions of a merchant: which endpoints get which kinds of change.

Subscriptions are settings, not facts of the business, so they live in a plain table (like
API keys), not in the event log. Every call is scoped to the caller's merchant: another
merchant's subscription or delivery answers exactly like a missing one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import DictRow

from ledger.deliveries.changes import SUBSCRIBABLE, Kind
from ledger.deliveries.signing import new_secret
from ledger.deliveries.store import DeliveryStore
from ledger.domain.commands import check_delivery_url
from ledger.domain.errors import NotFound, RequestIdReused, RuleViolated
from ledger.domain.validation import Checks

MAX_SUBSCRIPTIONS = 50  # per merchant


@dataclass(frozen=True)
class Subscription:
    subscription_id: uuid.UUID
    url: str
    kinds: tuple[Kind, ...]
    description: str
    enabled: bool
    disabled_reason: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: DictRow) -> Subscription:
        return cls(
            subscription_id=row["subscription_id"],
            url=row["url"],
            kinds=tuple(Kind(k) for k in row["kinds"]),
            description=row["description"],
            enabled=row["enabled"],
            disabled_reason=row["disabled_reason"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


def check_fields(
    checks: Checks,
    url: str | None = None,
    kinds: Sequence[Kind | None] | None = None,
    description: str | None = None,
) -> None:
    if url is not None:
        check_delivery_url(checks, url, "url")
    if kinds is not None:
        if not kinds:
            checks.fail("kinds", "name at least one kind of change")
        for i, kind in enumerate(kinds):
            if kind not in SUBSCRIBABLE:
                checks.fail(
                    f"kinds[{i}]",
                    "must be an order, stock, product or customer kind (a payment's result "
                    "goes to its callback_url)",
                )
    if description is not None:
        checks.text("description", description, max_len=500)


class Webhooks:
    def __init__(self, store: DeliveryStore) -> None:
        self.store = store
        self.q = store.q

    def create(
        self,
        merchant_id: str,
        request_id: str,
        url: str,
        kinds: Sequence[Kind | None],
        description: str,
    ) -> tuple[Subscription, str]:
        """A new subscription and its signing secret (a repeated request gets the same)."""
        checks = Checks()
        checks.text("request_id", request_id, max_len=128, required=True)
        check_fields(checks, url, kinds, description)
        checks.raise_if_any()
        wanted = sorted({k.value for k in kinds if k is not None})
        with self.store.datastore.transaction(commit=True) as curs:
            curs.execute(
                self.q(
                    "INSERT INTO {s}.webhook_subscriptions (subscription_id, merchant_id, url,"
                    " kinds, description, secret, request_id) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (merchant_id, request_id) DO NOTHING"
                ),
                (uuid.uuid4(), merchant_id, url, wanted, description, new_secret(), request_id),
            )
            curs.execute(
                self.q(
                    "SELECT * FROM {s}.webhook_subscriptions"
                    " WHERE merchant_id = %s AND request_id = %s"
                ),
                (merchant_id, request_id),
            )
            row = curs.fetchone()
            assert row is not None
            if (row["url"], sorted(row["kinds"]), row["description"]) != (url, wanted, description):
                raise RequestIdReused(
                    "this request_id was used for a different webhook", reason="REQUEST_ID_REUSED"
                )
            curs.execute(
                self.q(
                    "SELECT count(*) AS n FROM {s}.webhook_subscriptions WHERE merchant_id = %s"
                ),
                (merchant_id,),
            )
            count = curs.fetchone()
            if count is not None and count["n"] > MAX_SUBSCRIPTIONS:
                raise RuleViolated(
                    f"a merchant has at most {MAX_SUBSCRIPTIONS} webhooks",
                    reason="TOO_MANY_WEBHOOKS",
                )
        return Subscription.of(row), str(row["secret"])

    def list(self, merchant_id: str) -> list[Subscription]:
        with self.store.datastore.transaction() as curs:
            curs.execute(
                self.q(
                    "SELECT * FROM {s}.webhook_subscriptions WHERE merchant_id = %s"
                    " ORDER BY created_at, subscription_id"
                ),
                (merchant_id,),
            )
            return [Subscription.of(row) for row in curs.fetchall()]

    def get(self, merchant_id: str, subscription_id: str) -> Subscription:
        the_id = _id(subscription_id)
        with self.store.datastore.transaction() as curs:
            curs.execute(
                self.q(
                    "SELECT * FROM {s}.webhook_subscriptions"
                    " WHERE merchant_id = %s AND subscription_id = %s"
                ),
                (merchant_id, the_id),
            )
            row = curs.fetchone()
        if row is None:
            raise _not_found(subscription_id)
        return Subscription.of(row)

    def update(
        self,
        merchant_id: str,
        subscription_id: str,
        *,
        url: str | None = None,
        kinds: Sequence[Kind | None] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Subscription:
        checks = Checks()
        check_fields(checks, url, kinds, description)
        checks.raise_if_any()
        current = self.get(merchant_id, subscription_id)
        with self.store.datastore.transaction(commit=True) as curs:
            curs.execute(
                self.q(
                    "UPDATE {s}.webhook_subscriptions SET url = %s, kinds = %s, description = %s,"
                    " enabled = %s, disabled_reason = CASE WHEN %s THEN '' ELSE disabled_reason"
                    " END, updated_at = now() WHERE merchant_id = %s AND subscription_id = %s"
                    " RETURNING *"
                ),
                (
                    current.url if url is None else url,
                    [k.value for k in current.kinds]
                    if kinds is None
                    else sorted({k.value for k in kinds if k is not None}),
                    current.description if description is None else description,
                    current.enabled if enabled is None else enabled,
                    bool(enabled),
                    merchant_id,
                    current.subscription_id,
                ),
            )
            row = curs.fetchone()
        if row is None:
            raise _not_found(subscription_id)
        return Subscription.of(row)

    def delete(self, merchant_id: str, subscription_id: str) -> None:
        """Forgets it; its pending deliveries end (an unknown id is already deleted)."""
        the_id = _id(subscription_id)
        with self.store.datastore.transaction(commit=True) as curs:
            curs.execute(
                self.q(
                    "DELETE FROM {s}.webhook_subscriptions"
                    " WHERE merchant_id = %s AND subscription_id = %s"
                ),
                (merchant_id, the_id),
            )
            curs.execute(
                self.q(
                    "UPDATE {s}.deliveries SET status = 'failed', finished_at = now(),"
                    " last_error = 'the webhook was deleted'"
                    " WHERE merchant_id = %s AND subscription_id = %s AND status = 'pending'"
                ),
                (merchant_id, the_id),
            )

    def rotate_secret(self, merchant_id: str, subscription_id: str, request_id: str) -> str:
        """A new signing secret; a retry of the latest rotation answers the same one."""
        checks = Checks()
        checks.text("request_id", request_id, max_len=128, required=True)
        checks.raise_if_any()
        the_id = _id(subscription_id)
        with self.store.datastore.transaction(commit=True) as curs:
            curs.execute(
                self.q(
                    "UPDATE {s}.webhook_subscriptions SET"
                    " secret = CASE WHEN rotation_request_id = %(request)s"
                    " THEN secret ELSE %(secret)s END,"
                    " updated_at = CASE WHEN rotation_request_id = %(request)s"
                    " THEN updated_at ELSE now() END,"
                    " rotation_request_id = %(request)s"
                    " WHERE merchant_id = %(merchant)s AND subscription_id = %(id)s"
                    " RETURNING secret"
                ),
                {
                    "request": request_id,
                    "secret": new_secret(),
                    "merchant": merchant_id,
                    "id": the_id,
                },
            )
            row = curs.fetchone()
            if row is None:
                raise _not_found(subscription_id)
        return str(row["secret"])


def _id(subscription_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(subscription_id)
    except ValueError:
        raise _not_found(subscription_id) from None


def _not_found(subscription_id: str) -> NotFound:
    return NotFound(f"webhook {subscription_id} not found", reason="WEBHOOK_NOT_FOUND")
