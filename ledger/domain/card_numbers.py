"""The one card-number detector: every string the ledger stores or logs goes through it.

A card number (PAN) is 13 to 19 digits passing the Luhn check. People and programs write
them in many ways, so before looking for digits a string is decoded and normalised:

- URL-encoding (`%20`, `%2D`, also double-encoded `%2520`) and HTML entities are decoded;
- Unicode compatibility forms are folded (NFKC: full-width digits, non-breaking spaces) and
  every decimal digit of any script becomes its ASCII digit;
- invisible format characters (zero-width spaces, soft hyphens) are dropped.

Digits then form *groups*, and groups separated by any run of separators (whitespace of
any kind, dashes of any kind, dots, underscores, slashes, backslashes, middle dots) form
a *run*. A run, or any consecutive groups of it, holding 13 to 19 digits (leading zeros
aside) that pass the Luhn check is a card number: "4111 1111 1111 1111 12/27" and
"4111.1111..1111__1111" are both caught.

Exceptions, so identifiers stay usable (README.md lists them too):
- UUIDs in canonical form (8-4-4-4-12 hex digits, or 32 hex digits with a letter) anywhere;
- E.164 phone numbers (`+` and 7 to 15 digits, written without separators) anywhere;
- a `barcode` field whose whole value is a GTIN-8, -12, -13 or -14 with a valid check digit.
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import unquote

MIN_DIGITS = 13
MAX_DIGITS = 19
REDACTED = "[removed: looks like a card number]"

_UUID = re.compile(
    r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
    r"|(?=[0-9]*[a-fA-F])[0-9a-fA-F]{32})(?![0-9a-fA-F])"
)
_E164_IN_TEXT = re.compile(r"(?<![0-9])\+[1-9][0-9]{6,14}(?![0-9])")
_GTIN = re.compile(r"[0-9]{8}|[0-9]{12,14}")
_SEPARATORS = frozenset("._/\\\u00b7\u2022\u2219")
_DIGITS = re.compile(r"[0-9]+")
_ASCII_DIGITS = "0123456789"


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _gtin_ok(digits: str) -> bool:
    """GS1 check digit: weights 3 and 1 alternate from the right, before the check digit."""
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def _is_separator(ch: str) -> bool:
    return ch.isspace() or ch in _SEPARATORS or unicodedata.category(ch) == "Pd"


def _decoded(text: str) -> str:
    for _ in range(3):  # `%2520` is `%20` encoded again
        decoded = html.unescape(unquote(text))
        if decoded == text:
            break
        text = decoded
    text = unicodedata.normalize("NFKC", text)
    out = []
    for ch in text:
        if "0" <= ch <= "9":
            out.append(ch)
            continue
        digit = unicodedata.decimal(ch, None)
        if digit is not None:
            out.append(str(digit))
        elif unicodedata.category(ch) != "Cf":
            out.append(ch)
    return "".join(out)


def _runs(text: str) -> list[list[str]]:
    """Groups of digits, gathered into runs wherever only separators lie between them."""
    runs: list[list[str]] = []
    end = -1
    for match in _DIGITS.finditer(text):
        between = text[end : match.start()] if end >= 0 else None
        if between is not None and between and all(_is_separator(ch) for ch in between):
            runs[-1].append(match.group())
        else:
            runs.append([match.group()])
        end = match.end()
    return runs


def _run_has_card_number(groups: list[str]) -> bool:
    for start in range(len(groups)):
        digits = ""
        for group in groups[start:]:
            digits += group
            significant = digits.lstrip("0")
            if len(significant) > MAX_DIGITS:
                break
            if len(significant) >= MIN_DIGITS and _luhn_ok(significant):
                return True
    return False


def _exempt(field: str, value: str) -> bool:
    name = re.sub(r"\[\d+\]", "", field).rsplit(".", 1)[-1]
    if name == "barcode":
        return _GTIN.fullmatch(value) is not None and _gtin_ok(value)
    return False


def looks_like_card_number(text: str, field: str = "") -> bool:
    """Whether `text` (the value of `field`, a path such as `customer.phone`) holds a PAN."""
    if not text or _exempt(field, text):
        return False
    encoded = "%" in text or "&" in text
    if text.isascii():
        # Most strings (ids, codes, names): ASCII digits only, and nothing to decode or fold
        # unless something is percent- or entity-encoded.
        if not encoded and sum(map(text.count, _ASCII_DIGITS)) < MIN_DIGITS:
            return False
        decoded = _decoded(text) if encoded else text
    else:
        if not encoded and sum(ch.isdigit() for ch in text) < MIN_DIGITS:
            return False  # too few digits of any script
        decoded = _decoded(text)
    decoded = _E164_IN_TEXT.sub(" x ", _UUID.sub(" x ", decoded))
    return any(_run_has_card_number(groups) for groups in _runs(decoded))


def redacted(text: str) -> str:
    """`text`, or a placeholder if it holds something shaped like a card number (for logs)."""
    return REDACTED if looks_like_card_number(text) else text
