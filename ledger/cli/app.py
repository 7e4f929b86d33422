"""The `posledger` command and its groups; every command checks the settings first."""

from __future__ import annotations

import structlog
import typer
from rich.console import Console

from ledger.store import Settings, SettingsError

app = typer.Typer(help="POS Ledger: an event-sourced ledger for point-of-sale systems.")


keys_app = typer.Typer(help="Create, list and revoke API keys.")


app.add_typer(keys_app, name="keys")


projections_app = typer.Typer(help="Run, inspect and rebuild the read views.")


app.add_typer(projections_app, name="projections")


deliveries_app = typer.Typer(help="Callbacks and webhooks: run the sender, see the backlog.")


app.add_typer(deliveries_app, name="deliveries")


expiry_app = typer.Typer(help="Payment deadlines: expire payments still pending past them.")


app.add_typer(expiry_app, name="expiry")


audit_app = typer.Typer(help="Tamper evidence: the hash chain over the log, signed checkpoints.")


app.add_typer(audit_app, name="audit")


console = Console(stderr=True)


log = structlog.get_logger("posledger")


EXIT_BAD_SETTINGS = 2


@app.callback()
def check_settings() -> None:
    # Every command reads the same settings: check them all first, one line per bad value.
    try:
        Settings.from_env()
    except SettingsError as e:
        for problem in e.problems:
            typer.echo(f"posledger: bad setting {problem}", err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
