"""Load for the fault tests: clients running whole sales, each command retried with its
request id on UNAVAILABLE or DEADLINE_EXCEEDED until it is answered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from ledger.store import Settings
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api
from tests.faults.ledger_log import assert_one_set_of_events_per_request

CALL_TIMEOUT = 3.0
RETRY_FOR = 60.0  # a client gives up on a request after this long (the test then fails)
RESEND_THREADS = 8
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass
class Sent:
    call: Callable[..., Any]
    request: Message
    reply: Message
    retried: bool  # answered only after failed attempts


@dataclass
class Load:
    """Clients running whole sales; each command is retried by its request id until answered."""

    stub: SalesServiceStub
    clients: int = 4
    stop: threading.Event = field(default_factory=threading.Event)
    acknowledged: list[Sent] = field(default_factory=list)
    codes: list[grpc.StatusCode] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, call: Callable[..., Any], request: Message) -> Any:
        give_up = time.monotonic() + RETRY_FOR
        retried = False
        while True:
            try:
                reply = call(request, timeout=CALL_TIMEOUT)
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
                with self.lock:
                    self.codes.append(code)
                if code not in RETRYABLE or time.monotonic() > give_up:
                    raise
                retried = True
                time.sleep(0.05)
                continue
            with self.lock:
                self.acknowledged.append(Sent(call, request, reply, retried))
            return reply

    def client(self) -> None:
        try:
            while not self.stop.is_set():
                # A flow that has begun is finished, so the last retries run after the kills.
                sale = self.send(self.stub.CreateSale, api.create_sale_request()).sale
                payment = self.send(
                    self.stub.RequestPayment, api.request_payment_request(sale.id, sale.total)
                ).payment
                self.send(
                    self.stub.RecordPaymentResult, api.record_result_request(sale.id, payment.id)
                )
        except BaseException as e:
            self.errors.append(e)

    def __enter__(self) -> Load:
        self.threads = [
            threading.Thread(target=self.client, daemon=True) for _ in range(self.clients)
        ]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(RETRY_FOR + 10)
            assert not thread.is_alive(), "a client is still retrying"

    def resend_all(self) -> None:
        """Sends every acknowledged request again: each must answer its first reply.

        Sent from several threads at once, as the clients did (the server answers them no
        differently, and one at a time took most of a fault test's run).
        """

        def answers_first_reply(sent: Sent) -> bool:
            return bool(sent.call(sent.request, timeout=api.TIMEOUT) == sent.reply)

        with ThreadPoolExecutor(RESEND_THREADS) as pool:
            same = list(pool.map(answers_first_reply, self.acknowledged))
        assert all(same), [
            s.request for s, ok in zip(self.acknowledged, same, strict=True) if not ok
        ]

    @property
    def request_ids(self) -> list[str]:
        return [sent.request.request_id for sent in self.acknowledged]  # type: ignore[attr-defined]


def assert_every_acknowledged_command_once(load: Load, settings: Settings) -> None:
    """No client failed, nothing answered INTERNAL or UNKNOWN, some call needed a retry (the
    fault was felt), each acknowledged command is in the log once, and sending it again
    answers its first reply and writes nothing."""
    assert not load.errors, load.errors
    assert grpc.StatusCode.INTERNAL not in load.codes
    assert grpc.StatusCode.UNKNOWN not in load.codes
    assert any(sent.retried for sent in load.acknowledged), "no call needed a retry"
    assert len(load.acknowledged) >= 3 * load.clients
    url = settings.database_url or ""
    events = assert_one_set_of_events_per_request(url, settings.schema, load.request_ids)
    load.resend_all()
    assert assert_one_set_of_events_per_request(url, settings.schema, load.request_ids) == events
