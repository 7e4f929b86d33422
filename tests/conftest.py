"""PostgreSQL for the tests.

`POSLEDGER_TEST_DATABASE_URL` names a server to use (CI sets it to the machine's own).
Without it, a private PostgreSQL is started from the `pgserver` wheel for the session, so
the suite runs on a fresh machine with nothing but the README's install step. In CI
(`CI` set) a missing URL or an unreachable server fails the run loudly; nothing skips.

Every test that needs the database gets its own schema, dropped afterwards, so tests never
see each other's events and can run in parallel.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.bootstrap import open_ledger
from ledger.store import Settings, embedded_database_url


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("POSLEDGER_TEST_DATABASE_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail(
                "CI must set POSLEDGER_TEST_DATABASE_URL to a running PostgreSQL", pytrace=False
            )
        data_dir = Path(tempfile.gettempdir()) / f"posledger-test-pg-{os.getuid()}"
        url = embedded_database_url(data_dir)
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        pytest.fail(f"PostgreSQL at {url} is not reachable: {e}", pytrace=False)
    return url


@pytest.fixture
def settings(database_url: str) -> Iterator[Settings]:
    """Settings pointing at a fresh schema of the test database."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    yield Settings(database_url=database_url, schema=schema, pool_size=4)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # The test's schema and the view generations beside it (`<schema>__<view>_<n>`).
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
            (schema, schema + r"\_\_%"),
        ).fetchall()
        for (name,) in names:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(name)))


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    app = open_ledger(settings)
    yield app
    app.close()
