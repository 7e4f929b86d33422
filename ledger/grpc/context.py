"""Pieces every servicer shares: the command envelope and timestamps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ledger.application import Context
from ledger.application.sales import EXPIRE_PREFIX
from ledger.domain.errors import FieldViolation, InvalidRequest
from ledger.grpc.interceptors import current_device_id, current_principal


def command_context(request: Any) -> Context:
    """The envelope of a mutating request: caller, request id, expected version."""
    has_version = "expected_version" in request.DESCRIPTOR.fields_by_name and request.HasField(
        "expected_version"
    )
    if request.request_id.startswith(EXPIRE_PREFIX):
        raise InvalidRequest(
            [FieldViolation("request_id", f"ids starting {EXPIRE_PREFIX!r} are the ledger's own")]
        )
    principal = current_principal()
    return Context(
        merchant_id=principal.merchant_id,
        request_id=request.request_id,
        expected_version=request.expected_version if has_version else None,
        app_id=principal.app_id,
        key_id=principal.key_id,
        device_id=current_device_id(),
    )


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts
