"""The `posledger` command: run the service, manage API keys, views and the audit chain."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer._click.exceptions import UsageError
from typer.core import TyperCommand

from ledger.application import Ledger
from ledger.audit import BadCheckpoint, ChainKeeper, VerifyReport, take_checkpoint, verify_log
from ledger.audit import checkpoint as checkpoints
from ledger.audit.events import AuditLog
from ledger.audit.operations import (
    MalformedLine,
    UnverifiableExport,
    export_header,
    verify_export,
)
from ledger.deliveries.worker import Deliveries
from ledger.domain.errors import NotFound
from ledger.domain.sale import Sale
from ledger.expiry import Expiry
from ledger.grpc.server import TlsConfig, create_server, is_loopback
from ledger.keys import Authenticator, Role
from ledger.logging import configure_logging
from ledger.metrics import LedgerCollector, MetricsEndpoint
from ledger.store import Settings, SettingsError, database_url
from ledger.supervisor import child_environment, reserve_port, supervise
from ledger.tracing import TracingUnavailable, configure_tracing, shutdown_tracing
from projections import projections_for

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
SWITCH_INTERVAL_SECONDS = 0.0005
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


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(50051, min=0, max=65535, help="Port (0 picks a free one)."),
    workers: int = typer.Option(16, min=1, max=1024, help="Threads serving RPCs, per process."),
    processes: int = typer.Option(
        1,
        min=1,
        max=64,
        envvar="POSLEDGER_PROCESSES",
        help="Server processes sharing the port (SO_REUSEPORT), each with its own writer.",
    ),
    grace: float = typer.Option(10.0, min=0, help="Seconds in-flight calls get on shutdown."),
    projections: bool = typer.Option(
        True,
        "--projections/--no-projections",
        help="Keep the views up to date in this process (several servers stand by for each "
        "other); --no-projections where dedicated `posledger projections run` workers do.",
    ),
    deliveries: bool = typer.Option(
        True,
        "--deliveries/--no-deliveries",
        help="Send callbacks and webhooks from this process (several servers share the "
        "work); --no-deliveries where dedicated `posledger deliveries run` workers do.",
    ),
    expiry: bool = typer.Option(
        True,
        "--expiry/--no-expiry",
        help="Expire payments pending past their deadline from this process (several servers "
        "may: each payment expires once); --no-expiry where `posledger expiry run` does.",
    ),
    tls_cert: Path | None = typer.Option(
        None, envvar="POSLEDGER_TLS_CERT", help="Server certificate chain (PEM): serve TLS."
    ),
    tls_key: Path | None = typer.Option(
        None, envvar="POSLEDGER_TLS_KEY", help="Private key of --tls-cert (PEM)."
    ),
    client_ca: Path | None = typer.Option(
        None,
        envvar="POSLEDGER_TLS_CLIENT_CA",
        help="CA certificates (PEM) for mutual TLS: every client must present a certificate "
        "they signed.",
    ),
    insecure: bool = typer.Option(
        False,
        envvar="POSLEDGER_INSECURE",
        help="Serve plaintext on a non-loopback address (keys and customer data in clear).",
    ),
    metrics_port: int | None = typer.Option(
        None,
        min=0,
        max=65535,
        envvar="POSLEDGER_METRICS_PORT",
        help="Serve Prometheus metrics on http://<--metrics-host>:PORT/metrics; with "
        "--processes N, process i uses PORT+i.",
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", envvar="POSLEDGER_METRICS_HOST", help="Address of the metrics endpoint."
    ),
) -> None:
    """Run the gRPC service until SIGTERM or SIGINT."""
    configure_logging()
    # Threads waiting on the database or the network get the interpreter back sooner (the
    # default lets a busy thread keep it for 5 ms): the group-commit writer most of all.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    tls = _tls_config(host, tls_cert, tls_key, client_ca, insecure)
    settings = Settings.from_env()
    try:
        tracing = configure_tracing()  # before the pool and the server exist
    except TracingUnavailable as e:
        console.print(f"[bold red]{e}[/]")
        raise typer.Exit(2) from None
    ledger = Ledger.open(settings)
    # Development mode is decided here, once: only on loopback and only with no key at all.
    authenticator = Authenticator(ledger.api_keys, allow_dev_mode=is_loopback(host))
    if not is_loopback(host) and not ledger.api_keys.any_active():
        console.print(
            f"[bold red]Refusing to serve on {host}: no API keys exist.[/] Create one with "
            "`posledger keys create --merchant M --app A`, or listen on 127.0.0.1."
        )
        raise typer.Exit(2)
    if authenticator.dev_mode_at_start:
        console.print(
            "[bold yellow]DEVELOPMENT MODE:[/] no API keys exist, so every caller is merchant "
            "'dev' and only loopback connections are accepted. Create a key with "
            "`posledger keys create` to require authentication; once a key exists, this "
            "server stays out of development mode until it is restarted."
        )
        log.warning("development_mode", merchant="dev")
    if processes > 1:
        if projections:
            projections_for(ledger).ensure()  # once, before the children race to
        ledger.close()
        tls_args = [
            *([f"--tls-cert={tls_cert}", f"--tls-key={tls_key}"] if tls_cert else []),
            *([f"--client-ca={client_ca}"] if client_ca else []),
            *(["--insecure"] if insecure else []),
            *(
                [f"--metrics-port={metrics_port}", f"--metrics-host={metrics_host}"]
                if metrics_port is not None
                else []
            ),
        ]
        tls_args.append("--deliveries" if deliveries else "--no-deliveries")
        tls_args.append("--expiry" if expiry else "--no-expiry")
        _serve_processes(
            ledger.database_url, host, port, workers, processes, grace, projections, tls_args
        )
        return
    server = create_server(
        ledger, f"{host}:{port}", authenticator=authenticator, max_workers=workers, tls=tls
    )
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    views = projections_for(ledger) if projections else None
    if views is not None:
        server.watch_views(views.state)
    outbound = Deliveries(ledger) if deliveries else None
    deadlines = Expiry(ledger) if expiry else None
    endpoint = None
    if metrics_port is not None:
        collector = LedgerCollector(
            ledger, views, views.state if views is not None else None, Deliveries(ledger)
        )
        index = int(os.environ.get("POSLEDGER_PROCESS_INDEX", "0"))
        endpoint = MetricsEndpoint.start(collector, metrics_host, metrics_port + index)
    with (
        views.running() if views is not None else nullcontext(),
        outbound.running() if outbound is not None else nullcontext(),
        deadlines.running() if deadlines is not None else nullcontext(),
    ):
        server.start()
        log.info(
            "serving",
            host=host,
            port=server.port,
            projections=projections,
            deliveries=deliveries,
            expiry=expiry,
            tls="mtls" if tls and tls.client_ca else "tls" if tls else "none",
        )
        stopping.wait()
        server.stop(grace)
    if endpoint is not None:
        endpoint.stop()
    ledger.close()
    if tracing:
        shutdown_tracing()
    log.info("stopped")


def _serve_processes(
    database_url: str,
    host: str,
    port: int,
    workers: int,
    processes: int,
    grace: float,
    projections: bool,
    tls_args: list[str],
) -> None:
    """Starts `processes` servers on one port and supervises them (ledger/supervisor.py)."""
    held = reserve_port(host, port)
    port = held.getsockname()[1]
    child_args = [
        f"--host={host}",
        f"--port={port}",
        f"--workers={workers}",
        f"--grace={grace}",
        "--processes=1",
        "--projections" if projections else "--no-projections",
        *tls_args,
    ]
    log.info("serving", host=host, port=port, processes=processes, projections=projections)
    try:
        code = supervise(processes, child_args, child_environment(database_url), grace)
    finally:
        held.close()
    raise typer.Exit(code)


def _tls_config(
    host: str, cert: Path | None, key: Path | None, client_ca: Path | None, insecure: bool
) -> TlsConfig | None:
    """TLS settings for `serve`; plaintext only on loopback unless `--insecure`."""
    if (cert is None) != (key is None):
        console.print("[bold red]--tls-cert and --tls-key go together.[/]")
        raise typer.Exit(2)
    if cert is not None and key is not None:
        return TlsConfig.from_files(cert, key, client_ca)
    if client_ca is not None:
        console.print("[bold red]--client-ca needs --tls-cert and --tls-key.[/]")
        raise typer.Exit(2)
    if not is_loopback(host):
        if not insecure:
            console.print(
                f"[bold red]Refusing to serve plaintext on {host}:[/] API keys and customer "
                "data would cross the network in clear. Pass --tls-cert and --tls-key "
                "(and --client-ca for mutual TLS), or --insecure if something else encrypts "
                "the traffic."
            )
            raise typer.Exit(2)
        console.print(
            f"[bold red]INSECURE: serving plaintext on {host}.[/] API keys, customer names, "
            "emails and phone numbers cross the network unencrypted."
        )
        log.warning("insecure_plaintext", host=host)
    return None


@keys_app.command("create")
def keys_create(
    merchant: str = typer.Option(..., help="Merchant the key acts for."),
    app_id: str = typer.Option(..., "--app", help="Application using the key."),
    roles: list[Role] = typer.Option(
        [Role.MANAGER.value],
        "--role",
        help="What the key may do; repeat for several roles (see README: permissions).",
    ),
    client_subject: str | None = typer.Option(
        None,
        help="Subject of an mTLS client certificate that acts as this key without a bearer "
        "token, e.g. 'CN=till-7,O=Acme'.",
    ),
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    ledger = Ledger.open()
    key_id, key = ledger.api_keys.create(
        merchant, app_id, [Role(r) for r in roles], client_subject=client_subject
    )
    console.print(
        f"Created key [bold]{key_id}[/] for merchant {merchant!r}, app {app_id!r}, "
        f"roles {', '.join(Role(r).value for r in roles)}."
    )
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
    table = Table("key id", "merchant", "app", "roles", "client subject", "created", "revoked")
    for key in ledger.api_keys.list():
        table.add_row(
            key.key_id,
            key.merchant_id,
            key.app_id,
            ",".join(sorted(key.roles)),
            key.client_subject or "",
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
    views = projections_for(ledger)
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


@deliveries_app.command("run")
def deliveries_run() -> None:
    """Send callbacks and webhooks until SIGTERM or SIGINT (any number of workers share them)."""
    configure_logging()
    ledger = Ledger.open()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info("deliveries_running")
    Deliveries(ledger).run(stopping)
    ledger.close()


@expiry_app.command("run")
def expiry_run(
    once: bool = typer.Option(False, "--once", help="Expire what is due now, then exit."),
) -> None:
    """Expire payments pending past their deadline until SIGTERM or SIGINT (any number of
    workers may run: each payment expires once)."""
    configure_logging()
    ledger = Ledger.open()
    worker = Expiry(ledger)
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


@deliveries_app.command("status")
def deliveries_status(
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of tables."),
) -> None:
    """The outbox's position, the backlog by status, and the latest failures."""
    ledger = Ledger.open()
    deliveries = Deliveries(ledger)
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
    ledger = Ledger.open()
    deliveries = Deliveries(ledger)
    deliveries.ensure()
    secret = deliveries.store.rotate_app_secret(merchant, app_id, str(uuid.uuid4()))
    ledger.close()
    typer.echo(secret)
    console.print("Shown once: give it to the app's receiver. It signs every callback to it.")


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


