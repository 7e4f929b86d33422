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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

from ledger.domain.errors import DomainError, NotFound
from ledger.permissions import ALL_PERMISSIONS, Permission, Role, permissions_of

__all__ = ["ApiKey", "ApiKeys", "Authenticator", "PermissionDenied", "Principal", "Role"]

KEY_PREFIX = "plk"
DEV_MERCHANT = "dev"


class Unauthenticated(DomainError):
    """No valid credentials (UNAUTHENTICATED)."""

    reason = "API_KEY_INVALID"


class PermissionDenied(DomainError):
    """The caller's key lacks what an RPC needs (PERMISSION_DENIED)."""

    reason = "PERMISSION_REQUIRED"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. `key_id` is empty only in development mode."""

    merchant_id: str
    app_id: str
    key_id: str
    roles: frozenset[Role]
    permissions: frozenset[Permission]

    @classmethod
    def of_key(cls, key: ApiKey) -> Principal:
        return cls(key.merchant_id, key.app_id, key.key_id, key.roles, permissions_of(key.roles))

    @classmethod
    def development(cls) -> Principal:
        return cls(DEV_MERCHANT, DEV_MERCHANT, "", frozenset(Role), ALL_PERMISSIONS)

    def require(self, permission: Permission, method: str = "") -> None:
        """Refuses a caller none of whose roles grants `permission`."""
        if permission not in self.permissions:
            what = method.rsplit("/", 1)[-1] or "this"
            raise PermissionDenied(
                f"{what} needs the {permission.value} permission, which the roles of this "
                f"API key ({', '.join(sorted(self.roles)) or 'none'}) do not grant",
                metadata={"permission": permission.value, "method": method},
            )


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    merchant_id: str
    app_id: str
    roles: frozenset[Role]
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None
    client_subject: str | None = None  # an mTLS client certificate subject that acts as it


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(row: dict[str, Any]) -> ApiKey:
    # `roles` is filled for every key (backfilled from the old single `role` column).
    roles = row["roles"] or [row["role"]]
    return ApiKey(
        key_id=row["key_id"],
        merchant_id=row["merchant_id"],
        app_id=row["app_id"],
        roles=frozenset(Role(r) for r in roles),
        secret_hash=row["secret_hash"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        client_subject=row["client_subject"],
    )


class ApiKeys:
    """The `api_keys` table."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self.table = Identifier(datastore.schema, "api_keys")

    def create_table(self) -> None:
        """Creates the table, or brings an older one up to date (run under the schema lock)."""
        subject_index = Identifier("api_keys_client_subject")  # lives in the table's schema
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
            # Several roles per key. `role` stays (the first role) for servers of the
            # previous release that read only it; `roles` is what decides.
            curs.execute(
                SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS roles text[]").format(self.table)
            )
            curs.execute(
                SQL("UPDATE {} SET roles = ARRAY[role] WHERE roles IS NULL").format(self.table)
            )
            curs.execute(
                SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS client_subject text").format(
                    self.table
                )
            )
            curs.execute(
                SQL(
                    "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (client_subject)"
                    " WHERE revoked_at IS NULL AND client_subject IS NOT NULL"
                ).format(subject_index, self.table)
            )

    def create(
        self,
        merchant_id: str,
        app_id: str,
        role: Role | Iterable[Role] = Role.MANAGER,
        *,
        client_subject: str | None = None,
    ) -> tuple[str, str]:
        """Creates a key; returns (key id, the full key). The full key is never stored."""
        roles = [role] if isinstance(role, Role) else list(dict.fromkeys(role))
        if not roles:
            raise ValueError("a key needs at least one role")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {} (key_id, merchant_id, app_id, role, roles, secret_hash,"
                    " client_subject) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                ).format(self.table),
                (
                    key_id,
                    merchant_id,
                    app_id,
                    roles[0].value,
                    [r.value for r in roles],
                    _hash(secret),
                    client_subject,
                ),
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
        return None if row is None else _key(row)

    def for_subject(self, subject: str) -> ApiKey | None:
        """The active key an mTLS client certificate with this subject acts as, if any."""
        with self.datastore.transaction() as curs:
            curs.execute(
                SQL("SELECT * FROM {} WHERE client_subject = %s AND revoked_at IS NULL").format(
                    self.table
                ),
                (subject,),
            )
            row = curs.fetchone()
        return None if row is None else _key(row)

    def list(self) -> list[ApiKey]:
        with self.datastore.transaction() as curs:
            curs.execute(SQL("SELECT * FROM {} ORDER BY created_at").format(self.table))
            return [_key(row) for row in curs.fetchall()]

    def any_created(self) -> bool:
        """Whether a key was ever created here (revoked ones count: rows are never deleted)."""
        with self.datastore.transaction() as curs:
            curs.execute(SQL("SELECT EXISTS (SELECT 1 FROM {})").format(self.table))
            row = curs.fetchone()
        return bool(row and row["exists"])

    def any_active(self) -> bool:
        with self.datastore.transaction() as curs:
            curs.execute(
                SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE revoked_at IS NULL)").format(self.table)
            )
            row = curs.fetchone()
        return bool(row and row["exists"])


