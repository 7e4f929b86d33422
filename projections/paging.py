"""Opaque page tokens for keyset pagination, and page size limits."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ledger.domain.errors import FieldViolation, InvalidRequest

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidRequest(
            [FieldViolation("page_size", f"must be between 0 and {MAX_PAGE_SIZE} (0: default)")]
        )
    return requested or DEFAULT_PAGE_SIZE


def encode(listing: str, key: list[Any]) -> str:
    """A token naming the last row of a page, by its sort key."""
    raw = json.dumps([listing, key], default=str, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(
    listing: str,
    token: str,
    arity: int,
    kinds: Sequence[Callable[[Any], Any]] | None = None,
) -> list[Any] | None:
    """The sort key a token carries, or None for the first page.

    `kinds` converts each part of the key (`text`, `integer`, `moment`, `uuid_text`) and
    rejects a forged token whose key has the wrong types, before it reaches the database.
    """
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        name, key = json.loads(raw)
        if name != listing or not isinstance(key, list) or len(key) != arity:
            raise ValueError(name)
        if kinds is not None:
            key = [kind(part) for kind, part in zip(kinds, key, strict=True)]
        return key
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise InvalidRequest(
            [FieldViolation("page_token", "is not a page token of this listing")]
        ) from None


def page_of(
    listing: str, rows: Sequence[Mapping[str, Any]], limit: int, key: list[str]
) -> tuple[list[dict[str, Any]], str]:
    """The first `limit` of `rows` (a query asks for one more), and the next page's token."""
    page = [dict(r) for r in rows[:limit]]
    token = encode(listing, [page[-1][k] for k in key]) if len(rows) > limit else ""
    return page, token


def text(value: Any) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("not text")
    return value


def integer(value: Any) -> int:
    if type(value) is not int or not -(2**63) <= value < 2**63:
        raise ValueError("not a bigint")
    return value


def moment(value: Any) -> datetime:
    return datetime.fromisoformat(text(value))


def uuid_text(value: Any) -> str:
    return str(uuid.UUID(text(value)))


def check_filters(**values: str | None) -> None:
    """Rejects filter strings PostgreSQL cannot take (NUL characters) as field violations."""
    violations = [
        FieldViolation(name, "must not contain NUL characters")
        for name, value in values.items()
        if value and "\x00" in value
    ]
    if violations:
        raise InvalidRequest(violations)


def like_prefix(text: str) -> str:
    """`text` as a LIKE prefix pattern, its own wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
