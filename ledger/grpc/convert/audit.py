"""AuditService: recorded events → messages (point-in-time sales are `convert.sales`)."""

from __future__ import annotations

from ledger.audit.events import AuditRecord
from ledger.grpc.context import timestamp
from ledger.v1 import audit_pb2 as pb


def event_message(record: AuditRecord) -> pb.AuditEvent:
    m = record.metadata
    return pb.AuditEvent(
        position=record.position,
        aggregate_id=str(record.aggregate_id),
        version=record.version,
        type=record.type,
        recorded_at=timestamp(record.recorded_at),
        metadata=pb.EventMetadata(
            merchant_id=m["merchant_id"],
            app_id=m["app_id"],
            api_key_id=m["key_id"],
            location_id=m["location_id"],
            device_id=m["device_id"],
            correlation_id=m["request_id"],
        ),
        payload_json=record.payload_json(),
    )
