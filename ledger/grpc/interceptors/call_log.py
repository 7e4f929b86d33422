"""One log line and the metrics of every call, with what the call is about bound to every
line logged while it is served."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

from ledger import metrics
from ledger.grpc.interceptors.wrapping import Around, Behavior, StreamBehavior, status_code

log = structlog.get_logger("posledger.rpc")


@dataclass
class CallInfo:
    """Filled in by admission once the caller is known."""

    merchant: str | None = None
    request_id: str | None = None


_call: contextvars.ContextVar[CallInfo] = contextvars.ContextVar("call")


def identify_caller(merchant: str, request_id: str | None) -> None:
    """Names the call's merchant and request id, in its line and in every line after."""
    info = _call.get(None)
    if info is not None:
        info.merchant, info.request_id = merchant, request_id
    bind_contextvars(merchant=merchant, request_id=request_id)


class CallLog(Around):
    def around_unary(self, method: str, behavior: Behavior, *, streamed: bool) -> Behavior:
        kind = metrics.rpc_kind(client_streaming=streamed, server_streaming=False)

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            started, info, tokens = _begin(method, kind)
            try:
                return behavior(request, context)
            finally:
                _end(method, kind, context, info, started, tokens)

        return call

    def around_stream(
        self, method: str, behavior: StreamBehavior, *, streamed: bool
    ) -> StreamBehavior:
        kind = metrics.rpc_kind(client_streaming=streamed, server_streaming=True)

        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, info, tokens = _begin(method, kind)
            try:
                yield from behavior(request, context)
            finally:
                _end(method, kind, context, info, started, tokens)

        return call


def _begin(method: str, kind: str) -> tuple[float, CallInfo, tuple[Any, ...]]:
    metrics.rpc_started(method, kind)
    info = CallInfo()
    token = _call.set(info)
    # Whatever admission binds later is cleared with these: the call's context ends here.
    bound = bind_contextvars(method=method, merchant=None, request_id=None)
    return time.perf_counter(), info, (token, bound)


def _end(
    method: str,
    kind: str,
    context: grpc.ServicerContext,
    info: CallInfo,
    started: float,
    tokens: tuple[Any, ...],
) -> None:
    code = status_code(context) or grpc.StatusCode.OK
    seconds = time.perf_counter() - started
    metrics.rpc_handled(method, kind, code, seconds)
    log.info(
        "rpc",
        method=method,
        status=code.name,
        duration_ms=round(seconds * 1000, 2),
        merchant=info.merchant,
        request_id=info.request_id,
    )
    token, bound = tokens
    reset_contextvars(**bound)
    _call.reset(token)
