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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ledger.store import Settings
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.faults.load import Load, assert_every_acknowledged_command_once

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

KILLS = 2
LOAD_BEFORE_KILL = 1.5  # seconds of load between (re)start and kill
START_TIMEOUT = 30.0
POSLEDGER = Path(sys.executable).parent / "posledger"  # the installed command
SERVE_OPTIONS = ["--processes=1", "--no-projections", "--workers=8", "--grace=1"]


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


def test_every_acknowledged_command_survives_kill_9_exactly_once(
    settings: Settings, server: ServerProcess
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        load = Load(SalesServiceStub(channel), clients=6)
        with load:
            for _ in range(KILLS):
                time.sleep(LOAD_BEFORE_KILL)
                server.kill()
                server.start()
            time.sleep(LOAD_BEFORE_KILL)
        assert_every_acknowledged_command_once(load, settings)
    assert "rpc_failed_unexpectedly" not in server.log_path.read_text()
