"""Domain errors. Each carries a stable UPPER_SNAKE `reason` that clients can branch on.

The gRPC layer maps the class to a status code; the domain never imports gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, named by its path in the request (`line_items[2].quantity`)."""

    field: str
    description: str
    reason: str = "INVALID_FIELD"


class DomainError(Exception):
    reason = "DOMAIN_ERROR"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        # Machine-readable details for the client (ErrorInfo.metadata), e.g. a permission.
        self.metadata = dict(metadata or {})


class InvalidRequest(DomainError):
    """The request is wrong whatever the state of the ledger (INVALID_ARGUMENT)."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        assert violations, "an invalid request names at least one bad field"
        reasons = {v.reason for v in violations}
        # One specific reason when every violation shares it, else the generic one.
        reason = reasons.pop() if len(reasons) == 1 else self.reason
        if reason == "INVALID_FIELD":
            reason = self.reason
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message, reason=reason)
        self.violations = violations


class NotFound(DomainError):
    """The thing does not exist, or belongs to another merchant (NOT_FOUND)."""

    reason = "NOT_FOUND"


class RuleViolated(DomainError):
    """The command is valid but the current state forbids it (FAILED_PRECONDITION)."""

    reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        # The parts of the request or of the state that the rule refuses (e.g. the lines
        # that are short of stock), as field violations the client can point at.
        self.violations = list(violations or [])


class AlreadyExists(DomainError):
    """Something unique is taken, e.g. a sku or an external id (ALREADY_EXISTS)."""

    reason = "ALREADY_EXISTS"


class NotYetVisible(DomainError):
    """A view has not caught up with the position the caller asked for (UNAVAILABLE)."""

    reason = "VIEW_NOT_CAUGHT_UP"


class ViewsNotRunning(DomainError):
    """No runner keeps the view a query reads up to date (UNAVAILABLE): its answer would
    be stale without saying so."""

    reason = "VIEWS_NOT_RUNNING"


class VersionConflict(DomainError):
    """The aggregate changed under the caller (ABORTED); re-read and retry."""

    reason = "VERSION_CONFLICT"


class RequestIdReused(DomainError):
    """A request id was used before for a different request (ALREADY_EXISTS)."""

    reason = "REQUEST_ID_REUSED"


class ResourceExhausted(DomainError):
    """A cap on concurrent long-lived calls is reached (RESOURCE_EXHAUSTED); the reason
    names which (STREAMS_EXHAUSTED, IMPORTS_EXHAUSTED, WAITS_EXHAUSTED), the metadata the
    cap and its scope."""

    reason = "RESOURCE_EXHAUSTED"


class ShuttingDown(DomainError):
    """The server is stopping (UNAVAILABLE): retry on another server or after restart."""

    reason = "SERVER_SHUTTING_DOWN"


class StreamIdle(DomainError):
    """A client stream sent nothing for longer than the server waits (DEADLINE_EXCEEDED)."""

    reason = "STREAM_IDLE"
