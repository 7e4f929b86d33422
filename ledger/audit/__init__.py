"""Tamper evidence for the event log: a hash chain in commit order and signed checkpoints.

`chain` holds the pure functions (the digest, the walk that compares), `store` the tables
and every SQL statement, `checkpoint` the signed files and keys, `operations` what the
`posledger audit` commands do.
"""

from __future__ import annotations

from ledger.audit.chain import GENESIS, Anchor, Finding, Kind, digest, verify_rows
from ledger.audit.checkpoint import BadCheckpoint, Checkpoint
from ledger.audit.operations import take_checkpoint, verify_log
from ledger.audit.store import ChainHead, ChainKeeper, ExtendReport, VerifyReport

__all__ = [
    "GENESIS",
    "Anchor",
    "BadCheckpoint",
    "ChainHead",
    "ChainKeeper",
    "Checkpoint",
    "ExtendReport",
    "Finding",
    "Kind",
    "VerifyReport",
    "digest",
    "take_checkpoint",
    "verify_log",
    "verify_rows",
]
