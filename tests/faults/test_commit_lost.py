"""The connection to PostgreSQL is lost right after a commit: the retry by request id answers
the same reply, and the log holds one set of events.

A proxy (tests/faults/commit_proxy.py) between the server and PostgreSQL cuts the writer's
connection after PostgreSQL has committed a group and before the writer reads that it did.
Either the writer's own retry meets the committed record (the caller never notices), or,
when every attempt loses its answer, the caller gets UNAVAILABLE and retries itself. Never
INTERNAL, and never a second set of events.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from ledger.application import Ledger
from ledger.bootstrap import build_server
from ledger.group_commit import MAX_ATTEMPTS
from ledger.store import Settings
from ledger.v1 import sales_pb2 as pb
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api
from tests.faults.commit_proxy import CommitDroppingProxy
from tests.faults.ledger_log import assert_one_set_of_events_per_request
from tests.faults.load import Load, assert_every_acknowledged_command_once

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


@pytest.fixture
def proxy(settings: Settings) -> Iterator[CommitDroppingProxy]:
    with CommitDroppingProxy(settings.database_url or "") as proxy:
        yield proxy


@pytest.fixture
def stub(settings: Settings, proxy: CommitDroppingProxy) -> Iterator[SalesServiceStub]:
    """A server whose every database connection goes through the proxy."""
    ledger = Ledger.open(dataclasses.replace(settings, database_url=proxy.url()))
    server = build_server(ledger, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            yield SalesServiceStub(channel)
    finally:
        server.stop(1.0)
        ledger.close()


def send_losing_commits(
    settings: Settings,
    proxy: CommitDroppingProxy,
    call: Callable[..., Any],
    request: Message,
    commits: int,
) -> tuple[Message | None, Message]:
    """Sends `request` while the next `commits` commits lose their answer, then once more
    with the same request id: (the first reply or None if it failed, the retry's reply)."""
    dropped = proxy.dropped
    proxy.drop_next(commits)
    try:
        first: Message | None = call(request, timeout=api.TIMEOUT)
    except grpc.RpcError as error:
        failure = api.failure(error)
        assert failure.code == grpc.StatusCode.UNAVAILABLE, failure
        assert failure.reason == "STORE_UNAVAILABLE", failure
        first = None
    finally:
        proxy.drop_next(0)
    # Each attempt of the writer loses its answer, unless it failed before (at connect).
    assert dropped < proxy.dropped <= dropped + commits, "the proxy lost no commit"
    # Lost after the commit: the command is in the log before anyone retries it.
    request_id = request.request_id  # type: ignore[attr-defined]
    url = settings.database_url or ""
    assert assert_one_set_of_events_per_request(url, settings.schema, [request_id]) > 0
    retry: Message = call(request, timeout=api.TIMEOUT)
    return first, retry


@pytest.mark.parametrize(
    ("commits", "who_retries"),
    [(1, "the writer"), (MAX_ATTEMPTS, "the caller")],
    ids=["writer-retries", "caller-retries"],
)
def test_a_commit_whose_answer_is_lost_is_answered_once_on_retry(
    settings: Settings,
    proxy: CommitDroppingProxy,
    stub: SalesServiceStub,
    commits: int,
    who_retries: str,
) -> None:
    create = api.create_sale_request()
    first, sale = send_losing_commits(settings, proxy, stub.CreateSale, create, commits)
    assert isinstance(sale, pb.CreateSaleResponse)
    pay = api.request_payment_request(sale.sale.id, sale.sale.total)
    first_pay, payment = send_losing_commits(settings, proxy, stub.RequestPayment, pay, commits)
    assert isinstance(payment, pb.RequestPaymentResponse)
    result = api.record_result_request(sale.sale.id, payment.payment.id)
    first_result, completed = send_losing_commits(
        settings, proxy, stub.RecordPaymentResult, result, commits
    )
    assert isinstance(completed, pb.RecordPaymentResultResponse)
    assert completed.sale.status == pb.SALE_STATUS_COMPLETED

    firsts = [first, first_pay, first_result]
    if who_retries == "the writer":
        # The writer's second attempt found its group committed: the caller saw nothing.
        assert firsts == [sale, payment, completed]
    else:
        assert firsts == [None, None, None]
    # Once more, with nothing lost: still the same replies.
    assert stub.CreateSale(create, timeout=api.TIMEOUT) == sale
    assert stub.RequestPayment(pay, timeout=api.TIMEOUT) == payment
    assert stub.RecordPaymentResult(result, timeout=api.TIMEOUT) == completed
    assert api.get_sale(stub, sale.sale.id) == completed.sale

    # One set of events per request: together, exactly the sale's events.
    request_ids = [create.request_id, pay.request_id, result.request_id]
    events = assert_one_set_of_events_per_request(
        settings.database_url or "", settings.schema, request_ids
    )
    assert events == completed.sale.version


# In turn: one lost answer (the writer's retry finds the group committed), then every
# attempt of a group (its callers get UNAVAILABLE and retry).
LOSSES = [1, MAX_ATTEMPTS] * 3
LOSS_WITHIN = 10.0


def test_commits_lost_under_load_are_each_answered_once(
    settings: Settings, proxy: CommitDroppingProxy, stub: SalesServiceStub
) -> None:
    """Groups of many commands lose their answer while clients run whole sales: a lost
    group's commands are all answered once, by the writer's retry or the callers'."""
    with Load(stub, clients=6) as load:
        for commits in LOSSES:
            lost = proxy.dropped + commits
            proxy.drop_next(commits)
            deadline = time.monotonic() + LOSS_WITHIN
            while proxy.dropped < lost:
                assert time.monotonic() < deadline, "the commits were not lost"
                time.sleep(0.01)
            time.sleep(0.2)  # load without losses between
    assert_every_acknowledged_command_once(load, settings)
