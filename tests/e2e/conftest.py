"""End-to-end fixtures: a real server on an ephemeral port and a real gRPC channel.

`ledger` (from tests/conftest.py) gives every test a fresh schema; `server` serves it on
127.0.0.1:<free port>; `channel` and `stub` talk to it over the loopback network. Tests that
need a differently configured server (an Authenticator with ttl=0, dev mode off, …) use
`make_server`, which stops whatever it started when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest

from ledger.application import Ledger
from ledger.bootstrap import build_server
from ledger.grpc.server import LedgerServer, TlsConfig
from ledger.keys import Authenticator
from ledger.v1.customers_pb2_grpc import CustomerServiceStub
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api
from tests.e2e.api_client import Metadata, Stubs, bearer

CONNECT_TIMEOUT = 10.0
STOP_GRACE = 1.0

MakeServer = Callable[..., LedgerServer]
MakeChannel = Callable[[LedgerServer], grpc.Channel]


@pytest.fixture
def make_server(ledger: Ledger) -> Iterator[MakeServer]:
    """Starts servers on ephemeral loopback ports; all of them stop after the test."""
    started: list[LedgerServer] = []

    def make(
        authenticator: Authenticator | None = None, tls: TlsConfig | None = None
    ) -> LedgerServer:
        server = build_server(ledger, "127.0.0.1:0", authenticator=authenticator, tls=tls)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(STOP_GRACE)


@pytest.fixture
def make_channel() -> Iterator[MakeChannel]:
    """Opens channels to servers, ready to use; all of them close after the test."""
    opened: list[grpc.Channel] = []

    def make(server: LedgerServer) -> grpc.Channel:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        opened.append(channel)
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
        return channel

    yield make
    for channel in opened:
        channel.close()


@pytest.fixture
def server(make_server: MakeServer) -> LedgerServer:
    return make_server()


@pytest.fixture
def channel(server: LedgerServer, make_channel: MakeChannel) -> grpc.Channel:
    return make_channel(server)


@pytest.fixture
def stub(channel: grpc.Channel) -> SalesServiceStub:
    return SalesServiceStub(channel)


@pytest.fixture
def stubs(channel: grpc.Channel) -> Stubs:
    """A stub for every ledger service on the test's channel."""
    return Stubs.on(channel)


@pytest.fixture
def two_merchants(ledger: Ledger) -> tuple[Metadata, Metadata]:
    """Bearer metadata for keys of merchants `merchant-a` and `merchant-b`.

    With keys in the database the server leaves development mode, so every call must
    carry one of them.
    """
    _, key_a = ledger.api_keys.create("merchant-a", "register")
    _, key_b = ledger.api_keys.create("merchant-b", "register")
    return bearer(key_a), bearer(key_b)


@pytest.fixture
def customer_id(channel: grpc.Channel) -> str:
    """A customer of the development-mode merchant: a sale's customer must exist."""
    customers = CustomerServiceStub(channel)
    return api.create_customer(customers, name="Test Customer").id


@pytest.fixture
def other_customer_id(channel: grpc.Channel) -> str:
    return api.create_customer(CustomerServiceStub(channel), name="Other Customer").id
