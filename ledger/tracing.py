"""OpenTelemetry traces of RPCs and database calls, on when an exporter is configured.

The standard OpenTelemetry variables decide: `OTEL_TRACES_EXPORTER` (`otlp` or `console`;
`none` or unset means off unless an OTLP endpoint is set), `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME` (default `posledger`), and the
exporter's own variables. The packages come with the `tracing` extra (`pip install
'posledger[tracing]'`). Statement text is recorded as the library records it: the ledger
sends values as parameters, never inline, so no customer data or card digits reach a span.
"""

from __future__ import annotations

import os

import structlog

log = structlog.get_logger("posledger.tracing")

EXPORTERS = ("otlp", "console")


class TracingUnavailable(RuntimeError):
    """Tracing was asked for but cannot be set up (unknown exporter, packages missing)."""


def wanted() -> str | None:
    """The exporter the environment asks for, or None when tracing is off."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter in ("", "none"):
        return "otlp" if endpoint and exporter == "" else None
    if exporter not in EXPORTERS:
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER={exporter!r}: this server exports to one of {EXPORTERS}"
        )
    return exporter


def configure_tracing() -> bool:
    """Instruments gRPC servers and psycopg connections made from now on; True when on.

    Call it before the server and the connection pool are created.
    """
    exporter_name = wanted()
    if exporter_name is None:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.grpc import GrpcInstrumentorServer
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
            SpanExporter,
        )
    except ImportError as e:
        raise TracingUnavailable(
            f"tracing needs the OpenTelemetry packages (pip install 'posledger[tracing]'): {e}"
        ) from None
    service = os.environ.get("OTEL_SERVICE_NAME") or "posledger"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter_name == "console":
        # Spans are printed as they end, on stdout (logs stay alone on stderr).
        exporter: SpanExporter = ConsoleSpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    GrpcInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    PsycopgInstrumentor().instrument(skip_dep_check=True)
    log.info("tracing", exporter=exporter_name, service=service)
    return True


def shutdown_tracing() -> None:
    """Sends what is still buffered (the batch exporter works in the background)."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()