# ---- audit ---------------------------------------------------------------------------------

EXIT_TAMPERED = 1
EXIT_BAD_CHECKPOINT = 2
EXIT_UNVERIFIED = 3  # could not verify: the database unreachable, bad arguments, a crash


class _VerifyCommand(TyperCommand):
    """`audit verify`: bad arguments exit 3 (could not verify), never 2 (bad checkpoint)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as e:
            e.exit_code = EXIT_UNVERIFIED
            raise


def _rate_progress(description: str) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _keeper(settings: Settings) -> ChainKeeper:
    """The chain of the configured ledger, reached without creating or changing anything."""
    return ChainKeeper(database_url(settings), settings.schema)


@audit_app.command("keygen")
def audit_keygen(
    out: Path = typer.Option(..., help="Where to write the private key (PEM, mode 0600)."),
) -> None:
    """Create the Ed25519 key that signs checkpoints; prints its public key.

    Keep the private key away from the database server; the public key (also written to
    OUT.pub) is what `audit verify --public-key` pins.
    """
    try:
        key = checkpoints.generate_key(out)
    except FileExistsError as e:
        console.print(f"[red]Refusing to overwrite: {e}[/]")
        raise typer.Exit(EXIT_BAD_CHECKPOINT) from None
    console.print(f"Wrote the private key to {out} and the public key to {out}.pub.")
    typer.echo(checkpoints.public_pem(key.public_key()), nl=False)


@audit_app.command("chain")
def audit_chain() -> None:
    """Migration, once per ledger: chain the events written before commits chained them.

    Every commit chains its own events in its own transaction; only a log written by an
    older version has events to chain. This chains them page by page, then the last ones
    while holding writers off for a moment, and hands over to the commits. It also gives
    metadata rows and command records written before commits stored their positions
    theirs, which makes `audit verify` faster (it is correct without). On a log that is
    chained already it chains nothing.
    """
    ledger = Ledger.open()
    keeper = ChainKeeper.for_ledger(ledger)
    before = keeper.head()
    report = keeper.extend()
    ledger.close()
    if before.live:
        console.print(
            f"Nothing to do: every commit chains its events (the chain holds "
            f"{report.head.events:,} events up to position {report.head.position})."
        )
        return
    console.print(
        f"Chained {report.events:,} events written before write-time chaining in "
        f"{report.seconds:.1f} s; the chain holds {report.head.events:,} events up to "
        f"position {report.head.position}, and every commit now chains its own."
    )


@audit_app.command("checkpoint")
def audit_checkpoint(
    key: Path = typer.Option(..., help="The private key from `audit keygen`."),
    out: Path = typer.Option(..., help="Where to write the signed checkpoint (JSON)."),
    anchors: int = typer.Option(
        256, min=1, help="Evenly spaced digests to sign, at most (and the head)."
    ),
) -> None:
    """Verify the chain and write a signed checkpoint of its head (only reads the log).

    Nothing is signed if the log was tampered with or has unchained events (exit 1).
    """
    try:
        private_key = checkpoints.load_private_key(key)
    except BadCheckpoint as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(EXIT_BAD_CHECKPOINT) from None
    keeper = _keeper(Settings.from_env())
    with _rate_progress("verifying") as bar:
        signed, report = take_checkpoint(
            keeper, private_key, max_anchors=anchors, progress=_updater(bar, "verifying")
        )
    if signed is None:
        _print_verify_report(report)
        console.print("[red]Not signed: the log was tampered with or is not wholly chained.[/]")
        raise typer.Exit(EXIT_TAMPERED)
    out.write_text(signed.to_json())
    console.print(
        f"Signed checkpoint at position {signed.position} ({signed.events:,} events, "
        f"{len(signed.anchors)} anchors) written to {out}."
    )


@audit_app.command("verify", cls=_VerifyCommand)
def audit_verify(
    checkpoint: Path | None = typer.Option(
        None, help="A signed checkpoint to check the log against (catches a rewritten chain)."
    ),
    public_key: Path | None = typer.Option(
        None, help="The operator's public key (PEM): the checkpoint must be signed with it."
    ),
    export: Path | None = typer.Option(
        None,
        "--export",
        help="Verify this file of `audit export` instead of the database (no database "
        "needed); with --checkpoint it proves the export.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Also print the report as JSON."),
) -> None:
    """Recompute the chain from the events; report where anything was changed.

    Reports the first position where an event, its metadata or its command record was
    changed, deleted or inserted, or where events are not chained. Only reads: a
    read-only database role is enough.

    Exit codes: 0 clean; 1 tampered (or events not chained); 2 the checkpoint or key is
    unreadable or wrongly signed; 3 could not verify (database unreachable, missing
    tables, bad arguments, an unreadable export).
    """
    signed = None
    try:
        trusted = checkpoints.load_public_key(public_key) if public_key else None
        if checkpoint is not None:
            signed = checkpoints.load(checkpoint, trusted)
    except BadCheckpoint as e:
        console.print(f"[red]Bad checkpoint: {e}[/]")
        raise typer.Exit(EXIT_BAD_CHECKPOINT) from None
    if signed is not None and trusted is None:
        console.print(
            "[yellow]The signature was checked with the key inside the checkpoint; pass "
            "--public-key to make sure it is the operator's.[/]"
        )
    try:
        if export is not None:
            _verify_export(export, signed, as_json)
            return
        settings = Settings.from_env()
        keeper = _keeper(settings)
        if signed is not None and signed.schema != keeper.schema:
            console.print(
                f"[yellow]The checkpoint was taken of schema {signed.schema!r}; "
                f"this is {keeper.schema!r}.[/]"
            )
        with _rate_progress("verifying") as bar:
            report = verify_log(keeper, signed, progress=_updater(bar, "verifying"))
    except typer.Exit:
        raise
    except psycopg.Error as e:
        console.print(f"[red]Could not verify: the database answered {e!s}[/]")
        raise typer.Exit(EXIT_UNVERIFIED) from None
    except Exception as e:  # a crash is no verdict: never "tampered"
        log.exception("audit_verify_failed")
        console.print(f"[red]Could not verify: {e!r}[/]")
        raise typer.Exit(EXIT_UNVERIFIED) from None
    if as_json:
        typer.echo(json.dumps(_report_json(report, signed)))
    _print_verify_report(report, signed)
    if report.finding is not None:
        raise typer.Exit(EXIT_TAMPERED)


def _verify_export(path: Path, signed: checkpoints.Checkpoint | None, as_json: bool) -> None:
    try:
        report = verify_export(path, signed)
    except MalformedLine as e:
        console.print(f"[bold red]TAMPERED[/]: the export does not parse at {e}.")
        if as_json:
            typer.echo(json.dumps({"clean": False, "malformed_line": e.line}))
        raise typer.Exit(EXIT_TAMPERED) from None
    except (UnverifiableExport, OSError, EOFError) as e:
        console.print(f"[red]Could not verify the export: {e}[/]")
        raise typer.Exit(EXIT_UNVERIFIED) from None
    finding = report.finding
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "clean": finding is None,
                    "events": report.events,
                    "position": report.position,
                    "anchors_met": report.anchors_met,
                    "line": report.line or None,
                    "finding": None
                    if finding is None
                    else {
                        "kind": finding.kind.value,
                        "position": finding.position,
                        "after": finding.after,
                    },
                }
            )
        )
    if finding is not None:
        console.print(
            f"[bold red]TAMPERED[/] at position {finding.position} ({finding.kind.value}, "
            f"line {report.line}): {finding.describe()}."
        )
        raise typer.Exit(EXIT_TAMPERED)
    if signed is not None:
        console.print(
            f"The export matches the signed checkpoint at position {signed.position} "
            f"({report.anchors_met} digests met)."
        )
    else:
        console.print(
            "[yellow]No checkpoint given: the export agrees with the digests it carries, "
            "which proves nothing by itself; pass --checkpoint and --public-key.[/]"
        )
    console.print("[green]Clean.[/]")
    console.print(f"Verified {report.events:,} exported events up to position {report.position}.")


def _updater(bar: Progress, description: str) -> Callable[[int, int], None]:
    task = bar.add_task(description, total=None, rate="-")
    started = time.perf_counter()

    def update(position: int, stop: int) -> None:
        elapsed = max(time.perf_counter() - started, 1e-9)
        bar.update(task, completed=position, total=stop, rate=f"{position / elapsed:,.0f}")

    return update


def _report_json(report: VerifyReport, signed: checkpoints.Checkpoint | None) -> dict[str, Any]:
    finding = report.finding
    return {
        "clean": finding is None,
        "events": report.events,
        "position": report.position,
        "chain_head": report.chain_head.position,
        "live": report.chain_head.live,
        "unchained": report.unchained,
        "checkpoint": signed.position if signed else None,
        "seconds": round(report.seconds, 3),
        "events_per_second": round(report.rate),
        "finding": None
        if finding is None
        else {"kind": finding.kind.value, "position": finding.position, "after": finding.after},
    }


def _print_verify_report(
    report: VerifyReport, signed: checkpoints.Checkpoint | None = None
) -> None:
    if report.finding is not None:
        console.print(
            f"[bold red]TAMPERED[/] at position {report.finding.position} "
            f"({report.finding.kind.value}): {report.finding.describe()}."
        )
        if report.unchained and not report.chain_head.live:
            console.print(
                f"[yellow]{report.unchained:,} events predate write-time chaining: run "
                "`posledger audit chain` once (a migration), then verify again.[/]"
            )
    else:
        if signed is not None:
            console.print(
                f"The log matches the signed checkpoint at position {signed.position} "
                f"({len(signed.all_anchors())} digests)."
            )
        console.print("[green]Clean.[/]")
    done = "Recomputed" if report.finding else "Verified"
    console.print(
        f"{done} {report.events:,} events up to position {report.position} in "
        f"{report.seconds:.2f} s ({report.rate:,.0f} events/s)."
    )


@audit_app.command("export")
def audit_export(
    output: Path = typer.Option(..., help="JSON Lines file to write; `.gz` compresses it."),
    from_position: int = typer.Option(1, min=1, help="First position (inclusive)."),
    to_position: int = typer.Option(0, min=0, help="Last position (inclusive); 0: the head."),
    merchant: str | None = typer.Option(None, help="Only this merchant's events."),
) -> None:
    """Write events, one JSON object per line, streaming: memory stays flat for any size.

    The first line says what the export covers; each event carries what the audit chain
    hashed (the stored bytes in base64, the metadata and command record as stored) and its
    stored digest, so `audit verify --export FILE --checkpoint C` proves it offline.
    """
    ledger = Ledger.open()
    keeper = ChainKeeper.for_ledger(ledger)
    head = ledger.recorder.max_notification_id() or 0
    stop = min(to_position or head, head)
    chain_head = keeper.head()
    written = 0
    started = time.perf_counter()
    opener: Any = gzip.open if output.suffix == ".gz" else open
    with (
        opener(output, "wt", encoding="utf-8") as out,
        Progress(
            TextColumn("[bold]exporting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} events/s"),
            TimeRemainingColumn(),
            console=console,
        ) as bar,
    ):
        previous = keeper.digest_before(from_position)
        out.write(
            export_header(keeper.schema, from_position, stop, merchant, chain_head, previous) + "\n"
        )
        task = bar.add_task("export", total=max(stop - from_position + 1, 0), rate="-")
        records = AuditLog(ledger).export(
            from_position, stop, merchant, v1_through=chain_head.v1_through
        )
        for record in records:
            out.write(record.to_json_line() + "\n")
            written += 1
            if written % 1000 == 0:
                rate = written / max(time.perf_counter() - started, 1e-9)
                bar.update(task, completed=record.position - from_position + 1, rate=f"{rate:,.0f}")
        bar.update(task, completed=max(stop - from_position + 1, 0))
    seconds = time.perf_counter() - started
    console.print(
        f"Exported {written} events (positions {from_position}..{stop}) to {output} in "
        f"{seconds:.1f} s ({written / max(seconds, 1e-9):,.0f} events/s)."
    )
    ledger.close()


@audit_app.command("replay")
def audit_replay(
    sale: str = typer.Option(..., help="The sale's id."),
    as_of: datetime | None = typer.Option(
        None, help="State after the last event at or before this time (UTC if no zone)."
    ),
    version: int | None = typer.Option(None, min=1, help="State at this version."),
) -> None:
    """Print a sale's timeline, event by event, and its state at the end."""
    ledger = Ledger.open()
    try:
        sale_id = uuid.UUID(sale)
    except ValueError:
        console.print(f"[red]{sale!r} is not a sale id[/]")
        raise typer.Exit(2) from None
    records = AuditLog(ledger).history(sale_id, 0, 1_000_000)
    if as_of is not None:
        moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        records = [r for r in records if r.recorded_at <= moment]
    if version is not None:
        records = [r for r in records if r.version <= version]
    if not records or records[0].type != Sale.Created.TOPIC:
        console.print("[red]No such sale at that point.[/]")
        raise typer.Exit(1)
    table = Table("version", "position", "recorded at", "event", "by", "details")
    for r in records:
        details = ", ".join(
            f"{k}={v}" for k, v in r.payload.items() if k not in {"originator_topic"}
        )
        table.add_row(
            str(r.version),
            str(r.position),
            r.recorded_at.isoformat(timespec="seconds"),
            r.type.removeprefix("posledger."),
            "/".join(filter(None, (r.metadata["app_id"], r.metadata["device_id"]))),
            details[:120],
        )
    Console().print(table)
    state = ledger.repository.get(sale_id, version=records[-1].version)
    assert isinstance(state, Sale)
    Console().print(
        f"State at version {state.version}: {state.status.value}, total {state.total} "
        f"{state.currency_code}, paid {state.paid_total}, refunded {state.refunded_total}, "
        f"due {state.amount_due}, {len(state.payments)} payment(s), "
        f"{len(state.line_items)} line(s)."
    )
    ledger.close()


if __name__ == "__main__":
    app()
