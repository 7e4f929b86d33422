"""One JSON format for our log lines and the libraries', with the call's context merged in."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from ledger.logging import configure_logging


@pytest.fixture
def configured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """The test configures logging itself (streams are only captured while it runs)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield capsys
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_library_records_are_json_with_the_bound_call_context(
    configured: pytest.CaptureFixture[str],
) -> None:
    configure_logging()
    tokens = structlog.contextvars.bind_contextvars(
        method="/ledger.v1.SalesService/CreateSale", merchant="m-1", request_id="r-1"
    )
    logging.getLogger("psycopg.pool").error("error connecting in %r: %s", "pool-1", "refused")
    structlog.get_logger("posledger.rpc").info("rpc", status="OK")
    structlog.contextvars.reset_contextvars(**tokens)
    logging.getLogger("grpc").warning("after the call")

    library, ours, after = _lines(configured)
    assert library["event"] == "error connecting in 'pool-1': refused"
    assert library["logger"] == "psycopg.pool"
    assert library["level"] == "error"
    for line in (library, ours):
        assert line["method"] == "/ledger.v1.SalesService/CreateSale"
        assert line["merchant"] == "m-1"
        assert line["request_id"] == "r-1"
    assert "merchant" not in after


def test_library_records_lose_card_numbers_too(configured: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    logging.getLogger("eventsourcing").error("bad payload %s", "4111 1111 1111 1111")
    (line,) = _lines(configured)
    assert "4111" not in json.dumps(line)
