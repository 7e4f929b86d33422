"""The delivery tables: signing secrets, webhook subscriptions, deliveries and attempts.

Delivery rows are written only by the outbox follower, in the transaction that advances
its position over the events they come from (so each is made exactly once). Senders then
claim due rows with a lease (`FOR UPDATE SKIP LOCKED`, so any number of senders share the
work) and the secrets to sign them with, POST them outside any transaction, and record the
batch's attempts in one transaction. A sender that dies mid-delivery leaves its lease to
expire; another then sends the same delivery again under the same delivery id, for the
receiver to deduplicate.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from ledger.deliveries.signing import new_secret

NOTIFY_CHANNEL = "posledger_deliveries"
RESPONSE_EXCERPT = 256  # characters of a receiver's answer kept, never more

PENDING, DELIVERED, FAILED, GONE, REFUSED = "pending", "delivered", "failed", "gone", "refused"

DDL = (
    """CREATE TABLE IF NOT EXISTS {s}.delivery_secrets (
        merchant_id text NOT NULL,
        app_id text NOT NULL,
        secret text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (merchant_id, app_id))""",
    # The request id of the latest rotation: its retry answers the same secret.
    """ALTER TABLE {s}.delivery_secrets
        ADD COLUMN IF NOT EXISTS rotation_request_id text NOT NULL DEFAULT ''""",
    """CREATE TABLE IF NOT EXISTS {s}.webhook_subscriptions (
        subscription_id uuid PRIMARY KEY,
        merchant_id text NOT NULL,
        url text NOT NULL,
        kinds text[] NOT NULL,
        description text NOT NULL DEFAULT '',
        secret text NOT NULL,
        request_id text NOT NULL,
        enabled boolean NOT NULL DEFAULT true,
        disabled_reason text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now())""",
    """ALTER TABLE {s}.webhook_subscriptions
        ADD COLUMN IF NOT EXISTS rotation_request_id text NOT NULL DEFAULT ''""",
    """CREATE UNIQUE INDEX IF NOT EXISTS webhook_subscriptions_request
        ON {s}.webhook_subscriptions (merchant_id, request_id)""",
    """CREATE TABLE IF NOT EXISTS {s}.deliveries (
        delivery_id uuid PRIMARY KEY,
        merchant_id text NOT NULL,
        kind text NOT NULL,
        change_id text NOT NULL,
        position bigint NOT NULL,
        idx int NOT NULL,
        url text NOT NULL,
        app_id text NOT NULL DEFAULT '',
        subscription_id uuid,
        ordering_key text NOT NULL,
        body text NOT NULL,
        status text NOT NULL DEFAULT 'pending',
        attempts int NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        lease_until timestamptz,
        lease_token uuid,
        created_at timestamptz NOT NULL DEFAULT now(),
        retry_from timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        last_status_code int,
        last_error text NOT NULL DEFAULT '',
        last_response text NOT NULL DEFAULT '')""",
    """CREATE INDEX IF NOT EXISTS deliveries_due
        ON {s}.deliveries (next_attempt_at) WHERE status = 'pending'""",
    """CREATE INDEX IF NOT EXISTS deliveries_order
        ON {s}.deliveries (ordering_key, position, idx) WHERE status = 'pending'""",
    """CREATE INDEX IF NOT EXISTS deliveries_merchant
        ON {s}.deliveries (merchant_id, position DESC)""",
    """CREATE TABLE IF NOT EXISTS {s}.delivery_attempts (
        delivery_id uuid NOT NULL,
        attempt int NOT NULL,
        attempted_at timestamptz NOT NULL DEFAULT now(),
        duration_ms int NOT NULL,
        status_code int,
        error text NOT NULL DEFAULT '',
        response text NOT NULL DEFAULT '',
        PRIMARY KEY (delivery_id, attempt))""",
)


@dataclass(frozen=True)
class Delivery:
    delivery_id: uuid.UUID
    merchant_id: str
    kind: str
    url: str
    app_id: str
    subscription_id: uuid.UUID | None
    body: str
    attempts: int
    retry_from: datetime  # the retry window starts here (made, or asked to redeliver)
    lease_token: uuid.UUID
    # The app's or subscription's signing secret as it was when claimed (None: none yet).
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, row: DictRow) -> Delivery:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, and what follows: another attempt at `retry_in`, or an end."""

    status: str  # PENDING (retry), DELIVERED, FAILED, GONE or REFUSED
    status_code: int | None
    error: str
    response: str
    duration_ms: int
    retry_in: float = 0.0


