"""`posledger projections`: run, inspect and rebuild the read views."""

from __future__ import annotations

import signal
import threading

import typer
from rich.console import Console
from rich.table import Table

from ledger import bootstrap
from ledger.cli.app import (
    console,
    log,
    projections_app,
)
from ledger.cli.progress import rate_progress, updater
from ledger.heap import freeze_startup_objects
from ledger.logging import configure_logging


@projections_app.command("run")
def projections_run() -> None:
    """Keep every view up to date until SIGTERM or SIGINT (a standby if another runs)."""
    configure_logging()
    ledger = bootstrap.open_ledger()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info("projections_running")
    worker = bootstrap.build_views(ledger)
    freeze_startup_objects()
    worker.run(stopping)
    ledger.close()


@projections_app.command("status")
def projections_status() -> None:
    """Each view's position, the head of the log, and how far behind it is."""
    ledger = bootstrap.open_ledger()
    views = bootstrap.build_views(ledger)
    table = Table(
        "view", "runner", "generation", "position", "head", "lag (events)", "lag (s)", "rebuild"
    )
    statuses = views.status()
    followed = views.followed()
    for s in statuses:
        table.add_row(
            s.view,
            "following" if s.view in followed else "[red]none[/]",
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
    ledger = bootstrap.open_ledger()
    views = bootstrap.build_views(ledger)
    if view not in views.views:
        console.print(f"[red]No view {view!r}; views: {', '.join(sorted(views.views))}[/]")
        raise typer.Exit(2)
    with rate_progress(transient=False) as bar:
        progress = updater(bar, f"rebuilding {view}")
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
