"""The projections runner outlives a PostgreSQL restart and resumes exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.bootstrap import build_views
from ledger.store import Settings
from projections.registry import view_schema
from tests.faults.conftest import PrivateCluster
from tests.integration.conftest import open_sale

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def eventually(condition: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        time.sleep(0.05)


def test_runner_reconnects_after_a_restart_and_applies_each_event_once(
    cluster: PrivateCluster, fault_settings: Settings, fault_ledger: Ledger
) -> None:
    views = build_views(fault_ledger)
    views.ensure()
    before = [open_sale(fault_ledger) for _ in range(5)]
    with views.running():
        eventually(lambda: views.state.running, 10, "the runner is running")
        eventually(
            lambda: (
                views.live_schema("orders")[1] >= (fault_ledger.recorder.max_notification_id() or 0)
            ),
            20,
            "caught up",
        )
        cluster.stop()
        eventually(lambda: views.state.state == "reconnecting", 10, "the runner notices")
        cluster.start()
        eventually(lambda: views.state.running, 15, "the runner reconnects")
        after = [open_sale(fault_ledger) for _ in range(5)]
        head = fault_ledger.recorder.max_notification_id() or 0
        for name in views.views:
            assert views.wait_for(name, head, 20), name
        assert views.followed() == set(views.views)
    with psycopg.connect(fault_settings.database_url or "") as conn:
        schema = view_schema(fault_settings.schema, "orders", 1)
        rows = conn.execute(
            SQL("SELECT sale_id::text, count(*) FROM {} GROUP BY sale_id").format(
                Identifier(schema, "orders")
            )
        ).fetchall()
    assert {sale_id for sale_id, _ in rows} == {str(s.id) for s in before + after}
    assert all(n == 1 for _, n in rows)
