"""A delivery over https: sent to the checked address, the certificate checked for the name."""

from __future__ import annotations

import ipaddress
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.deliveries import signing
from ledger.deliveries.sender import Sender
from ledger.deliveries.store import DELIVERED, PENDING, Delivery
from ledger.store import Settings
from tests.e2e.certs import CertificateAuthority
from tests.receiver import Receiver, receiving


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, ssl.SSLContext]]:
    ca = CertificateAuthority()
    issued = ca.issue("localhost", server=True)  # names localhost and 127.0.0.1 only
    (tmp_path / "cert.pem").write_bytes(issued.certificate)
    (tmp_path / "key.pem").write_bytes(issued.private_key)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cadata=ca.pem.decode())
    with receiving(tls=server_side) as receiver:
        yield receiver, trusting


def delivery(url: str) -> Delivery:
    return Delivery(
        delivery_id=uuid.uuid4(),
        merchant_id="m",
        kind="stock.changed",
        url=url,
        app_id="",
        subscription_id=None,
        body='{"kind":"stock.changed"}',
        attempts=0,
        retry_from=datetime.now(UTC),
        lease_token=uuid.uuid4(),
    )


def sender(trusting: ssl.SSLContext) -> Sender:
    settings = replace(Settings(), delivery_allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    # Every name resolves to the receiver's address, as a DNS answer would say.
    return Sender(settings, resolver=lambda host, port: ["127.0.0.1"], verify=trusting)


def test_https_goes_to_the_checked_address_with_the_name_for_host_and_tls(
    tls_receiver: tuple[Receiver, ssl.SSLContext],
) -> None:
    receiver, trusting = tls_receiver
    s = sender(trusting)
    try:
        outcome = s.send(delivery(f"https://localhost:{receiver.port}/hook"), "whsec_k")
    finally:
        s.close()
    assert outcome.status == DELIVERED, outcome
    (got,) = receiver.received
    assert got.headers["Host"] == f"localhost:{receiver.port}"
    assert signing.DELIVERY_ID_HEADER in got.headers


def test_a_certificate_that_does_not_name_the_host_is_refused_though_the_address_matches(
    tls_receiver: tuple[Receiver, ssl.SSLContext],
) -> None:
    receiver, trusting = tls_receiver
    s = sender(trusting)
    try:
        # shop.test resolves to 127.0.0.1, which the certificate names; shop.test it does not.
        outcome = s.send(delivery(f"https://shop.test:{receiver.port}/hook"), "whsec_k")
    finally:
        s.close()
    assert outcome.status == PENDING  # retried: the name may get a right certificate
    assert "certificate" in outcome.error.lower() or "ssl" in outcome.error.lower(), outcome
    assert receiver.received == []
