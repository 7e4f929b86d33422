"""`posledger serve` and `posledger deliveries run|status|secret` delivering to a real
receiver on loopback, killed with -9 mid-delivery and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from ledger.application import Ledger
from ledger.bootstrap import build_deliveries
from ledger.deliveries import signing
from ledger.store import Settings
from tests.e2e.test_cli import CLI, EXIT_TIMEOUT, ServeProcess, _run
from tests.integration.conftest import MERCHANT_A, approved_by_card, ctx
from tests.integration.test_deliveries import APP, pay, rows
from tests.receiver import Answer, Receiver, receiving


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.1)


@pytest.fixture
def delivery_env(settings: Settings) -> dict[str, str]:
    """A `posledger` process on this test's schema that may deliver to loopback, quickly."""
    assert settings.database_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSLEDGER_")}
    return env | {
        "POSLEDGER_DATABASE_URL": settings.database_url,
        "POSLEDGER_DB_SCHEMA": settings.schema,
        "COLUMNS": "200",
        "POSLEDGER_DELIVERY_ALLOWED_NETWORKS": "127.0.0.0/8",
        "POSLEDGER_DELIVERY_TIMEOUT": "2",  # so a dead sender's lease runs out in 9 s
        "POSLEDGER_DELIVERY_BACKOFF_FIRST": "0.1",
        "POSLEDGER_DELIVERY_BACKOFF_MAX": "0.5",
    }


def test_a_server_killed_mid_delivery_and_restarted_delivers_everything_once_by_id(
    ledger: Ledger, delivery_env: dict[str, str], tmp_path: Path
) -> None:
    build_deliveries(ledger).ensure()  # the outbox starts here, before the payments
    secret = _run(delivery_env, "deliveries", "secret", "--merchant", MERCHANT_A, "--app", APP)
    assert secret.returncode == 0, secret.stderr
    key = secret.stdout.strip()
    assert key.startswith("whsec_")
    # The first request is held until well after the server is gone.
    receiver = Receiver(script=[Answer(delay=3.0)])
    with receiving(receiver):
        first = ServeProcess(delivery_env, tmp_path / "first.stderr", "--no-projections")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
                first.wait_until_serving(channel)
            payments = [pay(ledger, receiver.url) for _ in range(5)]
            for p in payments:
                ledger.record_payment_result(ctx(), approved_by_card(p))
            receiver.wait_for(1)
            first.process.send_signal(signal.SIGKILL)  # mid-delivery: its answer never comes
            first.process.wait(EXIT_TIMEOUT)
        finally:
            first.kill()
        second = ServeProcess(delivery_env, tmp_path / "second.stderr", "--no-projections")
        try:
            eventually(
                lambda: (
                    {r["status"] for r in rows(ledger, "deliveries")} == {"delivered"}
                    and len(rows(ledger, "deliveries")) == 5
                ),
                "every callback delivered after the restart",
            )
        finally:
            second.kill()
    ids = [r.headers[signing.DELIVERY_ID_HEADER] for r in receiver.received]
    assert {str(r["delivery_id"]) for r in rows(ledger, "deliveries")} == set(ids)
    assert len(set(ids)) == 5  # one id per payment however often it was sent
    assert len(ids) > 5  # the one cut off by the kill was sent again, under its id
    paid = {json.loads(r.body)["data"]["payment_id"] for r in receiver.received}
    assert paid == {p.payment_id for p in payments}
    for r in receiver.received:
        timestamp = int(r.headers[signing.TIMESTAMP_HEADER])
        assert signing.verify(
            key, timestamp, r.body, r.headers[signing.SIGNATURE_HEADER], time.time()
        )


def test_deliveries_run_sends_and_status_shows_the_backlog_and_failures(
    ledger: Ledger, delivery_env: dict[str, str], tmp_path: Path
) -> None:
    deliveries = build_deliveries(ledger)
    deliveries.ensure()
    deliveries.store.rotate_app_secret(MERCHANT_A, APP, str(uuid.uuid4()))
    with receiving(Receiver(default=Answer(500))) as receiver:
        stderr = (tmp_path / "run.stderr").open("w")
        worker = subprocess.Popen(
            [*CLI, "deliveries", "run"], env=delivery_env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            ledger.record_payment_result(ctx(), approved_by_card(pay(ledger, receiver.url)))
            receiver.wait_for(2)
            status = _run(delivery_env, "deliveries", "status", "--json")
            assert status.returncode == 0, status.stderr
            report = json.loads(status.stdout)
            assert report["counts"] == {"pending": 1}
            assert report["backlog"]["retrying"] == 1
            assert report["outbox"]["followed"] is True
            (failure,) = report["failures"]
            assert failure["last_error"] == "answered 500"
            assert failure["url"] == receiver.url
            table = _run(delivery_env, "deliveries", "status")
            assert "retrying" in table.stdout
            assert "answered 500" in table.stdout
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(EXIT_TIMEOUT) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
            stderr.close()
