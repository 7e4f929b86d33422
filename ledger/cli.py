"""The `posledger` command: run the service and manage API keys."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog
import typer
from rich.console import Console
from rich.table import Table

from ledger.application import Ledger
from ledger.domain.errors import NotFound
from ledger.grpc.server import create_server, is_loopback
from ledger.keys import Authenticator, Role
from ledger.logging import configure_logging

app = typer.Typer(help="POS Ledger: an event-sourced ledger for point-of-sale systems.")
keys_app = typer.Typer(help="Create, list and revoke API keys.")
app.add_typer(keys_app, name="keys")

console = Console(stderr=True)
log = structlog.get_logger("posledger")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(50051, help="Port to listen on (0 picks a free one)."),
    workers: int = typer.Option(16, help="Threads serving RPCs."),
    grace: float = typer.Option(10.0, help="Seconds in-flight calls get on shutdown."),
) -> None:
    """Run the gRPC service until SIGTERM or SIGINT."""
    configure_logging()
    ledger = Ledger.open()
    authenticator = Authenticator(ledger.api_keys, allow_dev_mode=is_loopback(host))
    if not ledger.api_keys.any_active():
        if not is_loopback(host):
            console.print(
                f"[bold red]Refusing to serve on {host}: no API keys exist.[/] Create one with "
                "`posledger keys create --merchant M --app A`, or listen on 127.0.0.1."
            )
            raise typer.Exit(2)
        console.print(
            "[bold yellow]DEVELOPMENT MODE:[/] no API keys exist, so every caller is merchant "
            "'dev' and only loopback connections are accepted. Create a key with "
            "`posledger keys create` to require authentication."
        )
        log.warning("development_mode", merchant="dev")
    server = create_server(
        ledger, f"{host}:{port}", authenticator=authenticator, max_workers=workers
    )
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    log.info("serving", host=host, port=server.port)
    stopping.wait()
    server.stop(grace)
    ledger.close()
    log.info("stopped")


@keys_app.command("create")
def keys_create(
    merchant: str = typer.Option(..., help="Merchant the key acts for."),
    app_id: str = typer.Option(..., "--app", help="Application using the key."),
    role: Role = typer.Option(Role.MANAGER, help="What the key may do."),
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    ledger = Ledger.open()
    key_id, key = ledger.api_keys.create(merchant, app_id, role)
    console.print(f"Created key [bold]{key_id}[/] for merchant {merchant!r}, app {app_id!r}.")
    console.print("Store it now; it cannot be shown again:")
    typer.echo(key)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="Id of the key (second part of it)."),
) -> None:
    """Revoke an API key. Servers stop accepting it within seconds."""
    ledger = Ledger.open()
    try:
        ledger.api_keys.revoke(key_id)
    except NotFound as e:
        console.print(f"[red]{e.message}[/]")
        raise typer.Exit(1) from None
    console.print(f"Revoked key {key_id}.")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never the keys themselves)."""
    ledger = Ledger.open()
    table = Table("key id", "merchant", "app", "role", "created", "revoked")
    for key in ledger.api_keys.list():
        table.add_row(
            key.key_id,
            key.merchant_id,
            key.app_id,
            key.role.value,
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
    Console().print(table)


if __name__ == "__main__":
    app()
