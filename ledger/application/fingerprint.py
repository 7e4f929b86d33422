"""What a request asks for, as a digest: tells a retry of a request id from its reuse.

Every command record stores one, so the definition here must never change (pinned by
tests/unit/test_request_fingerprint.py against digests already stored).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass
from typing import Any

from ledger.domain import commands as c


def request_fingerprint(cmd: Any, expected_version: int | None) -> str:
    """A digest of what a request asks for, to tell a retry from a reuse of its id.

    Stored with every command record, so it must never change: the canonical JSON of
    `{"command", "args": dataclasses.asdict(cmd), "expected"}`, built without asdict's
    copies (the JSON encoder walks nested dataclasses through `_plain`). Fields added to a
    command later (`commands.ADDED_LATER`) are left out while they hold their default.
    """
    assert is_dataclass(cmd)
    assert not isinstance(cmd, type)
    body = {"command": type(cmd).__name__, "args": cmd, "expected": expected_version}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def canonical_json(value: Any) -> str:
    """`json.dumps` of `value` with dataclasses as `asdict` has them, keys sorted, no spaces,
    anything else JSON lacks as `str()`: the form every stored fingerprint is taken of."""
    return json.dumps(value, sort_keys=True, default=_plain, separators=(",", ":"))


def _plain(value: Any) -> Any:
    """A dataclass as the dict of its fields (as `asdict` has it), less fields added later
    that hold their default; anything else as text."""
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: getattr(value, f.name)
            for f in fields(value)
            if not f.metadata  # most fields: no metadata at all, nothing to compare
            or not (f.metadata == c.ADDED_LATER and getattr(value, f.name) == f.default)
        }
    return str(value)
