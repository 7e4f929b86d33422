"""`posledger audit export` and `audit replay` against a real ledger."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.application import Context, Ledger
from ledger.cli import app
from ledger.domain import commands as c
from ledger.store import Settings


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None
    return {"POSLEDGER_DATABASE_URL": settings.database_url, "POSLEDGER_DB_SCHEMA": settings.schema}


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
