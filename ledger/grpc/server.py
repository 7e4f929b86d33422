"""The gRPC server: ledger services, health and reflection on one port."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ledger.application import Ledger
from ledger.audit import ChainKeeper
from ledger.grpc.audit import AuditServicer
from ledger.grpc.catalog import CatalogServicer
from ledger.grpc.customers import CustomerServicer
from ledger.grpc.interceptors import ledger_interceptors
from ledger.grpc.inventory import InventoryServicer
from ledger.grpc.resources import Resources
from ledger.grpc.sales import SalesServicer
from ledger.grpc.webhooks import ChangeFeedServicer, WebhookServicer
from ledger.keys import Authenticator
from ledger.limits import Limits
from ledger.monitor import StoreMonitor
from ledger.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    sales_pb2,
    sales_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from projections.follow import RunnerState
from projections.queries import ReadModels

SERVICE_NAMES = [
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in [
        (sales_pb2, "SalesService"),
        (catalog_pb2, "CatalogService"),
        (customers_pb2, "CustomerService"),
        (inventory_pb2, "InventoryService"),
        (audit_pb2, "AuditService"),
        (webhooks_pb2, "WebhookService"),
        (webhooks_pb2, "ChangeFeedService"),
    ]
]


# Health of the views this process keeps up to date (registered when it runs them):
# SERVING while its projections runner is connected and following the log.
VIEWS_SERVICE = "posledger.Views"


class LedgerHealth(health.HealthServicer):
    """grpc.health.v1 whose watches the server can end when it stops.

    A watch holds no thread (it is answered from callbacks), but it never ends by itself,
    so a stopping server would wait out its whole grace period for it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._watches: set[Callable[[Any], None]] = set()
        self._watches_lock = threading.Lock()

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[Any], None] | None = None,
    ) -> Any:
        if send_response_callback is not None:
            with self._watches_lock:
                self._watches.add(send_response_callback)
            context.add_callback(lambda: self._forget(send_response_callback))
        return super().Watch(request, context, send_response_callback)

    def _forget(self, callback: Callable[[Any], None]) -> None:
        with self._watches_lock:
            self._watches.discard(callback)

    def end_watches(self) -> None:
        """Ends every open watch with OK, after the statuses already sent."""
        with self._watches_lock:
            watches, self._watches = self._watches, set()
        for send in watches:
            send(None)


@dataclass
class LedgerServer:
    server: grpc.Server
    port: int
    health: LedgerHealth
    monitor: StoreMonitor
    resources: Resources

    def start(self) -> None:
        self.server.start()
        self.monitor.listeners.append(self._store_changed)
        self.monitor.start()
        self._store_changed(self.monitor.available)

    def _store_changed(self, available: bool) -> None:
        """Health follows the store: NOT_SERVING while the database does not answer."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if available
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *SERVICE_NAMES]:
            self.health.set(name, status)  # ignored once graceful shutdown has begun

    def watch_views(self, state: RunnerState) -> None:
        """Reports this process's projections runner under `VIEWS_SERVICE`."""

        def changed(state: RunnerState) -> None:
            self.health.set(
                VIEWS_SERVICE,
                health_pb2.HealthCheckResponse.SERVING
                if state.running
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )

        state.listeners.append(changed)
        changed(state)

    def stop(self, grace: float = 10.0) -> None:
        """Reports NOT_SERVING, ends the open feeds, imports and waits at once (UNAVAILABLE
        SERVER_SHUTTING_DOWN), lets in-flight unary calls finish for `grace` seconds, stops.
        """
        self.health.enter_graceful_shutdown()
        self.resources.stop()
        stopped = self.server.stop(grace)  # no new calls from here on
        self.health.end_watches()  # they never end by themselves: they would hold the grace
        stopped.wait()
        self.monitor.stop()


@dataclass(frozen=True)
class TlsConfig:
    """The server's certificate chain and key (PEM); with `client_ca`, mutual TLS.

    With a client CA every client must present a certificate it signed; the certificate's
    subject may stand for an API key (`posledger keys create --client-subject`).
    """

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, cert: Path, key: Path, client_ca: Path | None = None) -> TlsConfig:
        return cls(
            cert.read_bytes(), key.read_bytes(), client_ca.read_bytes() if client_ca else None
        )

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_server(
    ledger: Ledger,
    address: str,
    *,
    authenticator: Authenticator,
    reads: ReadModels,
    chain: ChainKeeper,
    limits: Limits,
    max_workers: int = 16,
    tls: TlsConfig | None = None,
) -> LedgerServer:
    """A server bound to `address` (port 0 picks a free port) with the parts it serves
    from; `ledger.bootstrap.build_server` builds them. Call `start()`.

    `max_workers` threads are kept for unary calls: the pool has as many again as the
    `limits` let long-lived calls hold, so feeds, imports and waits never starve them.

    Without `tls` the port is plaintext: fine on loopback; `posledger serve` refuses any
    other address without TLS unless told `--insecure`.
    """
    monitor = StoreMonitor.for_ledger(ledger)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=max_workers + limits.long_lived, thread_name_prefix="rpc"
        ),
        interceptors=ledger_interceptors(authenticator, ledger.store_gate),
        options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    resources = Resources(ledger, reads.projections, limits)
    if reads.waits is None:
        reads.waits, reads.positions = resources.waits, resources.view_positions
    sales_pb2_grpc.add_SalesServiceServicer_to_server(
        SalesServicer(ledger, reads, resources), server
    )
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(ledger, reads), server)
    customers_pb2_grpc.add_CustomerServiceServicer_to_server(
        CustomerServicer(ledger, reads), server
    )
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(
        InventoryServicer(ledger, reads), server
    )
    audit_pb2_grpc.add_AuditServiceServicer_to_server(
        AuditServicer(ledger, resources, chain), server
    )
    webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(WebhookServicer(ledger), server)
    webhooks_pb2_grpc.add_ChangeFeedServiceServicer_to_server(
        ChangeFeedServicer(ledger, resources), server
    )
    health_servicer = LedgerHealth()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *SERVICE_NAMES]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.credentials())
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    return LedgerServer(
        server=server,
        port=port,
        health=health_servicer,
        monitor=monitor,
        resources=resources,
    )
