"""The composition root: every part of the service is built here, from settings, and is
handed what it needs; nothing else constructs another room's parts.

`posledger serve` calls `build_service` once and runs what it gets; the other commands and
the tests' fixtures call the smaller builders (`open_ledger`, `build_views`,
`build_deliveries`, `build_expiry`, `build_chain_keeper`, `build_server`). A part whose
constructor changes is changed here only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from ledger.application import Ledger
from ledger.audit import ChainKeeper
from ledger.deliveries.outbox import OutboxView
from ledger.deliveries.relay import Publisher, RelayFollower, RelayView
from ledger.deliveries.sender import Sender
from ledger.deliveries.store import DeliveryStore
from ledger.deliveries.worker import Deliveries, OutboxFollower
from ledger.expiry import Expiry
from ledger.grpc.server import LedgerServer, TlsConfig, create_server
from ledger.heap import freeze_startup_objects
from ledger.keys import Authenticator
from ledger.limits import Limits
from ledger.metrics import LedgerCollector, MetricsEndpoint
from ledger.store import Settings, bounded_url, database_url
from ledger.tracing import configure_tracing, shutdown_tracing
from projections import projections_for
from projections.queries import ReadModels
from projections.runner import Projections


def start_tracing() -> bool:
    """OpenTelemetry, when the environment asks for it; True when on.

    Call it before `open_ledger`: only connections made afterwards are traced.
    """
    return configure_tracing()


def open_ledger(settings: Settings | None = None) -> Ledger:
    """The event store, its recorder and pool, and the application on them, from
    `settings` (else the environment); creates missing tables."""
    ledger: Ledger = Ledger.open(settings or Settings.from_env())
    return ledger


def build_views(ledger: Ledger) -> Projections:
    """The read views over the ledger's log and the runner that keeps them current."""
    return projections_for(ledger.event_log)


def build_chain_keeper(settings: Settings) -> ChainKeeper:
    """The audit chain of the configured ledger, reached without creating or changing
    anything (`audit verify` opens no ledger)."""
    return ChainKeeper(bounded_url(database_url(settings), settings), settings.schema)


def build_deliveries(ledger: Ledger, sender: Sender | None = None) -> Deliveries:
    """The outbox follower, the senders and (with `POSLEDGER_NATS_URL`) the NATS relay."""
    settings = ledger.settings
    store = DeliveryStore(ledger.ledger_recorder.datastore)
    outbox = OutboxFollower(ledger.event_log, [OutboxView(ledger.event_log, store)])
    relay = None
    if settings.nats_url:
        publisher = Publisher(settings.nats_url, settings.nats_stream, settings.nats_subject_prefix)
        relay = RelayFollower(ledger.event_log, [RelayView(ledger.event_log, publisher)])
    return Deliveries(ledger, store, outbox, relay, sender)


def build_expiry(ledger: Ledger, views: Projections | None = None) -> Expiry:
    """The worker that expires payments pending past their deadline (it reads the orders
    view)."""
    return Expiry(ledger, views if views is not None else build_views(ledger))


def build_server(
    ledger: Ledger,
    address: str = "127.0.0.1:0",
    *,
    authenticator: Authenticator | None = None,
    reads: ReadModels | None = None,
    max_workers: int = 16,
    limits: Limits | None = None,
    tls: TlsConfig | None = None,
) -> LedgerServer:
    """The gRPC server on `address` (port 0 picks a free one), with its views' tables and
    the outbox created. Call `start()`.

    Queries read views of their own (`reads`) that some runner must follow, so a server
    that runs no views answers `VIEWS_NOT_RUNNING` instead of stale pages.
    """
    if reads is None:
        views = build_views(ledger)
        views.ensure()
        reads = ReadModels(views, require_runner=True)
    build_deliveries(ledger).ensure()  # the outbox starts with the first server
    return create_server(
        ledger,
        address,
        authenticator=authenticator or Authenticator(ledger.api_keys),
        reads=reads,
        chain=build_chain_keeper(ledger.settings),
        max_workers=max_workers,
        limits=limits or ledger.settings.limits,
        tls=tls,
    )


@dataclass
class Service:
    """One process of `posledger serve`: the server and the workers beside it."""

    ledger: Ledger
    server: LedgerServer
    views: Projections | None
    deliveries: Deliveries | None
    expiry: Expiry | None
    metrics: LedgerCollector | None
    metrics_address: tuple[str, int] | None
    tracing: bool

    @contextmanager
    def running(self, grace: float) -> Iterator[None]:
        """Metrics, the workers and the server for the duration of the block; then the
        server stops (in-flight calls get `grace` seconds), the workers, the metrics."""
        endpoint = None
        if self.metrics is not None and self.metrics_address is not None:
            endpoint = MetricsEndpoint.start(self.metrics, *self.metrics_address)
        with ExitStack() as workers:
            for worker in (self.views, self.deliveries, self.expiry):
                if worker is not None:
                    workers.enter_context(worker.running())
            freeze_startup_objects()
            self.server.start()
            try:
                yield
            finally:
                self.server.stop(grace)
        if endpoint is not None:
            endpoint.stop()

    def close(self) -> None:
        self.ledger.close()
        if self.tracing:
            shutdown_tracing()


def build_service(
    ledger: Ledger,
    address: str,
    *,
    authenticator: Authenticator,
    max_workers: int = 16,
    tls: TlsConfig | None = None,
    views: bool = True,
    deliveries: bool = True,
    expiry: bool = True,
    metrics_address: tuple[str, int] | None = None,
    tracing: bool = False,
) -> Service:
    """Everything one server process runs: the server, and as asked the views' runner (its
    health reported as `posledger.Views`), deliveries, expiry and the metrics endpoint."""
    server = build_server(
        ledger, address, authenticator=authenticator, max_workers=max_workers, tls=tls
    )
    runner = build_views(ledger) if views else None
    if runner is not None:
        server.watch_views(runner.state)
    outbound = build_deliveries(ledger) if deliveries else None
    collector = None
    if metrics_address is not None:
        collector = LedgerCollector(
            ledger,
            runner,
            runner.state if runner is not None else None,
            outbound or build_deliveries(ledger),
            build_chain_keeper(ledger.settings),
        )
    return Service(
        ledger=ledger,
        server=server,
        views=runner,
        deliveries=outbound,
        expiry=build_expiry(ledger) if expiry else None,
        metrics=collector,
        metrics_address=metrics_address,
        tracing=tracing,
    )
