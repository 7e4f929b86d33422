"""Who may call: API keys over `authorization` metadata, merchant isolation, dev mode."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.application import Ledger
from ledger.audit.events import AuditLog
from ledger.keys import Authenticator
from ledger.permissions import Role
from ledger.v1 import sales_pb2 as pb
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api
from tests.e2e.conftest import MakeChannel, MakeServer


def _unauthenticated(call: Callable[[], object], reason: str) -> api.RpcFailure:
    failure = api.expect_failure(call)
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED, failure
    assert failure.reason == reason
    assert failure.domain == "posledger"
    return failure


def test_with_keys_a_call_without_a_key_is_refused(ledger: Ledger, stub: SalesServiceStub) -> None:
    ledger.api_keys.create("merchant-a", "register")

    failure = _unauthenticated(lambda: api.create_sale(stub), "API_KEY_REQUIRED")

    assert "authorization" in failure.message
    _unauthenticated(lambda: api.get_sale(stub, str(uuid.uuid4())), "API_KEY_REQUIRED")


def test_a_valid_key_acts_for_its_merchant(ledger: Ledger, stub: SalesServiceStub) -> None:
    _, key = ledger.api_keys.create("merchant-a", "register")

    sale = api.create_sale(stub, metadata=api.bearer(key))

    assert api.get_sale(stub, sale.id, metadata=api.bearer(key)) == sale
    assert ledger.get_sale("merchant-a", sale.id).merchant_id == "merchant-a"


def test_bad_keys_are_refused(ledger: Ledger, stub: SalesServiceStub) -> None:
    key_id, key = ledger.api_keys.create("merchant-a", "register")
    secret = key.split("_", 2)[2]

    for metadata in [
        api.bearer(f"plk_{key_id}_{'x' * len(secret)}"),  # right key id, wrong secret
        api.bearer(f"plk_000000000000_{secret}"),  # unknown key id
        api.bearer("plk_garbage"),  # malformed
        api.bearer(""),
        (("authorization", f"Basic {key}"),),  # wrong scheme
        (("authorization", key),),  # no scheme
    ]:
        failure = _unauthenticated(
            functools.partial(api.create_sale, stub, metadata=metadata), "API_KEY_INVALID"
        )
        assert secret not in failure.message


def test_revoked_key_is_refused(
    ledger: Ledger, make_server: MakeServer, make_channel: MakeChannel
) -> None:
    server = make_server(Authenticator(ledger.api_keys, ttl=0))
    stub = SalesServiceStub(make_channel(server))
    key_id, key = ledger.api_keys.create("merchant-a", "register")
    sale = api.create_sale(stub, metadata=api.bearer(key))

    ledger.api_keys.revoke(key_id)

    _unauthenticated(
        lambda: api.get_sale(stub, sale.id, metadata=api.bearer(key)), "API_KEY_REVOKED"
    )
    _unauthenticated(lambda: api.create_sale(stub, metadata=api.bearer(key)), "API_KEY_REVOKED")


def test_merchants_cannot_see_each_others_sales(ledger: Ledger, stub: SalesServiceStub) -> None:
    _, key_a = ledger.api_keys.create("merchant-a", "register")
    _, key_b = ledger.api_keys.create("merchant-b", "register")
    a, b = api.bearer(key_a), api.bearer(key_b)
    sale = api.create_sale(stub, metadata=a)
    payment = api.request_payment(stub, sale.id, 500, metadata=a).payment
    missing = str(uuid.uuid4())

    def shape(failure: api.RpcFailure, sale_id: str) -> tuple[object, ...]:
        return (
            failure.code,
            failure.reason,
            failure.domain,
            failure.violations,
            failure.message.replace(sale_id, "<id>"),
        )

    calls: dict[str, Callable[[str], object]] = {
        "GetSale": lambda sale_id: api.get_sale(stub, sale_id, metadata=b),
        "AddLineItem": lambda sale_id: api.add_line_item(stub, sale_id, metadata=b),
        "RequestPayment": lambda sale_id: api.request_payment(stub, sale_id, 100, metadata=b),
        "RecordPaymentResult": lambda sale_id: api.record_result(
            stub, sale_id, payment.id, metadata=b
        ),
        "CancelSale": lambda sale_id: api.cancel_sale(stub, sale_id, metadata=b),
    }
    for name, call in calls.items():
        foreign = api.expect_failure(functools.partial(call, sale.id))
        absent = api.expect_failure(functools.partial(call, missing))
        assert foreign.code == grpc.StatusCode.NOT_FOUND, name
        assert foreign.reason == "SALE_NOT_FOUND", name
        assert shape(foreign, sale.id) == shape(absent, missing), name
        assert missing not in foreign.message

    # Nothing merchant B tried reached merchant A's sale.
    unchanged = api.get_sale(stub, sale.id, metadata=a)
    assert unchanged.version == 2
    assert unchanged.status == pb.SALE_STATUS_OPEN
    assert [p.status for p in unchanged.payments] == [pb.PAYMENT_STATUS_PENDING]


def test_request_ids_are_scoped_to_the_merchant(ledger: Ledger, stub: SalesServiceStub) -> None:
    _, key_a = ledger.api_keys.create("merchant-a", "register")
    _, key_b = ledger.api_keys.create("merchant-b", "register")
    request = api.create_sale_request()

    for_a = stub.CreateSale(request, timeout=api.TIMEOUT, metadata=api.bearer(key_a))
    for_b = stub.CreateSale(request, timeout=api.TIMEOUT, metadata=api.bearer(key_b))

    assert for_a.sale.id != for_b.sale.id, "B's request must not replay A's answer"
    assert ledger.get_sale("merchant-b", for_b.sale.id).merchant_id == "merchant-b"


def test_dev_mode_without_keys_acts_as_merchant_dev(
    ledger: Ledger, stub: SalesServiceStub, stubs: api.Stubs
) -> None:
    sale = api.create_sale(stub)
    customer = api.create_customer(stubs.customers)
    api.attach_customer(stub, sale.id, customer.id)

    assert api.get_sale(stub, sale.id).version == 2
    assert ledger.get_sale("dev", sale.id).merchant_id == "dev"


def test_dev_mode_ends_when_a_key_exists(
    ledger: Ledger, make_server: MakeServer, make_channel: MakeChannel
) -> None:
    server = make_server(Authenticator(ledger.api_keys, ttl=0))
    stub = SalesServiceStub(make_channel(server))
    sale = api.create_sale(stub)

    ledger.api_keys.create("merchant-a", "register")

    _unauthenticated(lambda: api.get_sale(stub, sale.id), "API_KEY_REQUIRED")


def test_without_dev_mode_no_keys_means_no_access(
    ledger: Ledger, make_server: MakeServer, make_channel: MakeChannel
) -> None:
    server = make_server(Authenticator(ledger.api_keys, allow_dev_mode=False))
    stub = SalesServiceStub(make_channel(server))

    _unauthenticated(lambda: api.create_sale(stub), "API_KEY_REQUIRED")
    _unauthenticated(lambda: api.get_sale(stub, str(uuid.uuid4())), "API_KEY_REQUIRED")


def test_health_needs_no_key(ledger: Ledger, channel: grpc.Channel) -> None:
    ledger.api_keys.create("merchant-a", "register")

    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="ledger.v1.SalesService"), timeout=api.TIMEOUT
    )

    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_garbage_credentials_are_unauthenticated_never_internal(
    ledger: Ledger, stub: SalesServiceStub
) -> None:
    ledger.api_keys.create("merchant-a", "register")
    printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        header=st.one_of(
            st.text(printable, max_size=80),
            st.text(printable, max_size=60).map(lambda t: f"Bearer {t}"),
            st.text(printable, max_size=60).map(lambda t: f"Bearer plk_{t}"),
            st.text(printable, max_size=60).map(lambda t: f"Bearer plk_{t}_{t}"),
        )
    )
    def run(header: str) -> None:
        failure = api.expect_failure(
            lambda: api.create_sale(stub, metadata=(("authorization", header),))
        )
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED, failure
        assert failure.reason in {"API_KEY_INVALID", "API_KEY_REQUIRED"}

    run()


def test_revoking_every_key_of_a_running_server_keeps_it_closed(
    ledger: Ledger, make_server: MakeServer, make_channel: MakeChannel
) -> None:
    server = make_server(Authenticator(ledger.api_keys, ttl=0))
    stub = SalesServiceStub(make_channel(server))
    sale = api.create_sale(stub)  # development mode: no key exists yet
    key_id, key = ledger.api_keys.create("merchant-a", "register")
    api.create_sale(stub, metadata=api.bearer(key))

    ledger.api_keys.revoke(key_id)

    assert not ledger.api_keys.any_active()
    _unauthenticated(lambda: api.create_sale(stub), "API_KEY_REQUIRED")
    _unauthenticated(lambda: api.get_sale(stub, sale.id), "API_KEY_REQUIRED")
    _unauthenticated(lambda: api.create_sale(stub, metadata=api.bearer(key)), "API_KEY_REVOKED")


def test_a_payment_is_filed_under_the_app_of_the_key(
    ledger: Ledger, stub: SalesServiceStub
) -> None:
    _, key = ledger.api_keys.create("merchant-a", "till", Role.CASHIER)
    sale = api.create_sale(stub, metadata=api.bearer(key))

    forged = api.expect_failure(
        lambda: api.request_payment(
            stub, sale.id, 100, metadata=api.bearer(key), app_id="someone-else"
        )
    )
    named = api.request_payment(stub, sale.id, 100, metadata=api.bearer(key), app_id="till")
    unnamed = api.request_payment(stub, sale.id, 100, metadata=api.bearer(key))

    assert (forged.code, forged.reason) == (grpc.StatusCode.PERMISSION_DENIED, "APP_ID_MISMATCH")
    assert forged.metadata == {"app_id": "till"}
    assert named.payment.app_id == unnamed.payment.app_id == "till"
    assert len(api.get_sale(stub, sale.id, metadata=api.bearer(key)).payments) == 2
    for record in AuditLog(ledger).history(uuid.UUID(sale.id), 0, 10):
        assert record.metadata["app_id"] == "till"
