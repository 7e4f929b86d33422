"""Domain errors ⇄ gRPC status: `google.rpc.Status` with ErrorInfo and, for bad input,
BadRequest field violations. Only an unexpected exception answers INTERNAL."""

from __future__ import annotations

import grpc
import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ledger.domain.errors import (
    AlreadyExists,
    DomainError,
    InvalidRequest,
    NotFound,
    NotYetVisible,
    RequestIdReused,
    ResourceExhausted,
    RuleViolated,
    ShuttingDown,
    StreamIdle,
    VersionConflict,
    ViewsNotRunning,
)
from ledger.keys import PermissionDenied, Unauthenticated
from ledger.store import StoreUnavailable

ERROR_DOMAIN = "posledger"

_CODES: list[tuple[type[DomainError], int]] = [
    (InvalidRequest, code_pb2.INVALID_ARGUMENT),
    (NotFound, code_pb2.NOT_FOUND),
    (RuleViolated, code_pb2.FAILED_PRECONDITION),
    (VersionConflict, code_pb2.ABORTED),
    (RequestIdReused, code_pb2.ALREADY_EXISTS),
    (AlreadyExists, code_pb2.ALREADY_EXISTS),
    (Unauthenticated, code_pb2.UNAUTHENTICATED),
    (NotYetVisible, code_pb2.UNAVAILABLE),
    (ViewsNotRunning, code_pb2.UNAVAILABLE),
    (PermissionDenied, code_pb2.PERMISSION_DENIED),
    (ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
    (ShuttingDown, code_pb2.UNAVAILABLE),
    (StreamIdle, code_pb2.DEADLINE_EXCEEDED),
]


def _packed(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


# A message quoting what the caller sent (an id of 20,000 characters) must still fit in
# gRPC's 16 KiB of trailers, twice over: once as grpc-message, once in the details.
MAX_TEXT = 256
MAX_VIOLATIONS = 20  # enough to fix a request by; more would not fit either


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def domain_status(error: DomainError) -> status_pb2.Status:
    code = next((code for cls, code in _CODES if isinstance(error, cls)), code_pb2.UNKNOWN)
    status = status_pb2.Status(code=code, message=_bounded(error.message))
    metadata = {key: _bounded(value) for key, value in error.metadata.items()}
    status.details.append(
        _packed(
            error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
        )
    )
    if isinstance(error, (InvalidRequest, RuleViolated)) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_bounded(v.field), description=_bounded(v.description), reason=v.reason
                )
                for v in error.violations[:MAX_VIOLATIONS]
            ]
        )
        status.details.append(_packed(bad_request))
    if isinstance(error, (NotYetVisible, ViewsNotRunning, ResourceExhausted, ShuttingDown)):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(500)
        status.details.append(_packed(retry))
    return status


STORE_RETRY_MILLISECONDS = 1000

# What a lost, refused, timed-out or paused database looks like from here: through the
# library (its wrappers), straight from psycopg (connections of our own; a pool wait that
# timed out is a `PoolTimeout`, one of psycopg's), or our gate while the monitor has the
# store down.
STORE_ERRORS = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    StoreUnavailable,
)


def unavailable_status(error: Exception | None = None) -> status_pb2.Status:
    status = status_pb2.Status(
        code=code_pb2.UNAVAILABLE, message="the event store is unavailable; retry later"
    )
    status.details.append(
        _packed(error_details_pb2.ErrorInfo(reason="STORE_UNAVAILABLE", domain=ERROR_DOMAIN))
    )
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(STORE_RETRY_MILLISECONDS)
    status.details.append(_packed(retry))
    return status


def status_for(error: Exception) -> status_pb2.Status | None:
    """The status to answer for an expected error, or None for a bug."""
    if isinstance(error, DomainError):
        return domain_status(error)
    if isinstance(error, STORE_ERRORS):
        return unavailable_status(error)
    return None


def abort(context: grpc.ServicerContext, status: status_pb2.Status) -> None:
    context.abort_with_status(rpc_status.to_status(status))
