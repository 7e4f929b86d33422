"""The `posledger` command as an operator runs it: real subprocesses, real signals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, Any
from urllib.request import urlopen

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from ledger.application import Context, Ledger
from ledger.bootstrap import build_views
from ledger.domain import commands as c
from ledger.domain.sale import PaymentStatus
from ledger.keys import Authenticator
from ledger.store import Settings
from ledger.v1 import sales_pb2 as pb
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from tests.e2e import api_client as api
from tests.e2e.certs import CertificateAuthority
from tests.e2e.conftest import MakeChannel, MakeServer

CLI = [sys.executable, "-m", "ledger.cli"]
STARTUP_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of a `posledger` process using this test's schema."""
    assert settings.database_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSLEDGER_")}
    env.update(
        POSLEDGER_DATABASE_URL=settings.database_url,
        POSLEDGER_DB_SCHEMA=settings.schema,
        COLUMNS="200",  # keep rich's console messages on one line
        PYTHONFAULTHANDLER="1",  # a hung serve's stacks, should a test have to abort it
    )
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


class ServeProcess:
    """`posledger serve` in a subprocess, its stderr in a file."""

    def __init__(self, env: dict[str, str], stderr_path: Path, *args: str) -> None:
        self.port = _free_port()
        self.stderr_path = stderr_path
        self._stderr: IO[str] = stderr_path.open("w")
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", str(self.port), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            text=True,
            # Its own process group: `kill` also reaches the children of `--processes`.
            start_new_session=True,
        )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_until_serving(self, channel: grpc.Channel) -> None:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.stderr}")
            try:
                response = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            except grpc.RpcError:
                time.sleep(0.1)
                continue
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.1)
        pytest.fail(f"serve was not SERVING within {STARTUP_TIMEOUT}s:\n{self.stderr}")

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGABRT makes faulthandler (PYTHONFAULTHANDLER) print every thread's stack.
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=EXIT_TIMEOUT)
            pytest.fail(f"serve did not exit within {EXIT_TIMEOUT}s of SIGTERM:\n{self.stderr}")

    def kill(self) -> None:
        """Kills serve and whatever it started (a failed test must not leave children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=EXIT_TIMEOUT)
        self._stderr.close()


@pytest.fixture
def serve(cli_env: dict[str, str], tmp_path: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(cli_env, tmp_path / "serve.stderr")
    try:
        yield process
    finally:
        process.kill()


def _json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # console messages for people, not logs
        if isinstance(record, dict):
            records.append(record)
    return records


def test_serve_answers_then_stops_cleanly_on_sigterm(serve: ServeProcess) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{serve.port}")
    try:
        serve.wait_until_serving(channel)
        stub = SalesServiceStub(channel)
        request = api.create_sale_request()
        sale = stub.CreateSale(request, timeout=api.TIMEOUT).sale
        assert api.get_sale(stub, sale.id) == sale
        missing = str(uuid.uuid4())
        not_found = api.expect_failure(lambda: api.get_sale(stub, missing))
        assert not_found.code == grpc.StatusCode.NOT_FOUND
    finally:
        channel.close()

    assert serve.terminate() == 0, serve.stderr

    records = _json_lines(serve.stderr)
    rpcs = [r for r in records if r.get("event") == "rpc"]
    assert [(r["method"], r["status"]) for r in rpcs] == [
        ("/ledger.v1.SalesService/CreateSale", "OK"),
        ("/ledger.v1.SalesService/GetSale", "OK"),
        ("/ledger.v1.SalesService/GetSale", "NOT_FOUND"),
    ], "one log line per RPC (health checks are not logged)"
    for record in rpcs:
        assert {"method", "status", "duration_ms", "merchant", "request_id"} <= record.keys()
        assert isinstance(record["duration_ms"], int | float)
        assert record["duration_ms"] >= 0
        assert record["merchant"] == "dev"
        assert record["level"] == "info"
        assert "timestamp" in record
    assert rpcs[0]["request_id"] == request.request_id
    assert rpcs[1]["request_id"] is None
    events = [r.get("event") for r in records]
    assert "serving" in events
    assert "shutdown_requested" in events
    assert events[-1] == "stopped"
    assert "DEVELOPMENT MODE" in serve.stderr


def test_keys_create_use_and_revoke(
    cli_env: dict[str, str],
    ledger: Ledger,
    make_server: MakeServer,
    make_channel: MakeChannel,
) -> None:
    created = _run(cli_env, "keys", "create", "--merchant", "m1", "--app", "a1")

    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("plk_")
    assert created.stdout.count("plk_") == 1, "the key is printed exactly once"
    assert key not in created.stderr
    key_id = key.split("_")[1]
    assert key_id in created.stderr

    server = make_server(Authenticator(ledger.api_keys, ttl=0))
    stub = SalesServiceStub(make_channel(server))
    sale = api.create_sale(stub, metadata=api.bearer(key))
    assert ledger.get_sale("m1", sale.id).merchant_id == "m1"
    without_key = api.expect_failure(lambda: api.get_sale(stub, sale.id))
    assert without_key.reason == "API_KEY_REQUIRED"

    listed = _run(cli_env, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout

    revoked = _run(cli_env, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr

    failure = api.expect_failure(lambda: api.get_sale(stub, sale.id, metadata=api.bearer(key)))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert failure.reason == "API_KEY_REVOKED"

    unknown = _run(cli_env, "keys", "revoke", "000000000000")
    assert unknown.returncode != 0
    assert "000000000000" in unknown.stderr


def test_serve_on_all_interfaces_without_keys_refuses_to_start(
    cli_env: dict[str, str],
) -> None:
    refused = _run(cli_env, "serve", "--host", "0.0.0.0", "--insecure", "--port", str(_free_port()))

    assert refused.returncode != 0
    message = " ".join(refused.stderr.split())
    assert "Refusing to serve on 0.0.0.0" in message
    assert "posledger keys create" in message


def test_serve_on_all_interfaces_without_tls_refuses_to_start(cli_env: dict[str, str]) -> None:
    assert _run(cli_env, "keys", "create", "--merchant", "m2", "--app", "a2").returncode == 0

    refused = _run(cli_env, "serve", "--host", "0.0.0.0", "--port", str(_free_port()))

    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert "Refusing to serve plaintext on 0.0.0.0" in message
    assert "--tls-cert" in message


def test_serve_with_tls_on_all_interfaces(cli_env: dict[str, str], tmp_path: Path) -> None:
    created = _run(
        cli_env, "keys", "create", "--merchant", "m3", "--app", "a3", "--role", "cashier"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    ca = CertificateAuthority()
    issued = ca.issue("localhost", server=True)
    (tmp_path / "server.pem").write_bytes(issued.certificate)
    (tmp_path / "server.key").write_bytes(issued.private_key)
    env = {
        **cli_env,
        "POSLEDGER_TLS_CERT": str(tmp_path / "server.pem"),
        "POSLEDGER_TLS_KEY": str(tmp_path / "server.key"),
    }
    process = ServeProcess(env, tmp_path / "serve.stderr", "--host", "0.0.0.0")
    channel = grpc.secure_channel(
        f"127.0.0.1:{process.port}", grpc.ssl_channel_credentials(root_certificates=ca.pem)
    )
    try:
        process.wait_until_serving(channel)
        sale = api.create_sale(SalesServiceStub(channel), metadata=api.bearer(key))
        assert sale.status == pb.SALE_STATUS_OPEN
        assert process.terminate() == 0, process.stderr
    finally:
        channel.close()
        process.kill()
    serving = [r for r in _json_lines(process.stderr) if r.get("event") == "serving"]
    assert serving[0]["tls"] == "tls"
    assert "INSECURE" not in process.stderr


def test_serve_on_all_interfaces_with_a_key_requires_it(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    created = _run(cli_env, "keys", "create", "--merchant", "m2", "--app", "a2")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    process = ServeProcess(cli_env, tmp_path / "serve.stderr", "--host", "0.0.0.0", "--insecure")
    channel = grpc.insecure_channel(f"127.0.0.1:{process.port}")
    try:
        process.wait_until_serving(channel)
        stub = SalesServiceStub(channel)
        failure = api.expect_failure(lambda: api.create_sale(stub))
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED
        sale = api.create_sale(stub, metadata=api.bearer(key))
        assert sale.status == pb.SALE_STATUS_OPEN
        assert process.terminate() == 0, process.stderr
    finally:
        channel.close()
        process.kill()
    assert "DEVELOPMENT MODE" not in process.stderr
    assert "INSECURE: serving plaintext on 0.0.0.0" in " ".join(process.stderr.split())


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_serve_with_several_processes_shares_one_port_and_restarts_a_dead_one(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`--processes 2`: two servers on one port; a killed one comes back; SIGTERM stops all."""
    serve = ServeProcess(cli_env, tmp_path / "serve.stderr", "--processes", "2")
    try:
        channels = [grpc.insecure_channel(f"127.0.0.1:{serve.port}") for _ in range(8)]
        serve.wait_until_serving(channels[0])
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(_children(serve.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        children = _children(serve.process.pid)
        assert len(children) == 2, serve.stderr
        # Each connection lands on one of the processes; every one answers a whole sale.
        for channel in channels:
            serve.wait_until_serving(channel)
            stub = SalesServiceStub(channel)
            sale = stub.CreateSale(api.create_sale_request(), timeout=api.TIMEOUT).sale
            assert api.get_sale(stub, sale.id) == sale

        os.kill(children[0], signal.SIGKILL)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            now = _children(serve.process.pid)
            if len(now) == 2 and children[0] not in now:
                break
            time.sleep(0.1)
        replaced = _children(serve.process.pid)
        assert len(replaced) == 2, serve.stderr
        assert children[0] not in replaced, serve.stderr
        fresh = grpc.insecure_channel(f"127.0.0.1:{serve.port}")
        serve.wait_until_serving(fresh)
        assert SalesServiceStub(fresh).CreateSale(api.create_sale_request(), timeout=api.TIMEOUT)
        for channel in [*channels, fresh]:
            channel.close()

        assert serve.terminate() == 0, serve.stderr
        assert all(not Path(f"/proc/{pid}").exists() for pid in replaced)
        events = [r.get("event") for r in _json_lines(serve.stderr)]
        assert events.count("server_process_started") == 3
        assert "server_process_exited" in events
    finally:
        serve.kill()


def test_serve_with_bad_settings_names_each_and_exits_2(cli_env: dict[str, str]) -> None:
    env = {
        **cli_env,
        "POSLEDGER_DB_LOCK_TIMEOUT": "-1",
        "POSLEDGER_DB_POOL_SIZE": "abc",
        "POSLEDGER_DB_SCHEMA": "has-a-dash",
    }

    done = _run(env, "serve", "--port", str(_free_port()))

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3, done.stderr
    for variable in ["POSLEDGER_DB_LOCK_TIMEOUT", "POSLEDGER_DB_POOL_SIZE", "POSLEDGER_DB_SCHEMA"]:
        assert sum(variable in line for line in lines) == 1
    assert "Traceback" not in done.stderr


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`/metrics` of a server, as {(sample name, sorted labels): value}."""
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_serve_exports_metrics_for_rpcs_the_writer_the_views_and_the_chain(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    metrics_port = _free_port()
    serve = ServeProcess(cli_env, tmp_path / "serve.stderr", f"--metrics-port={metrics_port}")
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{serve.port}")
        serve.wait_until_serving(channel)
        stub = SalesServiceStub(channel)
        sale = stub.CreateSale(api.create_sale_request(), timeout=10)
        with pytest.raises(grpc.RpcError):
            stub.CreateSale(api.create_sale_request(currency_code="XXZ"), timeout=10)

        def handled(code: str) -> float:
            labels = {
                "grpc_code": code,
                "grpc_method": "CreateSale",
                "grpc_service": "ledger.v1.SalesService",
                "grpc_type": "unary",
            }
            key = ("grpc_server_handled_total", tuple(sorted(labels.items())))
            return scraped.get(key, 0.0)

        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:  # the in-process runner applies the sale to the views within moments
            scraped = _scrape(metrics_port)
            lag = scraped.get(("posledger_view_lag_events", (("view", "orders"),)))
            if lag == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert lag == 0, f"the orders view did not catch up: lag {lag}"
        assert handled("OK") == 1
        assert handled("INVALID_ARGUMENT") == 1
        count = scraped[
            (
                "grpc_server_handling_seconds_count",
                tuple(
                    sorted(
                        {
                            "grpc_method": "CreateSale",
                            "grpc_service": "ledger.v1.SalesService",
                            "grpc_type": "unary",
                        }.items()
                    )
                ),
            )
        ]
        assert count == 2
        assert scraped[("posledger_commit_commands_total", ())] == 1
        assert scraped[("posledger_commit_groups_total", ())] == 1
        assert scraped[("posledger_store_up", ())] == 1
        assert scraped[("posledger_views_runner_state", (("state", "running"),))] == 1
        assert scraped[("posledger_view_position", (("view", "orders"),))] >= sale.position
        assert scraped[("posledger_chain_head_position", ())] >= sale.position
        assert scraped[("posledger_deliveries", (("status", "pending"),))] == 0  # nothing owed
        assert scraped[("posledger_deliveries_due", ())] == 0
        assert ("posledger_outbox_lag_events", ()) in scraped
        assert serve.terminate() == 0
    finally:
        serve.kill()


def _spans(text: str) -> list[dict[str, Any]]:
    """The console exporter's output: JSON objects one after another."""
    decoder, i = json.JSONDecoder(), 0
    spans: list[dict[str, Any]] = []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return spans
        span, i = decoder.raw_decode(text, i)
        spans.append(span)


def test_serve_traces_rpcs_and_their_database_calls_when_an_exporter_is_set(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    stdout = (tmp_path / "spans.json").open("w")
    env = {**cli_env, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "ledger-test"}
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=stdout,
        stderr=(tmp_path / "serve.stderr").open("w"),
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=STARTUP_TIMEOUT)
        stub = SalesServiceStub(channel)
        sale = stub.CreateSale(api.create_sale_request(), timeout=10).sale
        caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        stub.GetSale(
            pb.GetSaleRequest(sale_id=sale.id),
            timeout=10,
            metadata=(("traceparent", f"00-{caller_trace}-00f067aa0ba902b7-01"),),
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=EXIT_TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
        stdout.close()
    spans = _spans((tmp_path / "spans.json").read_text())
    (get_sale,) = [s for s in spans if s["name"] == "/ledger.v1.SalesService/GetSale"]
    assert get_sale["kind"] == "SpanKind.SERVER"
    assert get_sale["resource"]["attributes"]["service.name"] == "ledger-test"
    trace_id = get_sale["context"]["trace_id"]
    assert trace_id == f"0x{caller_trace}"  # the caller's trace, joined
    queries = [s for s in spans if s["context"]["trace_id"] == trace_id and s is not get_sale]
    assert queries, "GetSale's database reads are spans of its trace"
    assert all(s["attributes"].get("db.system") == "postgresql" for s in queries)
    assert any(s["name"] == "/ledger.v1.SalesService/CreateSale" for s in spans)


def test_serve_refuses_an_unknown_trace_exporter(cli_env: dict[str, str]) -> None:
    done = _run({**cli_env, "OTEL_TRACES_EXPORTER": "zipkin"}, "serve", "--port", "0")
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER='zipkin'" in done.stdout + done.stderr


def test_expiry_run_once_expires_what_is_due(cli_env: dict[str, str], ledger: Ledger) -> None:
    views = build_views(ledger)
    views.ensure()
    ctx = Context(merchant_id="dev", request_id=str(uuid.uuid4()))
    line = c.LineItemInput(sku="X-1", name="X", quantity=1, unit_price=250)
    sale = ledger.create_sale(ctx, c.CreateSale("loc-1", c.Channel.ONLINE, "USD", (line,))).sale
    request = c.RequestPayment(
        str(sale.id), 250, "USD", (c.Tender.CARD,), "https://pos.example.com/cb", "pos", "1.0",
        expires_after=timedelta(seconds=1),
    )  # fmt: skip
    payment_id = ledger.request_payment(
        Context(merchant_id="dev", request_id=str(uuid.uuid4())), request
    ).ids["payment_id"]
    for view in views.views.values():
        while views.step(view):
            pass
    time.sleep(1.1)

    first = _run(cli_env, "expiry", "run", "--once")
    again = _run(cli_env, "expiry", "run", "--once")

    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert "expired 1 payments" in first.stdout
    assert "expired 0 payments" in again.stdout
    expired = ledger.get_sale("dev", str(sale.id)).payment(payment_id)
    assert expired.status is PaymentStatus.EXPIRED
