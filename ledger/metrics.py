"""Prometheus metrics for operators, served by `posledger serve --metrics-port`.

RPCs are counted where each call's one log line is written (the usual `grpc_server_*` names
and labels, so stock gRPC dashboards work). Everything else is read when Prometheus scrapes,
from state the process keeps anyway (the writer's group statistics, the pool's counters, the
store monitor's gate) or from the database (view lag, chain head): nothing is added to the
write path.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import psycopg
import structlog
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from ledger.application import Ledger
    from ledger.audit import ChainKeeper
    from ledger.deliveries.worker import Deliveries
    from projections.follow import RunnerState
    from projections.runner import Projections

log = structlog.get_logger("posledger.metrics")

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
RPC_STARTED = Counter("grpc_server_started", "RPCs started on the server.", _RPC_LABELS)
RPC_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, by status code.",
    (*_RPC_LABELS, "grpc_code"),
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its status, in seconds.",
    _RPC_LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def rpc_kind(*, client_streaming: bool, server_streaming: bool) -> str:
    if client_streaming:
        return "bidi_stream" if server_streaming else "client_stream"
    return "server_stream" if server_streaming else "unary"


def rpc_started(method: str, kind: str) -> None:
    _children(method, kind)[0].inc()


def rpc_handled(method: str, kind: str, code: grpc.StatusCode, seconds: float) -> None:
    seconds_histogram = _children(method, kind)[1]
    handled = _handled.get((method, kind, code))
    if handled is None:
        service, name = _split(method)
        handled = _handled[(method, kind, code)] = RPC_HANDLED.labels(
            kind, service, name, code.name
        )
    handled.inc()
    seconds_histogram.observe(seconds)


# Label lookups cost more than the counting itself; each method's children are kept.
_started: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
_handled: dict[tuple[str, str, grpc.StatusCode], Counter] = {}


def _children(method: str, kind: str) -> tuple[Counter, Histogram]:
    children = _started.get((method, kind))
    if children is None:
        service, name = _split(method)
        children = _started[(method, kind)] = (
            RPC_STARTED.labels(kind, service, name),
            RPC_SECONDS.labels(kind, service, name),
        )
    return children


def _split(method: str) -> tuple[str, str]:
    """`/ledger.v1.SalesService/CreateSale` → (`ledger.v1.SalesService`, `CreateSale`)."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class LedgerCollector(Collector):
    """Reads one ledger's state at scrape time: writer, pool, store, views, chain."""

    def __init__(
        self,
        ledger: Ledger,
        projections: Projections | None = None,
        runner: RunnerState | None = None,
        deliveries: Deliveries | None = None,
        chain: ChainKeeper | None = None,
    ) -> None:
        self.ledger = ledger
        self.projections = projections
        self.runner = runner
        self.deliveries = deliveries
        self.chain = chain

    def collect(self) -> Iterator[Metric]:
        yield from self._writer()
        yield from self._pool()
        yield _gauge("posledger_store_up", "1 while the event store answers.", self._store_up())
        if self.runner is not None:
            yield from self._runner(self.runner)
        with contextlib.suppress(psycopg.Error):  # a scrape during an outage shows the rest
            yield from self._views()
        with contextlib.suppress(psycopg.Error):
            yield from self._chain()
        with contextlib.suppress(psycopg.Error):
            yield from self._deliveries()

    def _store_up(self) -> float:
        gate = getattr(self.ledger, "store_gate", None)
        return 1.0 if gate is None or gate.is_open else 0.0

    def _writer(self) -> Iterator[Metric]:
        stats = self.ledger.ledger_recorder.writer_stats()
        if stats is None:
            return
        yield _counter("posledger_commit_groups", "Commit groups written.", stats.groups)
        yield _counter("posledger_commit_commands", "Commands committed in groups.", stats.commands)
        yield _counter("posledger_commit_events", "Events committed in groups.", stats.events)
        yield _counter(
            "posledger_commit_deferred",
            "Commands deferred to the next group (they touched what an earlier one wrote).",
            stats.deferred,
        )
        yield _counter(
            "posledger_commit_chained",
            "Commands committed in the group of the earlier command whose state they decided on.",
            stats.chained,
        )
        yield _counter(
            "posledger_commit_call_seconds",
            "Time spent in the group commit call, as the writer saw it.",
            stats.seconds_in_database,
        )
        yield _counter(
            "posledger_commit_lock_held_seconds",
            "Time the events-table lock was held, measured inside PostgreSQL.",
            stats.lock_held_seconds,
        )
        yield _gauge(
            "posledger_commit_lock_held_max_seconds",
            "The longest the events-table lock was held by one group.",
            stats.longest_lock_held,
        )
        yield _gauge(
            "posledger_commit_group_max_commands", "The largest group.", stats.largest_group
        )

    def _pool(self) -> Iterator[Metric]:
        stats = self.ledger.ledger_recorder.datastore.pool.get_stats()
        yield _gauge(
            "posledger_db_pool_size", "Connections in the pool.", stats.get("pool_size", 0)
        )
        yield _gauge(
            "posledger_db_pool_available",
            "Idle connections in the pool.",
            stats.get("pool_available", 0),
        )
        yield _gauge(
            "posledger_db_pool_requests_waiting",
            "Callers waiting for a connection now.",
            stats.get("requests_waiting", 0),
        )
        yield _counter(
            "posledger_db_pool_requests",
            "Connections asked of the pool.",
            stats.get("requests_num", 0),
        )
        yield _counter(
            "posledger_db_pool_wait_seconds",
            "Time callers waited for a connection.",
            stats.get("requests_wait_ms", 0) / 1000,
        )
        yield _counter(
            "posledger_db_pool_timeouts",
            "Callers that gave up waiting for a connection.",
            stats.get("requests_errors", 0),
        )

    def _runner(self, runner: RunnerState) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            "posledger_views_runner_state",
            "The in-process views runner's state (1 for the current one).",
            labels=["state"],
        )
        for state in ("not started", "running", "reconnecting", "stopped"):
            states.add_metric([state], 1.0 if runner.state == state else 0.0)
        yield states
        yield _gauge(
            "posledger_views_held",
            "Views this process applies (the others stand by).",
            len(runner.held),
        )

    def _views(self) -> Iterator[Metric]:
        if self.projections is None:
            return
        position = GaugeMetricFamily(
            "posledger_view_position", "Last log position applied.", labels=["view"]
        )
        lag_events = GaugeMetricFamily(
            "posledger_view_lag_events", "Events written but not yet applied.", labels=["view"]
        )
        lag_seconds = GaugeMetricFamily(
            "posledger_view_lag_seconds",
            "Age of the oldest event not yet applied (0 when caught up).",
            labels=["view"],
        )
        for status in self.projections.status():
            position.add_metric([status.view], status.position)
            lag_events.add_metric([status.view], status.lag_events)
            lag_seconds.add_metric([status.view], status.lag_seconds)
        yield from (position, lag_events, lag_seconds)

    def _chain(self) -> Iterator[Metric]:
        if self.chain is None:
            return
        head = self.chain.head()
        yield _gauge(
            "posledger_chain_head_position",
            "The last log position the audit hash chain covers.",
            head.position,
        )

    def _deliveries(self) -> Iterator[Metric]:
        if self.deliveries is None:
            return
        status = self.deliveries.status()
        by_status = GaugeMetricFamily(
            "posledger_deliveries",
            "Deliveries (callbacks and webhooks) by status: pending, delivered, failed, gone, "
            "refused.",
            labels=["status"],
        )
        for name in ("pending", "delivered", "failed", "gone", "refused"):
            by_status.add_metric([name], status["counts"].get(name, 0))
        yield by_status
        backlog = status["backlog"]
        yield _gauge(
            "posledger_deliveries_due", "Pending deliveries due now.", backlog.get("due") or 0
        )
        yield _gauge(
            "posledger_deliveries_retrying",
            "Pending deliveries that failed at least once.",
            backlog.get("retrying") or 0,
        )
        yield _gauge(
            "posledger_deliveries_oldest_pending_seconds",
            "Age of the oldest pending delivery (0 when none).",
            backlog.get("oldest_seconds") or 0.0,
        )
        outbox = status["outbox"]
        yield _gauge(
            "posledger_outbox_position", "Last log position the outbox read.", outbox["position"]
        )
        yield _gauge(
            "posledger_outbox_lag_events",
            "Events after the outbox's position that may owe a delivery.",
            outbox["lag_events"],
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


@dataclass
class MetricsEndpoint:
    """The HTTP endpoint Prometheus scrapes (`/metrics`), with this process's collector."""

    server: WSGIServer
    thread: threading.Thread
    collector: LedgerCollector

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @classmethod
    def start(cls, collector: LedgerCollector, host: str, port: int) -> MetricsEndpoint:
        REGISTRY.register(collector)
        server, thread = start_http_server(port, addr=host)
        endpoint = cls(server=server, thread=thread, collector=collector)
        log.info("metrics_serving", host=host, port=endpoint.port)
        return endpoint

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        REGISTRY.unregister(self.collector)
