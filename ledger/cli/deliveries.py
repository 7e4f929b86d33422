"""`posledger deliveries`: run the sender, see the backlog, signing secrets."""

from __future__ import annotations

import json
import signal
import threading
import uuid

import typer
from rich.console import Console
from rich.table import Table

from ledger import bootstrap
from ledger.cli.app import (
    console,
    deliveries_app,
    log,
)
from ledger.heap import freeze_startup_objects
from ledger.logging import configure_logging


@deliveries_app.command("run")
def deliveries_run() -> None:
    """Send callbacks and webhooks until SIGTERM or SIGINT (any number of workers share them)."""
    configure_logging()
    ledger = bootstrap.open_ledger()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info("deliveries_running")
    worker = bootstrap.build_deliveries(ledger)
    freeze_startup_objects()
    worker.run(stopping)
    ledger.close()


@deliveries_app.command("status")
def deliveries_status(
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of tables."),
) -> None:
    """The outbox's position, the backlog by status, and the latest failures."""
    ledger = bootstrap.open_ledger()
    deliveries = bootstrap.build_deliveries(ledger)
    deliveries.ensure()
    report = deliveries.status()
    ledger.close()
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    out = Console()
    outbox = report["outbox"]
    out.print(
        f"outbox: position {outbox['position']} of {outbox['head']} "
        f"({outbox['lag_events']} events behind), follower "
        + ("[green]running[/]" if outbox["followed"] else "[red]none[/]")
    )
    table = Table("status", "deliveries")
    for status, n in sorted(report["counts"].items()):
        table.add_row(status, str(n))
    out.print(table)
    backlog = report["backlog"]
    out.print(
        f"pending: {backlog['due']} due now, {backlog['retrying']} retrying, oldest "
        f"{backlog['oldest_seconds'] or 0:.0f} s"
    )
    if report["failures"]:
        failures = Table("delivery", "kind", "url", "status", "attempts", "last error")
        for f in report["failures"]:
            failures.add_row(
                f["delivery_id"],
                f["kind"],
                f["url"],
                f["status"],
                str(f["attempts"]),
                f["last_error"],
            )
        out.print(failures)


@deliveries_app.command("secret")
def deliveries_secret(
    merchant: str = typer.Option(..., help="The merchant whose app it is."),
    app_id: str = typer.Option(..., "--app", help="The app whose callbacks it signs."),
) -> None:
    """Create or rotate an app's signing secret (printed once; the old one stops at once)."""
    ledger = bootstrap.open_ledger()
    deliveries = bootstrap.build_deliveries(ledger)
    deliveries.ensure()
    secret = deliveries.store.rotate_app_secret(merchant, app_id, str(uuid.uuid4()))
    ledger.close()
    typer.echo(secret)
    console.print("Shown once: give it to the app's receiver. It signs every callback to it.")
