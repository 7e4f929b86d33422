"""Checks shared by every command: they collect all violations so a client can fix them at once."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from ledger.domain.card_numbers import looks_like_card_number
from ledger.domain.errors import FieldViolation, InvalidRequest
from ledger.domain.money import MAX_AMOUNT, is_currency


@dataclass
class Checks:
    """Collects every violation of a request, so a client can fix them all at once."""

    violations: list[FieldViolation] = field(default_factory=list)

    def fail(self, path: str, description: str, reason: str = "INVALID_FIELD") -> None:
        self.violations.append(FieldViolation(path, description, reason))

    def text(self, path: str, value: str, *, max_len: int, required: bool = False) -> None:
        if required and not value.strip():
            self.fail(path, "is required")
        elif len(value) > max_len:
            self.fail(path, f"must be at most {max_len} characters")
        elif _CONTROL_CHARS.search(value):
            self.fail(path, "must not contain control characters")
        else:
            self.no_card_number(path, value)

    def no_card_number(self, path: str, value: str) -> bool:
        """Refuses anything shaped like a card number (see ledger/domain/card_numbers.py)."""
        if looks_like_card_number(value, path):
            self.fail(
                path,
                "looks like a card number; card numbers are never accepted or stored",
                "CARD_NUMBER_REJECTED",
            )
            return False
        return True

    def uuid(self, path: str, value: str) -> None:
        if not value:
            self.fail(path, "is required")
            return
        try:
            uuid.UUID(value)
        except ValueError:
            self.fail(path, "must be a UUID")

    def amount(self, path: str, value: int, *, minimum: int) -> None:
        if not minimum <= value <= MAX_AMOUNT:
            self.fail(path, f"must be between {minimum} and {MAX_AMOUNT} minor units")

    def currency(self, path: str, value: str) -> None:
        if not value:
            self.fail(path, "is required")
        elif not is_currency(value):
            self.fail(path, f"{value[:8]!r} is not an ISO 4217 currency code", "UNKNOWN_CURRENCY")

    def enum(self, path: str, value: object) -> None:
        if value is None:
            self.fail(path, "must be set to a known value")

    def sku(self, path: str, value: str) -> None:
        if not value:
            self.fail(path, "is required")
        elif not self.no_card_number(path, value):
            pass
        elif not _SKU.fullmatch(value):
            self.fail(
                path, "must be 1-64 letters, digits or . _ - / (starting with a letter or digit)"
            )

    def slug(self, path: str, value: str) -> None:
        if not value:
            self.fail(path, "is required")
        elif not self.no_card_number(path, value):
            pass
        elif not _SLUG.fullmatch(value):
            self.fail(path, "must be 1-32 lower-case letters, digits, '-' or '_'")

    def update_mask(self, names: list[str], allowed: tuple[str, ...]) -> None:
        if not names:
            self.fail("update_mask", "must name at least one field to change")
        for name in names:
            if name not in allowed:
                self.fail(
                    "update_mask",
                    f"{name[:40]!r} cannot be changed; changeable: {', '.join(allowed)}",
                )

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidRequest(self.violations)


_SKU = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