class Authenticator:
    """Turns an `authorization` header (or an mTLS client certificate) into a Principal.

    Development mode (every caller is merchant `dev`, with every permission) is decided once,
    when the Authenticator is made: on only if `allow_dev_mode` (a loopback server) and no
    key was ever created in this database. It ends for good as soon as a key exists (within
    `ttl` seconds of its creation, at once when a key is used) and never turns on again, so
    revoking every key leaves the server closed, running or restarted. Key lookups are
    cached for `ttl` seconds: a revoked key stops working within that time.
    """

    def __init__(self, keys: ApiKeys, *, allow_dev_mode: bool = True, ttl: float = 5.0) -> None:
        self.keys = keys
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, ApiKey | None]] = {}
        self.dev_mode_at_start = allow_dev_mode and not keys.any_created()
        self._dev_mode = self.dev_mode_at_start
        self._dev_checked_at = float("-inf")  # the first call looks again

    def dev_mode(self) -> bool:
        with self._lock:
            if not self._dev_mode:
                return False  # once off, never on again
            if time.monotonic() - self._dev_checked_at <= self.ttl:
                return True
        still_no_keys = not self.keys.any_created()
        with self._lock:
            self._dev_mode = self._dev_mode and still_no_keys
            self._dev_checked_at = time.monotonic()
            return self._dev_mode

    def authenticate(
        self, authorization: str | None, client_subject: str | None = None
    ) -> Principal:
        if not authorization:
            if client_subject:
                key = self._lookup("subject", client_subject, self.keys.for_subject)
                if key is not None and key.revoked_at is None:
                    self._end_dev_mode()
                    return Principal.of_key(key)
            if self.dev_mode():
                return Principal.development()
            raise Unauthenticated(
                "missing `authorization: Bearer <api key>` metadata", reason="API_KEY_REQUIRED"
            )
        scheme, _, token = authorization.partition(" ")
        parts = token.strip().split("_", 2)
        if scheme.lower() != "bearer" or len(parts) != 3 or parts[0] != KEY_PREFIX:
            raise Unauthenticated("malformed API key; expected `Bearer plk_...`")
        key = self._lookup("key", parts[1], self.keys.get)
        if key is None or not hmac.compare_digest(key.secret_hash, _hash(parts[2])):
            raise Unauthenticated("unknown API key")
        self._end_dev_mode()  # a key exists
        if key.revoked_at is not None:
            raise Unauthenticated("this API key was revoked", reason="API_KEY_REVOKED")
        return Principal.of_key(key)

    def _end_dev_mode(self) -> None:
        with self._lock:
            self._dev_mode = False

    def _lookup(self, kind: str, value: str, load: Callable[[str], ApiKey | None]) -> ApiKey | None:
        cache_key = (kind, value)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(cache_key)
        if cached is not None and now - cached[0] <= self.ttl:
            return cached[1]
        key = load(value)
        with self._lock:
            if len(self._cache) > 10_000:  # bound memory against random key ids
                self._cache.clear()
            self._cache[cache_key] = (now, key)
        return key
