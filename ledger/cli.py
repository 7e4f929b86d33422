"""The `posledger` command: run the service and manage API keys."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import nullcontext
from types import FrameType

import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ledger.application import Ledger
from ledger.domain.errors import NotFound
from ledger.grpc.server import create_server, is_loopback
from ledger.keys import Authenticator, Role
from ledger.logging import configure_logging
from ledger.store import Settings
from projections import projections_for

app = typer.Typer(help="POS Ledger: an event-sourced ledger for point-of-sale systems.")
keys_app = typer.Typer(help="Create, list and revoke API keys.")
app.add_typer(keys_app, name="keys")
projections_app = typer.Typer(help="Run, inspect and rebuild the read views.")
app.add_typer(projections_app, name="projections")

console = Console(stderr=True)
log = structlog.get_logger("posledger")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(50051, help="Port to listen on (0 picks a free one)."),
    workers: int = typer.Option(16, help="Threads serving RPCs."),
    grace: float = typer.Option(10.0, help="Seconds in-flight calls get on shutdown."),
    projections: bool | None = typer.Option(
        None,
        "--projections/--no-projections",
        help="Keep the views up to date in this process "
        "(default: on with the embedded database, off with POSLEDGER_DATABASE_URL).",
    ),
) -> None:
    """Run the gRPC service until SIGTERM or SIGINT."""
    configure_logging()
    settings = Settings.from_env()
    if projections is None:
        projections = settings.database_url is None
    ledger = Ledger.open(settings)
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
    with projections_for(ledger).running() if projections else nullcontext():
        server.start()
        log.info("serving", host=host, port=server.port, projections=projections)
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


@projections_app.command("run")
def projections_run() -> None:
    """Keep every view up to date until SIGTERM or SIGINT (a standby if another runs)."""
    configure_logging()
    ledger = Ledger.open()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info("projections_running")
    projections_for(ledger).run(stopping)
    ledger.close()


@projections_app.command("status")
def projections_status() -> None:
    """Each view's position, the head of the log, and how far behind it is."""
    ledger = Ledger.open()
    table = Table("view", "generation", "position", "head", "lag (events)", "lag (s)", "rebuild")
    for s in projections_for(ledger).status():
        table.add_row(
            s.view,
            str(s.generation),
            str(s.position),
            str(s.head),
            str(s.lag_events),
            f"{s.lag_seconds:.1f}",
            "in progress" if s.rebuilding else "",
        )
    Console().print(table)
    ledger.close()


@projections_app.command("rebuild")
def projections_rebuild(
    view: str = typer.Argument(..., help="orders, inventory, customers or catalog"),
    verify: bool = typer.Option(False, help="Compare with the live view before switching."),
) -> None:
    """Rebuild a view from the start of the log into a shadow copy, then switch to it.

    The live view keeps serving meanwhile. Interrupted, it resumes where it stopped.
    """
    ledger = Ledger.open()
    views = projections_for(ledger)
    if view not in views.views:
        console.print(f"[red]No view {view!r}; views: {', '.join(sorted(views.views))}[/]")
        raise typer.Exit(2)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(f"rebuilding {view}", total=None, rate="-")
        started = time.perf_counter()

        def progress(position: int, head: int) -> None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=position, total=head, rate=f"{position / elapsed:,.0f}")

        report = views.rebuild(view, verify=verify, progress=progress)
    if report.resumed:
        console.print("Resumed an interrupted rebuild.")
    for difference in report.differences:
        console.print(f"[yellow]difference:[/] {difference}")
    if verify and not report.differences:
        console.print("The rebuilt view equals the live view.")
    console.print(
        f"Rebuilt {view} (generation {report.generation}) up to position {report.position}: "
        f"{report.events} events in {report.seconds:.1f} s."
    )
    ledger.close()
    if report.differences:
        # Queries now read the rebuilt copy; the exit code tells scripts the old one drifted.
        console.print("[yellow]The live view had drifted from the log; it was replaced.[/]")
        raise typer.Exit(3)


if __name__ == "__main__":
    app()
