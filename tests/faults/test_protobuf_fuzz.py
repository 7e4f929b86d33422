"""Every RPC of every ledger service, fuzzed over a real channel: never INTERNAL or UNKNOWN.

The methods come from the generated descriptors (`ledger/v1/*_pb2.py`), so a new RPC is
fuzzed without touching this file. Each gets messages built from its request descriptor
(tests/faults/protofuzz.py) and raw bytes (random, or a real message cut or flipped), from
a caller whose key holds every role, against a server whose views are followed. After each
RPC's run the server must still be healthy and answer a plain read.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.sql import SQL, Identifier

import ledger.v1
from ledger.application import Ledger
from ledger.bootstrap import build_server, build_views
from ledger.permissions import Role
from ledger.store import Settings
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from projections.queries import ReadModels
from tests.e2e import api_client as api
from tests.faults.protofuzz import messages, raw_requests

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

# Per RPC: messages from the descriptor, then raw bytes. CI may raise it for a longer run.
EXAMPLES = int(os.environ.get("POSLEDGER_FUZZ_EXAMPLES", "30"))
RAW_EXAMPLES = max(EXAMPLES // 2, 5)
CALL_TIMEOUT = 10.0
STREAM_TIMEOUT = 0.3  # a subscription that follows the log answers until its deadline
STREAMED_MESSAGES = 3
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def ledger_methods() -> list[MethodDescriptor]:
    methods: list[MethodDescriptor] = []
    for info in pkgutil.iter_modules(ledger.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"ledger.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods.extend(service.methods)
    return methods


METHODS = ledger_methods()


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass(frozen=True)
class Target:
    channel: grpc.Channel
    metadata: api.Metadata
    known: list[str]  # ids of real things of the caller's merchant
    sale_id: str


@pytest.fixture(scope="module")
def target(database_url: str) -> Iterator[Target]:
    """One server for the module: a fresh schema, views followed, a key with every role."""
    schema = f"fuzz_{uuid.uuid4().hex[:12]}"
    ledger = Ledger.open(Settings(database_url=database_url, schema=schema, pool_size=4))
    _, key = ledger.api_keys.create("fuzz-merchant", "fuzzer", list(Role))
    views = build_views(ledger)
    views.ensure()
    # A short wait for `min_position`: the fuzz asks for positions far ahead all the time.
    reads = ReadModels(views, wait_seconds=0.2, require_runner=True)
    server = build_server(ledger, "127.0.0.1:0", reads=reads)
    try:
        with views.running():
            server.start()
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=10)
                metadata = api.bearer(key)
                yield Target(channel, metadata, *_seed(channel, metadata))
            server.stop(1.0)
    finally:
        ledger.close()
        _drop_schemas(database_url, schema)


def _seed(channel: grpc.Channel, metadata: api.Metadata) -> tuple[list[str], str]:
    """A paid sale, an open one with a pending payment, a product and a customer."""
    stubs = api.Stubs.on(channel)
    paid, payment = api.paid_sale(stubs.sales, metadata=metadata)
    open_sale = api.create_sale(stubs.sales, metadata=metadata)
    pending = api.request_payment(stubs.sales, open_sale.id, 500, metadata=metadata).payment
    product = api.create_product(stubs.catalog, metadata=metadata)
    customer = api.create_customer(stubs.customers, name="Fuzz Customer", metadata=metadata)
    line_ids = [line.line_id for line in open_sale.line_items]
    known = [paid.id, payment.id, open_sale.id, pending.id, product.id, customer.id, *line_ids]
    return [*known, product.sku, "store-1", "webshop"], open_sale.id


def _drop_schemas(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
            (schema, schema + r"\_\_%"),
        ).fetchall()
        for (name,) in names:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(name)))


def _caller(
    target: Target, method: MethodDescriptor, *, raw: bool
) -> Callable[[list[Any]], grpc.StatusCode]:
    """Sends requests (one for a unary request, all for a stream); returns the status."""
    path = path_of(method)
    serialize = None if raw else _serialized
    deserialize = GetMessageClass(method.output_type).FromString
    channel, metadata = target.channel, target.metadata

    def call(requests: list[Any]) -> grpc.StatusCode:
        try:
            if method.client_streaming and method.server_streaming:
                stream = channel.stream_stream(path, serialize, deserialize)
                _drain(stream(iter(requests), timeout=STREAM_TIMEOUT, metadata=metadata))
            elif method.client_streaming:
                unary = channel.stream_unary(path, serialize, deserialize)
                unary(iter(requests), timeout=CALL_TIMEOUT, metadata=metadata)
            elif method.server_streaming:
                responses = channel.unary_stream(path, serialize, deserialize)
                _drain(responses(requests[0], timeout=STREAM_TIMEOUT, metadata=metadata))
            else:
                single = channel.unary_unary(path, serialize, deserialize)
                single(requests[0], timeout=CALL_TIMEOUT, metadata=metadata)
        except grpc.RpcError as error:
            return _checked(method, error)
        return grpc.StatusCode.OK

    return call


def _checked(method: MethodDescriptor, error: grpc.RpcError) -> grpc.StatusCode:
    """The failed call's code, which must be one a client can act on."""
    path = path_of(method)
    assert isinstance(error, grpc.Call)
    code: grpc.StatusCode = error.code()
    assert code not in FORBIDDEN, f"{path} answered {code.name}: {error.details()}"
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        assert method.server_streaming, f"{path} did not answer within {CALL_TIMEOUT} s"
        return code
    failure = api.failure(error)
    assert failure.reason, f"{path} answered {code.name} without an ErrorInfo reason: {failure}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert failure.violations, f"{path}: INVALID_ARGUMENT names no field: {failure}"
    return code


