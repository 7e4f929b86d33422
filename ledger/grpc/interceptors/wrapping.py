"""What every interceptor here shares: wrap a `ledger.v1` method's behaviour, whichever of
the four kinds of handler it is, keeping its (de)serializers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

GUARDED_PREFIX = "/ledger.v1."

Behavior = Callable[[Any, grpc.ServicerContext], Any]
StreamBehavior = Callable[[Any, grpc.ServicerContext], Iterator[Any]]


class Around(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Subclasses say what to do around a unary-response and a streaming-response call."""

    def around_unary(self, method: str, behavior: Behavior, *, streamed: bool) -> Behavior:
        raise NotImplementedError

    def around_stream(
        self, method: str, behavior: StreamBehavior, *, streamed: bool
    ) -> StreamBehavior:
        raise NotImplementedError

    def deserializer(
        self, deserialize: Callable[[bytes], Any] | None
    ) -> Callable[[bytes], Any] | None:
        return deserialize

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
            "request_deserializer": self.deserializer(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self.around_unary(method, handler.unary_unary, streamed=False), **serializers
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self.around_unary(method, handler.stream_unary, streamed=True), **serializers
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self.around_stream(method, handler.unary_stream, streamed=False), **serializers
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self.around_stream(method, handler.stream_stream, streamed=True), **serializers
        )


def status_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status the RPC was aborted with, if any (missing from the type stubs)."""
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    return code
