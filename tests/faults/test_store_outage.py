"""PostgreSQL stopped, restarted and paused under load, on a private cluster.

What must hold: health follows the store within 2 s both ways; while it is down every RPC
answers UNAVAILABLE / STORE_UNAVAILABLE with RetryInfo within 2 s (never INTERNAL, never a
hang); the first command after recovery succeeds; and every acknowledged command is
recorded exactly once, however many times its caller had to retry it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.bootstrap import build_server
from ledger.grpc.server import LedgerServer
from ledger.store import Settings
from ledger.v1 import audit_pb2 as audit_pb
from ledger.v1 import sales_pb2 as pb
from ledger.v1.audit_pb2_grpc import AuditServiceStub
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api
from tests.faults.conftest import PrivateCluster

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

HEALTH_WITHIN = 2.0
ANSWER_WITHIN = 2.0
CLIENTS = 4
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def server(fault_ledger: Ledger) -> Iterator[LedgerServer]:
    server = build_server(fault_ledger, "127.0.0.1:0")
    server.start()
    yield server
    server.stop(1.0)


@pytest.fixture
def channel(server: LedgerServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


def health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    status: int = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
    return status


def seconds_until(condition: Callable[[], bool], limit: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < limit, f"not within {limit} s"
        time.sleep(0.02)
    return time.monotonic() - started


@dataclass
class Load:
    """Clients creating sales, each retrying an unanswered request with its request id."""

    stub: SalesServiceStub
    stop: threading.Event = field(default_factory=threading.Event)
    acknowledged: dict[str, str] = field(default_factory=dict)  # request id → sale id
    codes: list[grpc.StatusCode] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> None:
        while not self.stop.is_set():
            request = api.create_sale_request()
            while True:  # the same request, until it is answered
                try:
                    sale = self.stub.CreateSale(request, timeout=5.0).sale
                except grpc.RpcError as error:
                    with self.lock:
                        self.codes.append(api.failure(error).code)
                    if self.stop.is_set():
                        break
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.acknowledged[request.request_id] = sale.id
                break

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive()


def assert_unavailable_fast(stub: SalesServiceStub, audit: AuditServiceStub, sale_id: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: stub.GetSale(pb.GetSaleRequest(sale_id=sale_id), timeout=30),
        lambda: stub.CreateSale(api.create_sale_request(), timeout=30),
        lambda: stub.ListSales(pb.ListSalesRequest(), timeout=30),
        lambda: audit.GetHistory(audit_pb.GetHistoryRequest(aggregate_id=sale_id), timeout=30),
        lambda: audit.VerifyLog(audit_pb.VerifyLogRequest(), timeout=30),
    ]
    for call in calls:
        started = time.monotonic()
        failure = api.expect_failure(call)
        elapsed = time.monotonic() - started
        assert failure.code == grpc.StatusCode.UNAVAILABLE, failure
        assert failure.reason == "STORE_UNAVAILABLE", failure
        assert failure.retry_delay_ms, failure
        assert elapsed < ANSWER_WITHIN, f"{failure} after {elapsed:.2f} s"


def assert_each_acknowledged_once(settings: Settings, load: Load) -> None:
    assert load.acknowledged, "no command was acknowledged"
    assert len(set(load.acknowledged.values())) == len(load.acknowledged)
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            SQL("SELECT request_id, aggregate_id::text FROM {}").format(
                Identifier(settings.schema, "processed_commands")
            )
        ).fetchall()
        created = conn.execute(
            SQL(
                "SELECT originator_id::text, count(*) FROM {} WHERE originator_version = 1"
                " GROUP BY originator_id"
            ).format(Identifier(settings.schema, "ledger_events"))
        ).fetchall()
    recorded: dict[str, str] = dict(rows)
    for request_id, sale_id in load.acknowledged.items():
        assert recorded.get(request_id) == sale_id
    assert all(n == 1 for _, n in created)


@pytest.mark.parametrize("fault", ["restart", "pause"])
def test_health_and_answers_follow_the_store_under_load(
    fault: str,
    cluster: PrivateCluster,
    fault_settings: Settings,
    server: LedgerServer,
    channel: grpc.Channel,
) -> None:
    stub = SalesServiceStub(channel)
    audit = AuditServiceStub(channel)
    sale = api.create_sale(stub)
    assert health(channel) == SERVING

    with Load(stub) as load:
        time.sleep(1.0)
        before = len(load.acknowledged)
        if fault == "restart":
            cluster.stop()
        else:
            cluster.pause()
        try:
            seconds_until(lambda: health(channel) == NOT_SERVING, HEALTH_WITHIN)
            assert_unavailable_fast(stub, audit, sale.id)
            time.sleep(1.0)
        finally:
            if fault == "restart":
                cluster.start()
            else:
                cluster.resume()
        ready = time.monotonic()
        seconds_until(lambda: health(channel) == SERVING, HEALTH_WITHIN)
        # The first command once health says so succeeds.
        api.create_sale(stub)
        assert time.monotonic() - ready < HEALTH_WITHIN + 1
        during = len(load.acknowledged)
        time.sleep(1.0)
    assert len(load.acknowledged) > during >= before
    assert grpc.StatusCode.INTERNAL not in load.codes
    assert grpc.StatusCode.UNKNOWN not in load.codes
    assert_each_acknowledged_once(fault_settings, load)
