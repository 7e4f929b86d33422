"""kill -9 of a real `posledger serve` under concurrent load, clients retrying by request id.

Clients run whole sales (create, request payment, approve it), each command retried with
its request id on UNAVAILABLE or DEADLINE_EXCEEDED until answered. The server is killed
mid-load and started again on the same port, twice. Then: every acknowledged command is in
the log once (one record, the events it names and no others), no call answered INTERNAL
or UNKNOWN, and sending each acknowledged request again answers the reply it first got.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ledger.store import Settings
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api
from tests.faults.ledger_log import assert_one_set_of_events_per_request

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

CLIENTS = 6
KILLS = 2
LOAD_BEFORE_KILL = 1.5  # seconds of load between (re)start and kill
CALL_TIMEOUT = 3.0
RETRY_FOR = 60.0  # a client gives up on a request after this long (the test then fails)
START_TIMEOUT = 30.0
POSLEDGER = Path(sys.executable).parent / "posledger"  # the installed command
SERVE_OPTIONS = ["--no-projections", "--workers=8", "--grace=1"]
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """`posledger serve` in a child process, on a fixed port so that clients reconnect."""

    settings: Settings
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "POSLEDGER_DATABASE_URL": self.settings.database_url or "",
            "POSLEDGER_DB_SCHEMA": self.settings.schema,
            "POSLEDGER_DB_POOL_SIZE": "4",
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(POSLEDGER), "serve", f"--port={self.port}", *SERVE_OPTIONS],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                assert self.process.poll() is None, self.log_path.read_text()[-3000:]
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(settings, tmp_path / "server.log")
    process.start()
    yield process
    process.stop()


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
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(RETRY_FOR + 10)
            assert not thread.is_alive(), "a client is still retrying"


def test_every_acknowledged_command_survives_kill_9_exactly_once(
    settings: Settings, server: ServerProcess
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        load = Load(SalesServiceStub(channel))
        with load:
            for _ in range(KILLS):
                time.sleep(LOAD_BEFORE_KILL)
                server.kill()
                server.start()
            time.sleep(LOAD_BEFORE_KILL)
        assert not load.errors, load.errors
        assert grpc.StatusCode.INTERNAL not in load.codes
        assert grpc.StatusCode.UNKNOWN not in load.codes
        # The kills were felt: calls failed, and their retries were answered.
        assert any(sent.retried for sent in load.acknowledged), "no retry was needed"
        assert len(load.acknowledged) >= 3 * CLIENTS

        # A retry of anything acknowledged answers what was first answered, and writes nothing.
        request_ids = [sent.request.request_id for sent in load.acknowledged]  # type: ignore[attr-defined]
        events = assert_one_set_of_events_per_request(
            settings.database_url or "", settings.schema, request_ids
        )
        for sent in load.acknowledged:
            assert sent.call(sent.request, timeout=api.TIMEOUT) == sent.reply
        assert (
            assert_one_set_of_events_per_request(
                settings.database_url or "", settings.schema, request_ids
            )
            == events
        )
    assert "rpc_failed_unexpectedly" not in server.log_path.read_text()
