"""Opaque page tokens for keyset pagination, and page size limits."""

from __future__ import annotations

import base64
import binascii
import json
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


def decode(listing: str, token: str, arity: int) -> list[Any] | None:
    """The sort key a token carries, or None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        name, key = json.loads(raw)
        if name != listing or not isinstance(key, list) or len(key) != arity:
            raise ValueError(name)
        return key
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            [FieldViolation("page_token", "is not a page token of this listing")]
        ) from None


def like_prefix(text: str) -> str:
    """`text` as a LIKE prefix pattern, its own wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