class DeliveryStore:
    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self.schema = datastore.schema

    def q(self, statement: str) -> Composed:
        return SQL(statement).format(s=Identifier(self.schema))

    def create_tables(self, curs: Cursor[DictRow]) -> None:
        for statement in DDL:
            curs.execute(self.q(statement))

    # ---- signing secrets ------------------------------------------------------------------

    def rotate_app_secret(self, merchant_id: str, app_id: str, request_id: str) -> str:
        """A new signing secret for the app's callbacks (the old one stops at once).

        A retry of the latest rotation (same `request_id`) answers the secret it made, so a
        caller that lost the answer does not lock its own receiver out.
        """
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self.q(
                    "INSERT INTO {s}.delivery_secrets AS d (merchant_id, app_id, secret,"
                    " rotation_request_id) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (merchant_id, app_id) DO UPDATE SET"
                    " secret = CASE WHEN d.rotation_request_id = EXCLUDED.rotation_request_id"
                    " THEN d.secret ELSE EXCLUDED.secret END,"
                    " created_at = CASE WHEN d.rotation_request_id = EXCLUDED.rotation_request_id"
                    " THEN d.created_at ELSE now() END,"
                    " rotation_request_id = EXCLUDED.rotation_request_id"
                    " RETURNING d.secret"
                ),
                (merchant_id, app_id, new_secret(), request_id),
            )
            row = curs.fetchone()
        assert row is not None
        return str(row["secret"])

    # ---- the outbox side ------------------------------------------------------------------

    def subscriptions(self, curs: Cursor[DictRow], merchants: Sequence[str]) -> list[DictRow]:
        curs.execute(
            self.q(
                "SELECT subscription_id, merchant_id, url, kinds FROM {s}.webhook_subscriptions"
                " WHERE enabled AND merchant_id = ANY(%s)"
            ),
            (list(merchants),),
        )
        return curs.fetchall()

    def subscribed_kinds(self, curs: Cursor[DictRow]) -> set[str]:
        curs.execute(
            self.q(
                "SELECT DISTINCT unnest(kinds) AS kind FROM {s}.webhook_subscriptions WHERE enabled"
            )
        )
        return {row["kind"] for row in curs.fetchall()}

    def add(self, curs: Cursor[DictRow], rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        curs.executemany(
            self.q(
                "INSERT INTO {s}.deliveries (delivery_id, merchant_id, kind, change_id, position,"
                " idx, url, app_id, subscription_id, ordering_key, body) VALUES"
                " (%(delivery_id)s, %(merchant_id)s, %(kind)s, %(change_id)s, %(position)s,"
                " %(idx)s, %(url)s, %(app_id)s, %(subscription_id)s, %(ordering_key)s, %(body)s)"
                " ON CONFLICT (delivery_id) DO NOTHING"
            ),
            rows,
        )
        curs.execute(SQL("SELECT pg_notify(%s, '')"), (NOTIFY_CHANNEL,))

    # ---- the sender side ------------------------------------------------------------------

    def claim(self, limit: int, lease_seconds: float) -> list[Delivery]:
        """Due deliveries, each the oldest pending one of its ordering key, leased to us,
        with the signing secret each is sent with (read in the same statement)."""
        token = uuid.uuid4()
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self.q(
                    "WITH due AS (SELECT d.delivery_id FROM {s}.deliveries d"
                    " WHERE d.status = 'pending' AND d.next_attempt_at <= now()"
                    " AND (d.lease_until IS NULL OR d.lease_until < now())"
                    " AND NOT EXISTS (SELECT 1 FROM {s}.deliveries e"
                    "  WHERE e.ordering_key = d.ordering_key AND e.status = 'pending'"
                    "  AND (e.position, e.idx, e.delivery_id) < (d.position, d.idx, d.delivery_id))"
                    " ORDER BY d.next_attempt_at, d.position LIMIT %s"
                    " FOR UPDATE OF d SKIP LOCKED)"
                    " UPDATE {s}.deliveries d"
                    " SET lease_until = now() + %s * interval '1 second', lease_token = %s"
                    " FROM due WHERE d.delivery_id = due.delivery_id RETURNING d.*,"
                    " CASE WHEN d.subscription_id IS NOT NULL THEN (SELECT w.secret"
                    "  FROM {s}.webhook_subscriptions w"
                    "  WHERE w.subscription_id = d.subscription_id)"
                    " ELSE (SELECT k.secret FROM {s}.delivery_secrets k"
                    "  WHERE k.merchant_id = d.merchant_id AND k.app_id = d.app_id) END AS secret"
                ),
                (limit, lease_seconds, token),
            )
            return [Delivery.of(row) for row in curs.fetchall()]

    def record(self, attempts: Sequence[tuple[Delivery, Outcome]]) -> set[uuid.UUID]:
        """Records a batch of attempts in one transaction; returns the ids of those whose
        lease had passed to another sender meanwhile (nothing of them is recorded)."""
        if not attempts:
            return set()
        columns: dict[str, list[Any]] = {
            "id": [d.delivery_id for d, _ in attempts],
            "token": [d.lease_token for d, _ in attempts],
            "status": [o.status for _, o in attempts],
            "retry_in": [o.retry_in for _, o in attempts],
            "code": [o.status_code for _, o in attempts],
            "error": [o.error[:RESPONSE_EXCERPT] for _, o in attempts],
            "response": [o.response[:RESPONSE_EXCERPT] for _, o in attempts],
            "duration": [o.duration_ms for _, o in attempts],
        }
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self.q(
                    "WITH a AS (SELECT * FROM unnest(%(id)s::uuid[], %(token)s::uuid[],"
                    " %(status)s::text[], %(retry_in)s::float8[], %(code)s::int[],"
                    " %(error)s::text[], %(response)s::text[], %(duration)s::int[])"
                    " AS a(id, token, status, retry_in, code, error, response, duration)),"
                    " done AS (UPDATE {s}.deliveries d SET status = a.status,"
                    " attempts = d.attempts + 1,"
                    " next_attempt_at = now() + a.retry_in * interval '1 second',"
                    " lease_until = NULL, lease_token = NULL,"
                    " finished_at = CASE WHEN a.status <> 'pending' THEN now() END,"
                    " last_status_code = a.code, last_error = a.error, last_response = a.response"
                    " FROM a WHERE d.delivery_id = a.id AND d.lease_token = a.token"
                    " RETURNING d.delivery_id, d.attempts, d.subscription_id, a.status,"
                    " a.code, a.error, a.response, a.duration),"
                    # The receiver says it is gone for good: stop sending it anything.
                    " gone AS (UPDATE {s}.webhook_subscriptions w SET enabled = false,"
                    " disabled_reason = 'endpoint answered 410 Gone', updated_at = now()"
                    " FROM done WHERE done.status = 'gone'"
                    " AND w.subscription_id = done.subscription_id)"
                    " INSERT INTO {s}.delivery_attempts (delivery_id, attempt, duration_ms,"
                    " status_code, error, response) SELECT delivery_id, attempts, duration,"
                    " code, error, response FROM done RETURNING delivery_id"
                ),
                columns,
            )
            recorded = {row["delivery_id"] for row in curs.fetchall()}
        return {d.delivery_id for d, _ in attempts} - recorded

    # ---- status ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.datastore.transaction() as curs:
            curs.execute(self.q("SELECT status, count(*) AS n FROM {s}.deliveries GROUP BY status"))
            return {row["status"]: int(row["n"]) for row in curs.fetchall()}

    def backlog(self) -> DictRow | None:
        with self.datastore.transaction() as curs:
            curs.execute(
                self.q(
                    "SELECT count(*) FILTER (WHERE next_attempt_at <= now()) AS due,"
                    " count(*) FILTER (WHERE attempts > 0) AS retrying,"
                    " extract(epoch FROM now() - min(created_at))::float AS oldest_seconds"
                    " FROM {s}.deliveries WHERE status = 'pending'"
                )
            )
            return curs.fetchone()

    def page(
        self,
        merchant_id: str,
        subscription_id: uuid.UUID | None,
        status: str | None,
        before: tuple[int, str] | None,
        limit: int,
    ) -> list[DictRow]:
        """A merchant's deliveries, newest first, after the page token's (position, id)."""
        conditions = [SQL("merchant_id = %s")]
        params: list[Any] = [merchant_id]
        if subscription_id is not None:
            conditions.append(SQL("subscription_id = %s"))
            params.append(subscription_id)
        if status is not None:
            conditions.append(SQL("status = %s"))
            params.append(status)
        if before is not None:
            conditions.append(SQL("(position, delivery_id::text) < (%s, %s)"))
            params += list(before)
        statement = SQL(
            "SELECT * FROM {table} WHERE {where}"
            " ORDER BY position DESC, delivery_id::text DESC LIMIT %s"
        ).format(table=Identifier(self.schema, "deliveries"), where=SQL(" AND ").join(conditions))
        with self.datastore.transaction() as curs:
            curs.execute(statement, [*params, limit])
            return curs.fetchall()

    def attempts_of(self, delivery_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[DictRow]]:
        result: dict[uuid.UUID, list[DictRow]] = {d: [] for d in delivery_ids}
        with self.datastore.transaction() as curs:
            curs.execute(
                self.q(
                    "SELECT * FROM {s}.delivery_attempts WHERE delivery_id = ANY(%s)"
                    " ORDER BY delivery_id, attempt"
                ),
                (list(delivery_ids),),
            )
            for row in curs.fetchall():
                result[row["delivery_id"]].append(row)
        return result

    def redeliver(self, merchant_id: str, delivery_id: uuid.UUID) -> DictRow | None:
        """Due again at once, with a fresh retry window; its id and attempts are kept."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self.q(
                    "UPDATE {s}.deliveries SET status = 'pending', next_attempt_at = now(),"
                    " retry_from = now(), finished_at = NULL"
                    " WHERE merchant_id = %s AND delivery_id = %s RETURNING *"
                ),
                (merchant_id, delivery_id),
            )
            row = curs.fetchone()
            if row is not None:
                curs.execute(SQL("SELECT pg_notify(%s, '')"), (NOTIFY_CHANNEL,))
        return row

    def recent_failures(self, limit: int = 10) -> list[DictRow]:
        with self.datastore.transaction() as curs:
            curs.execute(
                self.q(
                    "SELECT delivery_id, merchant_id, kind, url, status, attempts,"
                    " last_status_code, last_error FROM {s}.deliveries"
                    " WHERE (status = 'pending' AND attempts > 0) OR status IN"
                    " ('failed', 'gone', 'refused') ORDER BY created_at DESC LIMIT %s"
                ),
                (limit,),
            )
            return curs.fetchall()
