"""Structured logs: one JSON object per line on stderr."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from ledger.domain.card_numbers import redacted


def _without_card_numbers(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Replaces every logged string shaped like a card number (tracebacks included)."""
    return {key: _redact(value) for key, value in event.items()}


def _redact(value: object) -> object:
    if isinstance(value, str):
        return redacted(value)
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines for our loggers and the libraries' (psycopg, grpc, eventsourcing) alike.

    Whatever is bound to the call's context (method, merchant, request id; see
    ledger/grpc/interceptors/call_log.py) is merged into every line logged while it is served.
    """
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        _without_card_numbers,
        # After the check: our own clock's stamp needs none (it was a fifth of the checks).
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO; each callback's attempt is logged by us already
    # (`delivery_attempted`, with its result), and the repeat cost deliveries a tenth of
    # their CPU under load.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
