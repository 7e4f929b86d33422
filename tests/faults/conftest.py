"""A private PostgreSQL cluster that the fault tests may stop, restart and pause.

Never the shared server of the machine: each test module gets its own cluster from the
`pgserver` wheel (which runs it as an unprivileged user when the tests run as root),
listening on a Unix socket in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pgserver
import psutil
import psycopg
import pytest
from pgserver._commands import POSTGRES_BIN_PATH

from ledger.application import Ledger
from ledger.bootstrap import open_ledger
from ledger.store import Settings

READY_TIMEOUT = 30.0


class PrivateCluster:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.server = pgserver.get_server(pgdata, cleanup_mode="stop")
        self.url = self.server.get_uri()

    def _postmaster(self) -> psutil.Process:
        pid = self.server.get_pid()
        assert pid is not None
        return psutil.Process(pid)

    def stop(self) -> None:
        """Stops at once, as a crash would (no checkpoint, every session cut)."""
        subprocess.run(
            [POSTGRES_BIN_PATH / "pg_ctl", "-D", self.pgdata, "-w", "-m", "immediate", "stop"],
            user=self.server.system_user,
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()
        self.wait_ready()

    def pause(self) -> None:
        """Every PostgreSQL process stops dead: connections stay open, nothing answers."""
        for process in [self._postmaster(), *self._postmaster().children(recursive=True)]:
            os.kill(process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        for process in [self._postmaster(), *self._postmaster().children(recursive=True)]:
            os.kill(process.pid, signal.SIGCONT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    # Not under pytest's tmp_path: other pytest runs of the same user prune old ones, and
    # would delete the data directory of a running cluster.
    pgdata = Path(tempfile.mkdtemp(prefix="posledger-fault-pg-"))
    cluster = PrivateCluster(pgdata)
    yield cluster
    with contextlib.suppress(AssertionError, psutil.Error, ProcessLookupError):
        cluster.resume()
    cluster.server.cleanup()
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def fault_settings(cluster: PrivateCluster) -> Settings:
    cluster.start()  # a test before may have left it stopped
    return Settings(database_url=cluster.url, schema=f"fault_{uuid.uuid4().hex[:12]}", pool_size=4)


@pytest.fixture
def fault_ledger(fault_settings: Settings) -> Iterator[Ledger]:
    ledger = open_ledger(fault_settings)
    yield ledger
    ledger.close()
