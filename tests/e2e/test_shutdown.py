"""Graceful shutdown of `posledger serve` on SIGTERM, with calls of every kind open.

Health turns NOT_SERVING at once; the open event feed, import stream and parked
`min_position` wait end with UNAVAILABLE SERVER_SHUTTING_DOWN; a command in flight
finishes and is recorded; the process exits 0 within its grace period.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.v1 import audit_pb2 as audit_pb
from ledger.v1 import sales_pb2 as pb
from ledger.v1.audit_pb2_grpc import AuditServiceStub
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api
from tests.e2e.test_cli import ServeProcess, cli_env  # noqa: F401 (a fixture)

GRACE = 8.0
PROMPTLY = 1.5  # seconds within which each open call must hear of the shutdown
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def serve(cli_env: dict[str, str], tmp_path: Path) -> Iterator[ServeProcess]:  # noqa: F811
    env = {**cli_env, "POSLEDGER_IMPORT_IDLE_TIMEOUT": "60"}
    process = ServeProcess(env, tmp_path / "serve.stderr", "--grace", str(GRACE))
    try:
        yield process
    finally:
        process.kill()


def _silent(until: threading.Event) -> Iterator[pb.ImportSalesRequest]:
    """An import stream that sends nothing."""
    until.wait()
    yield from ()


def _failure_when_done(future: Any) -> api.RpcFailure:
    error = future.exception(timeout=PROMPTLY + GRACE)
    assert isinstance(error, grpc.RpcError), f"expected the call to fail, got {error!r}"
    return api.failure(error)


def test_sigterm_ends_streams_clearly_finishes_calls_in_flight_and_exits_0(
    serve: ServeProcess, ledger: Ledger
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{serve.port}")
    never = threading.Event()
    try:
        serve.wait_until_serving(channel)
        sales = SalesServiceStub(channel)
        api.create_sale(sales)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
        assert next(watch).status == SERVING
        feed = iter(
            AuditServiceStub(channel).StreamEvents(
                audit_pb.StreamEventsRequest(from_position=1), timeout=30
            )
        )
        assert next(feed).event.position >= 1
        upload = sales.ImportSales.future(_silent(never), timeout=30)
        wait = sales.ListSales.future(pb.ListSalesRequest(min_position=2**62), timeout=30)

        # A command held in flight: the events table is locked, so its commit waits.
        table = Identifier(ledger.settings.schema, ledger.ledger_recorder.events_table_name)
        with psycopg.connect(ledger.database_url) as holder:
            holder.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
            in_flight = sales.CreateSale.future(api.create_sale_request(), timeout=30)
            time.sleep(0.5)
            assert not in_flight.done()
            assert not upload.done()
            assert not wait.done()

            signalled = time.monotonic()
            serve.process.terminate()  # SIGTERM
            assert next(watch).status == NOT_SERVING
            health_after = time.monotonic() - signalled

            def feed_end() -> None:
                next(feed)

            ended_feed = api.expect_failure(feed_end)
            feed_after = time.monotonic() - signalled
            ended_upload = _failure_when_done(upload)
            ended_wait = _failure_when_done(wait)
            streams_after = time.monotonic() - signalled
            assert not in_flight.done(), "the command should still wait for the lock"
            holder.rollback()  # lets the command in flight commit

        sale = in_flight.result(timeout=GRACE).sale
        assert list(watch) == [], "the health watch ends (OK) once the server stops"
        exit_code = serve.process.wait(timeout=GRACE + 5)
        exited_after = time.monotonic() - signalled
    finally:
        never.set()
        channel.close()

    print(
        f"\nafter SIGTERM: NOT_SERVING {health_after:.2f} s, feed ended {feed_after:.2f} s, "
        f"import and wait ended {streams_after:.2f} s, exit 0 at {exited_after:.2f} s"
    )
    assert health_after < PROMPTLY
    assert feed_after < PROMPTLY
    assert streams_after < PROMPTLY
    for ended in (ended_feed, ended_upload, ended_wait):
        assert ended.code == grpc.StatusCode.UNAVAILABLE, ended
        assert ended.reason == "SERVER_SHUTTING_DOWN", ended
        assert ended.retry_delay_ms is not None
    assert exit_code == 0, serve.stderr
    assert exited_after < GRACE
    assert str(ledger.get_sale("dev", sale.id).id) == sale.id, "the command in flight was recorded"
