"""Signing deliveries so a receiver knows they come from this ledger, unchanged and fresh.

The signature is HMAC-SHA256, keyed with the receiver's signing secret, over
`timestamp + "." + body` (the exact bytes sent). Receivers recompute it, compare in
constant time, and refuse timestamps too far from their clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Posledger-Signature"  # "v1=<hex>"
TIMESTAMP_HEADER = "Posledger-Timestamp"  # Unix seconds
DELIVERY_ID_HEADER = "Posledger-Delivery-Id"  # the same on every retry of one delivery
KIND_HEADER = "Posledger-Kind"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix that names what the value is)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str, timestamp: int, body: bytes, header: str, now: float, tolerance: float = 300
) -> bool:
    """What a receiver does (README shows the same in Python and Node)."""
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)
