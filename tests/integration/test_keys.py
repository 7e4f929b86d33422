"""API keys in the real `api_keys` table, and the Authenticator on top of them."""

from __future__ import annotations

import hashlib
import time

import pytest

from ledger.application import Ledger
from ledger.domain.errors import NotFound
from ledger.keys import DEV_MERCHANT, KEY_PREFIX, ApiKeys, Authenticator, Unauthenticated
from ledger.permissions import ROLE_PERMISSIONS, Permission, Role
from tests.integration.conftest import MERCHANT_A, MERCHANT_B, Db


@pytest.fixture
def keys(ledger: Ledger) -> ApiKeys:
    return ledger.api_keys


def _secret(full_key: str) -> str:
    prefix, key_id, secret = full_key.split("_", 2)
    assert prefix == KEY_PREFIX
    assert key_id
    return secret


def test_create_get_list_and_revoke(keys: ApiKeys) -> None:
    key_id, full_key = keys.create(MERCHANT_A, "till-1", Role.CASHIER)
    other_id, _ = keys.create(MERCHANT_B, "back-office")

    assert full_key.startswith(f"{KEY_PREFIX}_{key_id}_")
    key = keys.get(key_id)
    assert key is not None
    assert (key.key_id, key.merchant_id, key.app_id, key.roles) == (
        key_id,
        MERCHANT_A,
        "till-1",
        frozenset({Role.CASHIER}),
    )
    assert key.revoked_at is None
    assert key.secret_hash == hashlib.sha256(_secret(full_key).encode()).hexdigest()
    other = keys.get(other_id)
    assert other is not None
    assert other.roles == {Role.MANAGER}  # the default
    assert keys.get("000000000000") is None
    assert [k.key_id for k in keys.list()] == [key_id, other_id]
    assert keys.any_active()

    keys.revoke(key_id)
    revoked = keys.get(key_id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    keys.revoke(key_id)  # revoking again keeps the first revocation time
    again = keys.get(key_id)
    assert again is not None
    assert again.revoked_at == revoked.revoked_at
    assert keys.any_active()
    keys.revoke(other_id)
    assert not keys.any_active()
    assert len(keys.list()) == 2

    with pytest.raises(NotFound) as missing:
        keys.revoke("000000000000")
    assert missing.value.reason == "API_KEY_NOT_FOUND"


def test_only_a_hash_of_the_key_is_stored(keys: ApiKeys, db: Db) -> None:
    created = [keys.create(MERCHANT_A, f"till-{i}") for i in range(3)]

    stored = db.table_text("api_keys")

    for key_id, full_key in created:
        assert key_id in stored
        assert full_key not in stored
        assert _secret(full_key) not in stored
        assert hashlib.sha256(_secret(full_key).encode()).hexdigest() in stored


def test_dev_mode_when_no_key_is_active_at_start_and_never_again(keys: ApiKeys) -> None:
    auth = Authenticator(keys, ttl=0)

    principal = auth.authenticate(None)

    assert auth.dev_mode_at_start
    assert principal.merchant_id == DEV_MERCHANT
    assert principal.roles == set(Role)
    assert principal.permissions == set(Permission)
    assert auth.authenticate("").merchant_id == DEV_MERCHANT

    key_id, _ = keys.create(MERCHANT_A, "till-1")
    time.sleep(0.001)  # ttl=0: the next call must look again
    with pytest.raises(Unauthenticated) as required:
        auth.authenticate(None)
    assert required.value.reason == "API_KEY_REQUIRED"

    # Revoking every key does not re-open development mode in a running server.
    keys.revoke(key_id)
    time.sleep(0.001)
    assert not keys.any_active()
    with pytest.raises(Unauthenticated) as still_required:
        auth.authenticate(None)
    assert still_required.value.reason == "API_KEY_REQUIRED"


def test_no_dev_mode_once_a_key_was_ever_created(keys: ApiKeys) -> None:
    key_id, _ = keys.create(MERCHANT_A, "till-1")
    keys.revoke(key_id)  # every key revoked, then a (re)start
    auth = Authenticator(keys, ttl=0)

    assert not auth.dev_mode_at_start
    with pytest.raises(Unauthenticated):
        auth.authenticate(None)


def test_no_dev_mode_unless_allowed(keys: ApiKeys) -> None:
    auth = Authenticator(keys, allow_dev_mode=False, ttl=0)

    with pytest.raises(Unauthenticated) as error:
        auth.authenticate(None)

    assert error.value.reason == "API_KEY_REQUIRED"


def test_a_valid_key_authenticates_its_merchant_app_and_role(keys: ApiKeys) -> None:
    key_id, full_key = keys.create(MERCHANT_A, "till-1", Role.AUDITOR)
    auth = Authenticator(keys, ttl=0)

    principal = auth.authenticate(f"Bearer {full_key}")

    assert principal.merchant_id == MERCHANT_A
    assert principal.app_id == "till-1"
    assert principal.key_id == key_id
    assert principal.roles == {Role.AUDITOR}
    assert Permission.AUDIT_READ in principal.permissions
    assert Permission.SALES_WRITE not in principal.permissions
    assert auth.authenticate(f"bearer {full_key}") == principal  # the scheme is case-blind


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-key",
        "Bearer plk_only-two",
        "Bearer xyz_{key_id}_{secret}",
        "{full_key}",
        "Bearer plk_{key_id}_wrong-secret",
        "Bearer plk_{key_id}_",
        "Bearer plk_000000000000_{secret}",
        "Bearer plk__{secret}",
    ],
)
def test_bad_credentials_are_unauthenticated(keys: ApiKeys, header: str) -> None:
    key_id, full_key = keys.create(MERCHANT_A, "till-1")
    auth = Authenticator(keys, ttl=0)
    value = header.format(key_id=key_id, secret=_secret(full_key), full_key=full_key)

    with pytest.raises(Unauthenticated) as error:
        auth.authenticate(value)

    assert error.value.reason == "API_KEY_INVALID"
    assert auth.authenticate(f"Bearer {full_key}").merchant_id == MERCHANT_A


