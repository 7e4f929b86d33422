"""`posledger keys`: create, list and revoke API keys."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ledger import bootstrap
from ledger.cli.app import (
    console,
    keys_app,
)
from ledger.domain.errors import NotFound
from ledger.keys import Role


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
    ledger = bootstrap.open_ledger()
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
    ledger = bootstrap.open_ledger()
    try:
        ledger.api_keys.revoke(key_id)
    except NotFound as e:
        console.print(f"[red]{e.message}[/]")
        raise typer.Exit(1) from None
    console.print(f"Revoked key {key_id}.")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never the keys themselves)."""
    ledger = bootstrap.open_ledger()
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
