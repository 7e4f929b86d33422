"""`posledger audit export` and `audit replay` against a real ledger."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.application import Context, Ledger
from ledger.audit import events
from ledger.audit.events import AuditLog
from ledger.cli import app
from ledger.cli import audit as audit_cli
from ledger.domain import commands as c
from ledger.store import Settings


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None
    return {
        "POSLEDGER_DATABASE_URL": settings.database_url,
        "POSLEDGER_DB_SCHEMA": settings.schema,
        "POSLEDGER_DB_POOL_SIZE": "2",  # the command's pool opens whole (10 by default)
    }


def _paid_sale(ledger: Ledger, merchant: str) -> str:
    def ctx() -> Context:
        return Context(merchant, str(uuid.uuid4()), app_id="till", device_id="till-7")

    sale = ledger.create_sale(
        ctx(),
        c.CreateSale("store-1", c.Channel.IN_STORE, "USD", (c.LineItemInput("A", "A", 2, 250),)),
    ).sale
    payment = ledger.request_payment(
        ctx(),
        c.RequestPayment(
            str(sale.id), 500, "USD", (c.Tender.CASH,), "https://pos.example/cb", "till", "1.0"
        ),
    ).ids["payment_id"]
    ledger.record_payment_result(
        ctx(), c.RecordPaymentResult(str(sale.id), payment, c.Outcome.APPROVED, c.Tender.CASH)
    )
    return str(sale.id)


def test_export_writes_every_event_of_the_range_as_json_lines(
    ledger: Ledger, env: dict[str, str], tmp_path: Path
) -> None:
    first = _paid_sale(ledger, "m1")
    _paid_sale(ledger, "m2")
    out = tmp_path / "events.jsonl.gz"
    result = CliRunner().invoke(app, ["audit", "export", "--output", str(out)], env=env)
    assert result.exit_code == 0, result.output
    with gzip.open(out, "rt") as exported:
        header, *lines = [json.loads(line) for line in exported]
    assert header["format"] == "posledger-audit-export/2"
    assert (header["from_position"], header["to_position"], header["merchant"]) == (1, 8, None)
    assert [line["position"] for line in lines] == list(range(1, 9))
    first_events = [line for line in lines if line["aggregate_id"] == first]
    assert [e["type"] for e in first_events] == [
        "posledger.SaleCreated",
        "posledger.PaymentRequested",
        "posledger.PaymentApproved",
        "posledger.SaleCompleted",
    ]
    assert first_events[0]["metadata"]["device_id"] == "till-7"
    assert first_events[0]["metadata"]["location_id"] == "store-1"
    assert first_events[1]["payload"]["amount"] == 500

    only_m2 = tmp_path / "m2.jsonl"
    result = CliRunner().invoke(
        app,
        ["audit", "export", "--output", str(only_m2), "--merchant", "m2", "--from-position", "6"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    with open(only_m2) as exported:
        header, *rows = [json.loads(line) for line in exported]
    assert header["merchant"] == "m2"
    assert [r["position"] for r in rows] == [6, 7, 8]
    assert {r["metadata"]["merchant_id"] for r in rows} == {"m2"}


def test_replay_prints_the_timeline_and_the_state_at_a_version(
    ledger: Ledger, env: dict[str, str]
) -> None:
    sale_id = _paid_sale(ledger, "m1")
    result = CliRunner().invoke(app, ["audit", "replay", "--sale", sale_id], env=env)
    assert result.exit_code == 0, result.output
    assert "State at version 4: completed, total 500 USD, paid 500" in " ".join(
        result.output.split()
    )
    result = CliRunner().invoke(
        app, ["audit", "replay", "--sale", sale_id, "--version", "2"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "State at version 2: open, total 500 USD, paid 0" in " ".join(result.output.split())
    missing = CliRunner().invoke(app, ["audit", "replay", "--sale", str(uuid.uuid4())], env=env)
    assert missing.exit_code == 1


def test_replay_as_of_a_time_streams_the_timeline_page_by_page(
    ledger: Ledger, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sale_id = _paid_sale(ledger, "m1")
    records = AuditLog(ledger).history(uuid.UUID(sale_id), 0, 100)
    second = records[1].recorded_at  # the payment request; the result came later
    assert records[2].recorded_at > second

    def replay(*args: str) -> str:
        wide = env | {"COLUMNS": "250"}  # one line a row
        result = CliRunner().invoke(app, ["audit", "replay", "--sale", sale_id, *args], env=wide)
        assert result.exit_code == 0, result.output
        return result.output

    as_of = ["--as-of", second.isoformat()]
    whole = replay(*as_of)
    assert "State at version 2: open, total 500 USD, paid 0" in " ".join(whole.split())
    assert "PaymentRequested" in whole
    assert "PaymentApproved" not in whole
    # Read one event a query and printed two rows a table: the same rows, the same state.
    monkeypatch.setattr(events, "HISTORY_PAGE", 1)
    monkeypatch.setattr(audit_cli, "TIMELINE_ROWS", 2)
    paged = replay(*as_of)
    assert paged.count("SaleCreated") == paged.count("PaymentRequested") == 1
    assert paged.splitlines()[-1] == whole.splitlines()[-1]
    assert replay("--version", "3").count("PaymentApproved") == 1
    before = records[0].recorded_at - timedelta(seconds=1)
    early = CliRunner().invoke(
        app, ["audit", "replay", "--sale", sale_id, "--as-of", before.isoformat()], env=env
    )
    assert early.exit_code == 1
    assert "No such sale at that point." in early.output


def test_a_timeline_reads_every_event_up_to_a_version_in_pages(ledger: Ledger) -> None:
    sale_id = uuid.UUID(_paid_sale(ledger, "m1"))
    log = AuditLog(ledger)
    every = log.history(sale_id, 0, 100)
    assert [r.version for r in every] == [1, 2, 3, 4]
    for page in (1, 2, 3, 1000):
        assert list(log.timeline(sale_id, page=page)) == every
        assert list(log.timeline(sale_id, 3, page=page)) == every[:3]