def _serialized(message: Message) -> bytes:
    return message.SerializeToString()


def _drain(responses: Any) -> None:
    """Reads a few messages of a server stream, then hangs up."""
    for n, _ in enumerate(responses, start=1):
        if n >= STREAMED_MESSAGES:
            responses.cancel()
            return


def _count(method: MethodDescriptor) -> st.SearchStrategy[int]:
    return st.integers(1, 4) if method.client_streaming else st.just(1)


def _fuzz_settings(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _assert_healthy(target: Target) -> None:
    health = health_pb2_grpc.HealthStub(target.channel)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    sale = api.get_sale(SalesServiceStub(target.channel), target.sale_id, metadata=target.metadata)
    assert sale.id == target.sale_id


@pytest.mark.parametrize("method", METHODS, ids=path_of)
def test_no_message_makes_an_rpc_answer_internal(target: Target, method: MethodDescriptor) -> None:
    call = _caller(target, method, raw=False)

    @_fuzz_settings(EXAMPLES)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        requests = [
            data.draw(messages(method.input_type, target.known))
            for _ in range(data.draw(_count(method)))
        ]
        call(requests)

    fuzz()
    _assert_healthy(target)


@pytest.mark.parametrize("method", METHODS, ids=path_of)
def test_no_bytes_make_an_rpc_answer_internal(target: Target, method: MethodDescriptor) -> None:
    call = _caller(target, method, raw=True)

    @_fuzz_settings(RAW_EXAMPLES)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        requests = [
            data.draw(raw_requests(method.input_type, target.known))
            for _ in range(data.draw(_count(method)))
        ]
        call(requests)

    fuzz()
    _assert_healthy(target)


def test_every_rpc_is_fuzzed() -> None:
    names = {path_of(m) for m in METHODS}
    assert "/ledger.v1.SalesService/CreateSale" in names
    assert "/ledger.v1.SalesService/ImportSales" in names  # client streaming
    assert "/ledger.v1.AuditService/StreamEvents" in names  # server streaming
    assert len(names) >= 30
