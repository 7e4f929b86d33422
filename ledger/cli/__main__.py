"""`python -m ledger.cli`: the supervisor starts its server processes this way."""

from ledger.cli import app

app()
