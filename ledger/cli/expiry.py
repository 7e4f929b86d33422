"""`posledger expiry`: expire payments still pending past their deadline."""

from __future__ import annotations

import signal
import threading

import typer

from ledger import bootstrap
from ledger.cli.app import (
    expiry_app,
    log,
)
from ledger.logging import configure_logging


@expiry_app.command("run")
def expiry_run(
    once: bool = typer.Option(False, "--once", help="Expire what is due now, then exit."),
) -> None:
    """Expire payments pending past their deadline until SIGTERM or SIGINT (any number of
    workers may run: each payment expires once)."""
    configure_logging()
    ledger = bootstrap.open_ledger()
    worker = bootstrap.build_expiry(ledger)
    worker.projections.ensure()  # the orders view it reads, if no server made it yet
    if once:
        expired = 0
        while count := worker.expire_due():
            expired += count
        typer.echo(f"expired {expired} payments")
        ledger.close()
        return
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info("expiry_running")
    worker.run(stopping)
    ledger.close()
