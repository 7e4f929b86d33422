"""One interceptor around every ledger RPC: authenticate, authorise, refuse card data, run,
map errors, log one line.

Health and reflection stay open (load balancers and generic clients use them without a
key). Every method of the `ledger.v1` services requires a principal holding the permission
`ledger/permissions.py` lists for it (a method missing there is refused to everyone), and
no card number in any field or header: handlers of any kind are wrapped, so a new streaming
RPC cannot slip past these checks.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import grpc
import structlog
from google.rpc import code_pb2, status_pb2
from structlog.contextvars import bind_contextvars, reset_contextvars

from ledger import metrics
from ledger.domain.card_numbers import redacted
from ledger.domain.errors import FieldViolation, InvalidRequest
from ledger.grpc.card_data import CHECKED_PER_ITEM, check_headers, check_request
from ledger.grpc.errors import abort, status_for
from ledger.keys import Authenticator, PermissionDenied, Principal
from ledger.limits import caller_gone
from ledger.permissions import required_permission
from ledger.store import StoreGate, StoreUnavailable

log = structlog.get_logger("posledger.rpc")

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
_device_id: contextvars.ContextVar[str] = contextvars.ContextVar("device_id", default="")
MAX_DEVICE_ID = 128

GUARDED_PREFIX = "/ledger.v1."


def current_principal() -> Principal:
    """The caller of the RPC this thread is serving."""
    return _principal.get()


def current_device_id() -> str:
    """The `x-device-id` the caller sent (cut to 128 printable characters), or ""."""
    return _device_id.get()


def _code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status the RPC was aborted with, if any (missing from the type stubs)."""
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    return code


def _internal_status() -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; it was logged")


class LedgerInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, authenticator: Authenticator, gate: StoreGate | None = None) -> None:
        self.authenticator = authenticator
        self.gate = gate

    def _check_store(self) -> None:
        """Answers at once while the store is known to be down (see ledger/monitor.py)."""
        if self.gate is not None and not self.gate.is_open:
            raise StoreUnavailable("the event store is unavailable")

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(GUARDED_PREFIX):
            return handler
        serializers = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, streamed=False), **serializers
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary, streamed=True), **serializers
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream, streamed=False), **serializers
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, handler.stream_stream, streamed=True), **serializers
        )

    def _admit(self, method: str, context: grpc.ServicerContext, request: Any) -> Principal:
        """Who calls, whether they may, and that nothing they sent holds a card number."""
        metadata = list(context.invocation_metadata() or ())
        authorization = dict(metadata).get("authorization")
        if isinstance(authorization, bytes):
            authorization = authorization.decode(errors="replace")
        principal = self.authenticator.authenticate(authorization, _client_subject(context))
        permission = required_permission(method)
        if permission is None:
            raise PermissionDenied(f"{method} is not open to any role", metadata={"method": method})
        principal.require(permission, method)
        check_headers(metadata)
        if request is not None:
            check_request(request)
        return principal

    def _fail(self, context: grpc.ServicerContext, error: Exception, method: str) -> str:
        status = status_for(error)
        if status is None:
            log.exception("rpc_failed_unexpectedly", method=method)
            status = _internal_status()
        abort(context, status)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def _unary(
        self, method: str, behavior: Callable[[Any, grpc.ServicerContext], Any], *, streamed: bool
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        kind = metrics.rpc_kind(client_streaming=streamed, server_streaming=False)

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            metrics.rpc_started(method, kind)
            principal: Principal | None = None
            bound = bind_contextvars(method=method)
            try:
                self._check_store()
                undecodable = isinstance(request, Undecodable)
                principal = self._admit(
                    method, context, None if streamed or undecodable else request
                )
                bound = {**bound, **_bind_caller(principal, request)}
                if undecodable:
                    raise request.invalid("")
                if streamed:
                    request = _checked_stream(request, CHECKED_PER_ITEM.get(method, frozenset()))
                token = _principal.set(principal)
                device = _device_id.set(_device_of(context))
                gone = caller_gone.set(lambda: not context.is_active())
                try:
                    return behavior(request, context)
                finally:
                    caller_gone.reset(gone)
                    _device_id.reset(device)
                    _principal.reset(token)
            except Exception as error:
                if isinstance(error, grpc.RpcError) or _code(context) is not None:
                    raise  # already aborted
                self._fail(context, error, method)
            finally:
                _log_call(method, kind, context, principal, request, started)
                reset_contextvars(**bound)

        return call

    def _streaming(
        self,
        method: str,
        behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        *,
        streamed: bool,
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        kind = metrics.rpc_kind(client_streaming=streamed, server_streaming=True)

        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            metrics.rpc_started(method, kind)
            principal: Principal | None = None
            bound = bind_contextvars(method=method)
            try:
                self._check_store()
                undecodable = isinstance(request, Undecodable)
                principal = self._admit(
                    method, context, None if streamed or undecodable else request
                )
                bound = {**bound, **_bind_caller(principal, request)}
                if undecodable:
                    raise request.invalid("")
                if streamed:
                    request = _checked_stream(request, CHECKED_PER_ITEM.get(method, frozenset()))
                token = _principal.set(principal)
                device = _device_id.set(_device_of(context))
                gone = caller_gone.set(lambda: not context.is_active())
                try:
                    yield from behavior(request, context)
                finally:
                    caller_gone.reset(gone)
                    _device_id.reset(device)
                    _principal.reset(token)
            except Exception as error:
                if _code(context) is not None:
                    raise
                self._fail(context, error, method)
            finally:
                _log_call(method, kind, context, principal, request, started)
                reset_contextvars(**bound)

        return call


class Undecodable:
    """Bytes a client sent as a request message that do not parse as one."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def invalid(self, field: str) -> InvalidRequest:
        """The answer: INVALID_ARGUMENT naming the message (`""`: the whole request)."""
        description = f"not a valid request message: {self.error}"
        return InvalidRequest([FieldViolation(field, description, "MALFORMED_REQUEST")])


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """gRPC answers INTERNAL for bytes its deserializer refuses; this hands them to the
    interceptor instead, which answers INVALID_ARGUMENT."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as e:  # DecodeError, bad UTF-8, nesting too deep: the client's bytes
            return Undecodable(e)

    return parse


def _checked_stream(requests: Iterator[Any], per_item: frozenset[str]) -> Iterator[Any]:
    """The client's messages, each checked for card numbers as it arrives.

    A message holding one fails the call (what earlier messages did stays done), except in
    the fields `per_item` names, whose items the servicer checks and refuses one by one.
    """
    for i, message in enumerate(requests):
        if isinstance(message, Undecodable):
            raise message.invalid(f"messages[{i}]")
        check_request(message, prefix=f"messages[{i}].", skip=per_item)
        yield message


def _bind_caller(principal: Principal, request: Any) -> Mapping[str, contextvars.Token[Any]]:
    """Merchant and request id join every line logged while the call is served."""
    request_id = redacted(getattr(request, "request_id", None) or "") or None
    return bind_contextvars(merchant=principal.merchant_id, request_id=request_id)


def _client_subject(context: grpc.ServicerContext) -> str | None:
    """The subject of the verified mTLS client certificate, e.g. `CN=till-7,O=Acme`."""
    auth = cast(dict[str, list[bytes]], context.auth_context() or {})
    values = auth.get("x509_subject") or []
    if not values:
        common_names = auth.get("x509_common_name") or []
        values = [b"CN=" + common_names[0]] if common_names else []
    return values[0].decode(errors="replace") if values else None


def _device_of(context: grpc.ServicerContext) -> str:
    value = dict(context.invocation_metadata() or ()).get("x-device-id", "")
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return "".join(ch for ch in value if ch.isprintable())[:MAX_DEVICE_ID]


def _log_call(
    method: str,
    kind: str,
    context: grpc.ServicerContext,
    principal: Principal | None,
    request: Any,
    started: float,
) -> None:
    code = _code(context) or grpc.StatusCode.OK
    seconds = time.perf_counter() - started
    metrics.rpc_handled(method, kind, code, seconds)
    log.info(
        "rpc",
        method=method,
        status=code.name,
        duration_ms=round(seconds * 1000, 2),
        merchant=principal.merchant_id if principal else None,
        request_id=redacted(getattr(request, "request_id", None) or "") or None,
    )
