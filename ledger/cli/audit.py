"""`posledger audit`: the hash chain, signed checkpoints, verify, export, replay."""

from __future__ import annotations

import gzip
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import typer
from rich.console import Console
from rich.table import Table
from typer._click.exceptions import UsageError
from typer.core import TyperCommand

from ledger import bootstrap
from ledger.audit import BadCheckpoint, VerifyReport, take_checkpoint, verify_log
from ledger.audit import checkpoint as checkpoints
from ledger.audit.events import LAST_VERSION, AuditLog, AuditRecord
from ledger.audit.operations import (
    MalformedLine,
    UnverifiableExport,
    export_header,
    verify_export,
)
from ledger.cli.app import (
    audit_app,
    console,
    log,
)
from ledger.cli.progress import rate_progress, updater
from ledger.domain.sale import Sale
from ledger.store import Settings

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
    with closing(bootstrap.open_ledger()) as ledger:
        keeper = bootstrap.build_chain_keeper(ledger.settings)
        before = keeper.head()
        report = keeper.extend()
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
    keeper = bootstrap.build_chain_keeper(Settings.from_env())
    with rate_progress() as bar:
        signed, report = take_checkpoint(
            keeper, private_key, max_anchors=anchors, progress=updater(bar, "verifying")
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
        keeper = bootstrap.build_chain_keeper(settings)
        if signed is not None and signed.schema != keeper.schema:
            console.print(
                f"[yellow]The checkpoint was taken of schema {signed.schema!r}; "
                f"this is {keeper.schema!r}.[/]"
            )
        with rate_progress() as bar:
            report = verify_log(keeper, signed, progress=updater(bar, "verifying"))
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
    ledger = bootstrap.open_ledger()
    keeper = bootstrap.build_chain_keeper(ledger.settings)
    head = ledger.recorder.max_notification_id() or 0
    stop = min(to_position or head, head)
    chain_head = keeper.head()
    written = 0
    started = time.perf_counter()
    opener: Any = gzip.open if output.suffix == ".gz" else open
    with (
        opener(output, "wt", encoding="utf-8") as out,
        rate_progress(transient=False) as bar,
    ):
        previous = keeper.digest_before(from_position)
        out.write(
            export_header(keeper.schema, from_position, stop, merchant, chain_head, previous) + "\n"
        )
        task = bar.add_task("exporting", total=max(stop - from_position + 1, 0), rate="-")
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


TIMELINE_ROWS = 1000  # rows per printed table: a table holds its rows until printed


@audit_app.command("replay")
def audit_replay(
    sale: str = typer.Option(..., help="The sale's id."),
    as_of: datetime | None = typer.Option(
        None, help="State after the last event at or before this time (UTC if no zone)."
    ),
    version: int | None = typer.Option(None, min=1, help="State at this version."),
) -> None:
    """Print a sale's timeline, event by event, and its state at the end.

    The events are read page by page up to the version asked for (as of a time: the
    sale's version then), bounded in SQL, and printed in tables of `TIMELINE_ROWS`:
    memory stays flat however long the history.
    """
    try:
        sale_id = uuid.UUID(sale)
    except ValueError:
        console.print(f"[red]{sale!r} is not a sale id[/]")
        raise typer.Exit(2) from None
    with closing(bootstrap.open_ledger()) as ledger:
        through = version or LAST_VERSION
        if as_of is not None:
            moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
            through = min(through, ledger.sale_version_at(sale_id, moment))
        records = AuditLog(ledger).timeline(sale_id, through)
        first = next(records, None)
        if first is None or first.type != Sale.Created.TOPIC:
            console.print("[red]No such sale at that point.[/]")
            raise typer.Exit(1)
        last = _print_timeline(itertools.chain([first], records))
        state: object = ledger.repository.get(sale_id, version=last.version)
        assert isinstance(state, Sale)
        Console().print(
            f"State at version {state.version}: {state.status.value}, total {state.total} "
            f"{state.currency_code}, paid {state.paid_total}, refunded {state.refunded_total}, "
            f"due {state.amount_due}, {len(state.payments)} payment(s), "
            f"{len(state.line_items)} line(s)."
        )


def _print_timeline(records: Iterator[AuditRecord]) -> AuditRecord:
    """Prints the records (at least one) in tables of `TIMELINE_ROWS`; the last record."""
    last: AuditRecord | None = None
    while rows := list(itertools.islice(records, TIMELINE_ROWS)):
        table = Table("version", "position", "recorded at", "event", "by", "details")
        for r in rows:
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
        last = rows[-1]
    assert last is not None
    return last
