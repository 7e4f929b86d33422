"""Conversions several services use: ids, timestamps, update masks, enum filters, channels."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ledger.domain.commands import Channel
from ledger.domain.errors import FieldViolation, InvalidRequest
from ledger.v1 import sales_pb2

# Sales channels are a sales enum that customers use too (the channel of a consent).
CHANNELS = {
    sales_pb2.SALES_CHANNEL_IN_STORE: Channel.IN_STORE,
    sales_pb2.SALES_CHANNEL_ONLINE: Channel.ONLINE,
    sales_pb2.SALES_CHANNEL_MARKETPLACE: Channel.MARKETPLACE,
    sales_pb2.SALES_CHANNEL_PHONE: Channel.PHONE,
    sales_pb2.SALES_CHANNEL_OTHER: Channel.OTHER,
}
CHANNELS_TO_WIRE = {v: k for k, v in CHANNELS.items()}


def channel_to_wire(value: str) -> sales_pb2.SalesChannel.ValueType:
    """A stored channel on the wire; none stored is UNSPECIFIED."""
    if not value:
        return sales_pb2.SALES_CHANNEL_UNSPECIFIED
    return CHANNELS_TO_WIRE[Channel(value)]


def canonical_id(value: str) -> str:
    """A UUID in its canonical form (lower case, dashed), so ids match however written.

    Anything else passes through unchanged for validation to report.
    """
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def timestamp_field(path: str, ts: Timestamp) -> datetime:
    """A request's timestamp as a datetime; INVALID_ARGUMENT outside protobuf's range."""
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest([FieldViolation(path, "is not a valid timestamp")]) from None


def masked_changes(fields: Any, paths: list[str]) -> tuple[tuple[str, Any], ...]:
    """The (name, value) pairs of `fields` named by an update mask, in mask order."""
    known = {f.name for f in fields.DESCRIPTOR.fields}
    return tuple(
        (path, getattr(fields, path) if path in known else None) for path in dict.fromkeys(paths)
    )


def enum_filter(path: str, value: int, known: Mapping[Any, str]) -> str | None:
    """A listing's enum filter: unset is None (no filter), an unknown value is invalid."""
    if value == 0:
        return None
    if value not in known:
        raise InvalidRequest([FieldViolation(path, "must be a known value or unset")])
    return known[value]