def test_a_key_of_one_merchant_never_authenticates_as_another(keys: ApiKeys) -> None:
    a_id, a_key = keys.create(MERCHANT_A, "till-a")
    b_id, b_key = keys.create(MERCHANT_B, "till-b")
    auth = Authenticator(keys, ttl=0)

    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {KEY_PREFIX}_{a_id}_{_secret(b_key)}")
    assert auth.authenticate(f"Bearer {a_key}").merchant_id == MERCHANT_A
    assert auth.authenticate(f"Bearer {b_key}").merchant_id == MERCHANT_B
    assert b_id != a_id


def test_a_revoked_key_is_refused(keys: ApiKeys) -> None:
    key_id, full_key = keys.create(MERCHANT_A, "till-1")
    keys.create(MERCHANT_A, "till-2")  # another active key: no dev mode either
    auth = Authenticator(keys, ttl=0)
    assert auth.authenticate(f"Bearer {full_key}").key_id == key_id

    keys.revoke(key_id)
    time.sleep(0.001)

    with pytest.raises(Unauthenticated) as error:
        auth.authenticate(f"Bearer {full_key}")
    assert error.value.reason == "API_KEY_REVOKED"
    with pytest.raises(Unauthenticated) as anonymous:
        auth.authenticate(None)
    assert anonymous.value.reason == "API_KEY_REQUIRED"


def test_a_cached_lookup_expires_after_the_ttl(keys: ApiKeys) -> None:
    key_id, full_key = keys.create(MERCHANT_A, "till-1")
    auth = Authenticator(keys, ttl=0.3)
    assert auth.authenticate(f"Bearer {full_key}").key_id == key_id

    keys.revoke(key_id)
    assert auth.authenticate(f"Bearer {full_key}").key_id == key_id  # still cached
    time.sleep(0.35)

    with pytest.raises(Unauthenticated) as error:
        auth.authenticate(f"Bearer {full_key}")
    assert error.value.reason == "API_KEY_REVOKED"


def test_a_key_may_carry_several_roles(keys: ApiKeys) -> None:
    key_id, full_key = keys.create(MERCHANT_A, "till-1", [Role.CASHIER, Role.AUDITOR])
    auth = Authenticator(keys, ttl=0)

    principal = auth.authenticate(f"Bearer {full_key}")

    assert principal.roles == {Role.CASHIER, Role.AUDITOR}
    assert principal.permissions == ROLE_PERMISSIONS[Role.CASHIER] | ROLE_PERMISSIONS[Role.AUDITOR]
    stored = keys.get(key_id)
    assert stored is not None
    assert stored.roles == {Role.CASHIER, Role.AUDITOR}


def test_keys_of_the_single_role_table_keep_working(keys: ApiKeys, db: Db) -> None:
    """A table of the previous release (one `role` column) is brought up to date in place."""
    table = f'"{keys.datastore.schema}".api_keys'
    with keys.datastore.transaction(commit=True) as curs:
        curs.execute(f"DROP TABLE {table}")
        curs.execute(
            f"CREATE TABLE {table} (key_id text PRIMARY KEY, merchant_id text NOT NULL,"
            " app_id text NOT NULL, role text NOT NULL, secret_hash text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz)"
        )
        secret = "s3cret"
        curs.execute(
            f"INSERT INTO {table} (key_id, merchant_id, app_id, role, secret_hash)"
            " VALUES ('0123456789ab', %s, 'old-till', 'auditor', %s)",
            (MERCHANT_A, hashlib.sha256(secret.encode()).hexdigest()),
        )

    keys.create_table()
    keys.create_table()  # twice is harmless

    principal = Authenticator(keys, ttl=0).authenticate(f"Bearer plk_0123456789ab_{secret}")
    assert (principal.app_id, principal.roles) == ("old-till", frozenset({Role.AUDITOR}))
    keys.create(MERCHANT_A, "new-till", [Role.CASHIER, Role.MANAGER])
    assert "old-till" in db.table_text("api_keys")
    with keys.datastore.transaction() as curs:
        curs.execute(f"SELECT role, roles FROM {table} WHERE app_id = 'new-till'")
        row = curs.fetchone()
    assert row is not None
    assert (row["role"], row["roles"]) == ("cashier", ["cashier", "manager"])


def test_a_client_certificate_subject_acts_as_its_key(keys: ApiKeys) -> None:
    key_id, _ = keys.create(MERCHANT_A, "till-7", Role.CASHIER, client_subject="CN=till-7,O=Acme")
    auth = Authenticator(keys, ttl=0)

    principal = auth.authenticate(None, "CN=till-7,O=Acme")

    assert (principal.key_id, principal.merchant_id, principal.app_id) == (
        key_id,
        MERCHANT_A,
        "till-7",
    )
    with pytest.raises(Unauthenticated) as unknown:
        auth.authenticate(None, "CN=someone-else")
    assert unknown.value.reason == "API_KEY_REQUIRED"
    keys.revoke(key_id)
    time.sleep(0.001)
    with pytest.raises(Unauthenticated):
        auth.authenticate(None, "CN=till-7,O=Acme")
