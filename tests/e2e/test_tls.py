"""TLS and mutual TLS with real certificates made in the test and real TLS channels."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from ledger.application import Ledger
from ledger.audit.events import AuditLog
from ledger.grpc.server import LedgerServer, TlsConfig
from ledger.permissions import Role
from ledger.v1 import sales_pb2 as pb
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api
from tests.e2e.certs import CertificateAuthority, Issued
from tests.e2e.conftest import CONNECT_TIMEOUT, MakeServer


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture
def server_cert(ca: CertificateAuthority) -> Issued:
    return ca.issue("localhost", server=True)


@pytest.fixture
def channels() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def _tls_channel(
    server: LedgerServer,
    ca: CertificateAuthority,
    opened: list[grpc.Channel],
    client: Issued | None = None,
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.pem,
        private_key=client.private_key if client else None,
        certificate_chain=client.certificate if client else None,
    )
    channel = grpc.secure_channel(f"127.0.0.1:{server.port}", credentials)
    opened.append(channel)
    return channel


def test_tls_carries_calls_and_refuses_plaintext(
    ledger: Ledger,
    make_server: MakeServer,
    ca: CertificateAuthority,
    server_cert: Issued,
    channels: list[grpc.Channel],
) -> None:
    _, key = ledger.api_keys.create("merchant-a", "till", Role.CASHIER)
    server = make_server(tls=TlsConfig(server_cert.certificate, server_cert.private_key))
    channel = _tls_channel(server, ca, channels)
    grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
    stub = SalesServiceStub(channel)

    sale = api.create_sale(stub, metadata=api.bearer(key))

    assert api.get_sale(stub, sale.id, metadata=api.bearer(key)).id == sale.id
    plaintext = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    channels.append(plaintext)
    failure = api.expect_failure(
        lambda: SalesServiceStub(plaintext).GetSale(
            pb.GetSaleRequest(sale_id=sale.id), timeout=2, metadata=api.bearer(key)
        )
    )
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    other_ca = CertificateAuthority("someone else")
    untrusting = _tls_channel(server, other_ca, channels)
    failure = api.expect_failure(
        lambda: SalesServiceStub(untrusting).GetSale(
            pb.GetSaleRequest(sale_id=sale.id), timeout=2, metadata=api.bearer(key)
        )
    )
    assert failure.code == grpc.StatusCode.UNAVAILABLE  # the server's certificate is not trusted


def test_mutual_tls_requires_a_client_certificate_whose_subject_may_be_a_key(
    ledger: Ledger,
    make_server: MakeServer,
    ca: CertificateAuthority,
    server_cert: Issued,
    channels: list[grpc.Channel],
) -> None:
    till_id, _ = ledger.api_keys.create(
        "merchant-a", "till-7", Role.CASHIER, client_subject="O=Acme,CN=till-7"
    )
    _, office_key = ledger.api_keys.create("merchant-b", "office", Role.MANAGER)
    server = make_server(
        tls=TlsConfig(server_cert.certificate, server_cert.private_key, client_ca=ca.pem)
    )
    till = _tls_channel(server, ca, channels, ca.issue("till-7", organization="Acme"))
    unmapped = _tls_channel(server, ca, channels, ca.issue("kiosk-3", organization="Acme"))

    # The till's certificate is its key: no bearer token needed.
    sale = api.create_sale(SalesServiceStub(till))
    assert ledger.get_sale("merchant-a", sale.id).merchant_id == "merchant-a"
    (created,) = AuditLog(ledger).history(uuid.UUID(sale.id), 0, 10)
    assert (created.metadata["key_id"], created.metadata["app_id"]) == (till_id, "till-7")
    # The till key's permissions apply: a cashier may not void.
    failure = api.expect_failure(lambda: api.cancel_sale(SalesServiceStub(till), sale.id))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    # A certificate that maps to no key still needs a key, which then decides.
    failure = api.expect_failure(lambda: api.create_sale(SalesServiceStub(unmapped)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REQUIRED")
    other = api.create_sale(SalesServiceStub(unmapped), metadata=api.bearer(office_key))
    assert ledger.get_sale("merchant-b", other.id).merchant_id == "merchant-b"

    # Without a client certificate the handshake itself fails.
    anonymous = _tls_channel(server, ca, channels)
    failure = api.expect_failure(
        lambda: SalesServiceStub(anonymous).CreateSale(
            api.create_sale_request(), timeout=2, metadata=api.bearer(office_key)
        )
    )
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    # A certificate from another CA is refused too.
    stranger = CertificateAuthority("someone else").issue("till-7", organization="Acme")
    forged = _tls_channel(server, ca, channels, stranger)
    failure = api.expect_failure(
        lambda: SalesServiceStub(forged).CreateSale(api.create_sale_request(), timeout=2)
    )
    assert failure.code == grpc.StatusCode.UNAVAILABLE
