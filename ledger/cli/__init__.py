"""The `posledger` command: run the service, manage API keys, views, deliveries and the
audit chain. One module per command group; `app.py` holds the groups themselves."""

from __future__ import annotations

from ledger.cli import audit, deliveries, expiry, keys, projections, serve
from ledger.cli.app import app

__all__ = ["app", "audit", "deliveries", "expiry", "keys", "projections", "serve"]
