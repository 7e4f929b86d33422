"""Errors become statuses: what the domain and the store raise maps to its gRPC code with
google.rpc details (ledger/grpc/errors.py); anything else is a bug, logged with its
traceback and answered INTERNAL, never with its text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

import grpc
import structlog
from google.rpc import code_pb2, status_pb2

from ledger.grpc.errors import abort, status_for
from ledger.grpc.interceptors.wrapping import Around, Behavior, StreamBehavior, status_code

log = structlog.get_logger("posledger.rpc")


class ErrorMapping(Around):
    def around_unary(self, method: str, behavior: Behavior, *, streamed: bool) -> Behavior:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return behavior(request, context)
            except Exception as error:
                if isinstance(error, grpc.RpcError) or status_code(context) is not None:
                    raise  # already aborted
                _fail(context, error, method)

        return call

    def around_stream(
        self, method: str, behavior: StreamBehavior, *, streamed: bool
    ) -> StreamBehavior:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from behavior(request, context)
            except Exception as error:
                if status_code(context) is not None:
                    raise
                _fail(context, error, method)

        return call


def _fail(context: grpc.ServicerContext, error: Exception, method: str) -> NoReturn:
    status = status_for(error)
    if status is None:
        log.exception("rpc_failed_unexpectedly", method=method)
        status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; it was logged")
    abort(context, status)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
