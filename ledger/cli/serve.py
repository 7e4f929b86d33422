"""`posledger serve`: its options, TLS, development mode and several processes; the
service itself is built by `ledger.bootstrap.build_service`."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import typer

from ledger import bootstrap
from ledger.cli.app import (
    app,
    console,
    log,
)
from ledger.grpc.server import TlsConfig, is_loopback
from ledger.keys import Authenticator
from ledger.logging import configure_logging
from ledger.store import Settings
from ledger.supervisor import child_environment, reserve_port, supervise
from ledger.tracing import TracingUnavailable

SWITCH_INTERVAL_SECONDS = 0.0005


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
        tracing = bootstrap.start_tracing()  # before the pool and the server exist
    except TracingUnavailable as e:
        console.print(f"[bold red]{e}[/]")
        raise typer.Exit(2) from None
    ledger = bootstrap.open_ledger(settings)
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
            bootstrap.build_views(ledger).ensure()  # once, before the children race to
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
    index = int(os.environ.get("POSLEDGER_PROCESS_INDEX", "0"))
    service = bootstrap.build_service(
        ledger,
        f"{host}:{port}",
        authenticator=authenticator,
        max_workers=workers,
        tls=tls,
        views=projections,
        deliveries=deliveries,
        expiry=expiry,
        metrics_address=(metrics_host, metrics_port + index) if metrics_port is not None else None,
        tracing=tracing,
    )
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with service.running(grace):
        log.info(
            "serving",
            host=host,
            port=service.server.port,
            projections=projections,
            deliveries=deliveries,
            expiry=expiry,
            tls="mtls" if tls and tls.client_ca else "tls" if tls else "none",
        )
        # Timed, so a signal that lands just before the wait starts, or on another thread,
        # still ends it: an untimed wait can sleep through its handler.
        while not stopping.wait(0.5):
            pass
    service.close()
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
