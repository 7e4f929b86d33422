"""API keys: who a caller is. A key is shown once when created; only its hash is stored.

A key reads `plk_<key id>_<secret>`. The key id finds the row; the secret's SHA-256 is
compared in constant time (the secret is 256 random bits, so a fast hash is enough).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

from ledger.domain.errors import DomainError, NotFound

KEY_PREFIX = "plk"
DEV_MERCHANT = "dev"


class Role(StrEnum):
    CASHIER = "cashier"
    MANAGER = "manager"
    AUDITOR = "auditor"


class Unauthenticated(DomainError):
    """No valid credentials (UNAUTHENTICATED)."""

    reason = "API_KEY_INVALID"


class PermissionDenied(DomainError):
    """The caller's key lacks the role an RPC needs (PERMISSION_DENIED)."""

    reason = "ROLE_REQUIRED"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    merchant_id: str
    app_id: str
    key_id: str
    role: Role

    def require(self, role: Role) -> None:
        """Refuses a caller without `role`. Development mode (no keys at all) has every role."""
        if self.role is not role and self.key_id:
            raise PermissionDenied(f"this needs an API key with the {role.value} role")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    merchant_id: str
    app_id: str
    role: Role
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """The `api_keys` table."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self.table = Identifier(datastore.schema, "api_keys")

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " key_id text PRIMARY KEY,"
                    " merchant_id text NOT NULL,"
                    " app_id text NOT NULL,"
                    " role text NOT NULL,"
                    " secret_hash text NOT NULL,"
                    " created_at timestamptz NOT NULL DEFAULT now(),"
                    " revoked_at timestamptz)"
                ).format(self.table)
            )

    def create(self, merchant_id: str, app_id: str, role: Role = Role.MANAGER) -> tuple[str, str]:
        """Creates a key; returns (key id, the full key). The full key is never stored."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {} (key_id, merchant_id, app_id, role, secret_hash)"
                    " VALUES (%s, %s, %s, %s, %s)"
                ).format(self.table),
                (key_id, merchant_id, app_id, role.value, _hash(secret)),
            )
        return key_id, f"{KEY_PREFIX}_{key_id}_{secret}"

    def revoke(self, key_id: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "UPDATE {} SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s"
                ).format(self.table),
                (key_id,),
            )
            if curs.rowcount == 0:
                raise NotFound(f"no API key with id {key_id}", reason="API_KEY_NOT_FOUND")

    def get(self, key_id: str) -> ApiKey | None:
        with self.datastore.transaction() as curs:
            curs.execute(SQL("SELECT * FROM {} WHERE key_id = %s").format(self.table), (key_id,))
            row = curs.fetchone()
        if row is None:
            return None
        return ApiKey(**{**row, "role": Role(row["role"])})

    def list(self) -> list[ApiKey]:
        with self.datastore.transaction() as curs:
            curs.execute(SQL("SELECT * FROM {} ORDER BY created_at").format(self.table))
            return [ApiKey(**{**row, "role": Role(row["role"])}) for row in curs.fetchall()]

    def any_active(self) -> bool:
        with self.datastore.transaction() as curs:
            curs.execute(
                SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE revoked_at IS NULL)").format(self.table)
            )
            row = curs.fetchone()
        return bool(row and row["exists"])


class Authenticator:
    """Turns an `authorization` header into a Principal.

    With no active key in the database the ledger runs in development mode: every caller is
    merchant `dev`. Only a server bound to a loopback address allows that (`allow_dev_mode`).
    Lookups are cached for `ttl` seconds: a revoked key stops working within that time.
    """

    def __init__(self, keys: ApiKeys, *, allow_dev_mode: bool = True, ttl: float = 5.0) -> None:
        self.keys = keys
        self.allow_dev_mode = allow_dev_mode
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._dev_mode: tuple[float, bool] = (float("-inf"), False)  # never checked yet

    def dev_mode(self) -> bool:
        if not self.allow_dev_mode:
            return False
        now = time.monotonic()
        with self._lock:
            checked_at, value = self._dev_mode
        if now - checked_at > self.ttl:
            value = not self.keys.any_active()
            with self._lock:
                self._dev_mode = (now, value)
        return value

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            if self.dev_mode():
                return Principal(DEV_MERCHANT, DEV_MERCHANT, "", Role.MANAGER)
            raise Unauthenticated(
                "missing `authorization: Bearer <api key>` metadata", reason="API_KEY_REQUIRED"
            )
        scheme, _, token = authorization.partition(" ")
        parts = token.strip().split("_", 2)
        if scheme.lower() != "bearer" or len(parts) != 3 or parts[0] != KEY_PREFIX:
            raise Unauthenticated("malformed API key; expected `Bearer plk_...`")
        key = self._lookup(parts[1])
        if key is None or not hmac.compare_digest(key.secret_hash, _hash(parts[2])):
            raise Unauthenticated("unknown API key")
        if key.revoked_at is not None:
            raise Unauthenticated("this API key was revoked", reason="API_KEY_REVOKED")
        return Principal(key.merchant_id, key.app_id, key.key_id, key.role)

    def _lookup(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] <= self.ttl:
            return cached[1]
        key = self.keys.get(key_id)
        with self._lock:
            if len(self._cache) > 10_000:  # bound memory against random key ids
                self._cache.clear()
            self._cache[key_id] = (now, key)
        return key
