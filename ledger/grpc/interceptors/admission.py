"""Who may call, and with what: the store gate, the caller's key or certificate, the
permission `ledger/permissions.py` lists for the RPC (a method missing there is refused to
everyone), no card number in any field or header, and bytes that parse as the request."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import Any, cast

import grpc

from ledger.domain.card_numbers import redacted
from ledger.domain.errors import FieldViolation, InvalidRequest
from ledger.grpc.card_data import CHECKED_PER_ITEM, check_headers, check_request
from ledger.grpc.interceptors.call_log import identify_caller
from ledger.grpc.interceptors.wrapping import Around, Behavior, StreamBehavior
from ledger.keys import Authenticator, PermissionDenied, Principal
from ledger.limits import caller_gone
from ledger.permissions import required_permission
from ledger.store import StoreGate, StoreUnavailable

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
_device_id: contextvars.ContextVar[str] = contextvars.ContextVar("device_id", default="")
MAX_DEVICE_ID = 128


def current_principal() -> Principal:
    """The caller of the RPC this thread is serving."""
    return _principal.get()


def current_device_id() -> str:
    """The `x-device-id` the caller sent (cut to 128 printable characters), or ""."""
    return _device_id.get()


class Admission(Around):
    def __init__(self, authenticator: Authenticator, gate: StoreGate | None = None) -> None:
        self.authenticator = authenticator
        self.gate = gate

    def deserializer(
        self, deserialize: Callable[[bytes], Any] | None
    ) -> Callable[[bytes], Any] | None:
        return _tolerant(deserialize)

    def around_unary(self, method: str, behavior: Behavior, *, streamed: bool) -> Behavior:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            request, tokens = self._enter(method, context, request, streamed)
            try:
                return behavior(request, context)
            finally:
                _leave(tokens)

        return call

    def around_stream(
        self, method: str, behavior: StreamBehavior, *, streamed: bool
    ) -> StreamBehavior:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            request, tokens = self._enter(method, context, request, streamed)
            try:
                yield from behavior(request, context)
            finally:
                _leave(tokens)

        return call

    def _enter(
        self, method: str, context: grpc.ServicerContext, request: Any, streamed: bool
    ) -> tuple[Any, tuple[Any, ...]]:
        """Admits the call (or raises), and makes the caller known to the servicer."""
        if self.gate is not None and not self.gate.is_open:
            # Answered at once while the store is known to be down (see ledger/monitor.py).
            raise StoreUnavailable("the event store is unavailable")
        undecodable = isinstance(request, Undecodable)
        principal = self._admit(method, context, None if streamed or undecodable else request)
        identify_caller(
            principal.merchant_id, redacted(getattr(request, "request_id", None) or "") or None
        )
        if undecodable:
            raise request.invalid("")
        if streamed:
            request = _checked_stream(request, CHECKED_PER_ITEM.get(method, frozenset()))
        tokens = (
            _principal.set(principal),
            _device_id.set(_device_of(context)),
            caller_gone.set(lambda: not context.is_active()),
        )
        return request, tokens

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


def _leave(tokens: tuple[Any, ...]) -> None:
    principal, device, gone = tokens
    caller_gone.reset(gone)
    _device_id.reset(device)
    _principal.reset(principal)


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
