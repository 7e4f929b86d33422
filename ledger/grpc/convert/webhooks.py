"""WebhookService and ChangeFeedService: kinds, statuses, ids → domain; subscriptions,
deliveries and changes → messages."""

from __future__ import annotations

import json
import uuid
from typing import Any

from psycopg.rows import DictRow

from ledger.deliveries.changes import Change, Kind
from ledger.deliveries.webhooks import Subscription
from ledger.domain.errors import NotFound
from ledger.grpc.context import timestamp
from ledger.v1 import webhooks_pb2 as pb

KINDS_TO_WIRE = {kind: pb.ChangeKind.Value(f"CHANGE_KIND_{kind.name}") for kind in Kind}
KINDS = {wire: kind for kind, wire in KINDS_TO_WIRE.items()}
STATUSES_TO_WIRE = {
    status: pb.DeliveryStatus.Value(f"DELIVERY_STATUS_{status.upper()}")
    for status in ("pending", "delivered", "failed", "gone", "refused")
}
STATUSES = {wire: status for status, wire in STATUSES_TO_WIRE.items()}


def webhook_message(s: Subscription) -> pb.Webhook:
    return pb.Webhook(
        id=str(s.subscription_id),
        url=s.url,
        kinds=[KINDS_TO_WIRE[k] for k in s.kinds],
        description=s.description,
        enabled=s.enabled,
        disabled_reason=s.disabled_reason,
        created_at=timestamp(s.created_at),
        updated_at=timestamp(s.updated_at),
    )


def delivery_message(row: DictRow, attempts: list[DictRow]) -> pb.Delivery:
    return pb.Delivery(
        id=str(row["delivery_id"]),
        kind=KINDS_TO_WIRE[Kind(row["kind"])],
        webhook_id=str(row["subscription_id"] or ""),
        url=row["url"],
        status=STATUSES_TO_WIRE[row["status"]],
        position=row["position"],
        created_at=timestamp(row["created_at"]),
        next_attempt_at=timestamp(row["next_attempt_at"]) if row["status"] == "pending" else None,
        attempts=[
            pb.DeliveryAttempt(
                attempt=a["attempt"],
                attempted_at=timestamp(a["attempted_at"]),
                status_code=a["status_code"] or 0,
                error=a["error"],
                response_excerpt=a["response"],
                duration_ms=a["duration_ms"],
            )
            for a in attempts
        ],
        body=row["body"],
    )


def kinds(values: Any) -> list[Kind | None]:
    return [KINDS.get(v) for v in values]


def delivery_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"delivery {value} not found", reason="DELIVERY_NOT_FOUND") from None


def change_message(change: Change) -> pb.StreamChangesResponse:
    return pb.StreamChangesResponse(
        id=change.id,
        kind=KINDS_TO_WIRE[change.kind],
        position=change.position,
        occurred_at=timestamp(change.occurred_at),
        subject_id=change.subject_id,
        data_json=json.dumps(change.data, separators=(",", ":"), sort_keys=True),
    )
