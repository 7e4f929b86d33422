"""Servers starting at the same time on a fresh schema all come up (advisory lock)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier as ProcessBarrier

import psycopg
from psycopg.sql import SQL

from ledger.application import Ledger
from ledger.domain import commands as c
from ledger.store import Settings
from tests.integration.conftest import MERCHANT_A, create_sale_cmd, ctx, race

TABLES = {"ledger_events", "processed_commands", "api_keys"}


def _tables(settings: Settings) -> set[str]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            SQL("SELECT table_name FROM information_schema.tables WHERE table_schema = %s"),
            (settings.schema,),
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_concurrent_open_on_a_fresh_schema_all_succeed(settings: Settings) -> None:
    """Without `schema_lock`, this fails nearly every time (duplicate pg_type entries)."""
    assert _tables(settings) == set()
    small = Settings(database_url=settings.database_url, schema=settings.schema, pool_size=1)

    outcomes = race(*[lambda: Ledger.open(small) for _ in range(6)])

    ledgers = [o for o in outcomes if isinstance(o, Ledger)]
    try:
        assert [o for o in outcomes if not isinstance(o, Ledger)] == []
        assert _tables(settings) >= TABLES
        # Every one of them works, and they share one store.
        created = ledgers[0].create_sale(ctx(), create_sale_cmd())
        for other in ledgers[1:]:
            assert other.get_sale(MERCHANT_A, str(created.sale.id)).version == 1
        line = c.LineItemInput(sku="X-1", name="x", quantity=1, unit_price=1)
        ledgers[-1].add_line_item(ctx(), c.AddLineItem(str(created.sale.id), line))
        assert ledgers[0].get_sale(MERCHANT_A, str(created.sale.id)).version == 2
    finally:
        for ledger in ledgers:
            ledger.close()


def test_opening_an_existing_schema_again_keeps_its_data(settings: Settings) -> None:
    first = Ledger.open(settings)
    try:
        sale_id = str(first.create_sale(ctx(), create_sale_cmd()).sale.id)
        key_id, _ = first.api_keys.create(MERCHANT_A, "till-1")
    finally:
        first.close()

    second = Ledger.open(settings)
    try:
        assert second.get_sale(MERCHANT_A, sale_id).version == 1
        assert second.api_keys.get(key_id) is not None
    finally:
        second.close()


def _open_in_process(url: str, schema: str, barrier: ProcessBarrier) -> None:
    barrier.wait()
    Ledger.open(Settings(database_url=url, schema=schema, pool_size=1)).close()


def test_concurrent_open_from_several_processes(settings: Settings) -> None:
    assert settings.database_url is not None
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(3)
    processes = [
        spawn.Process(
            target=_open_in_process, args=(settings.database_url, settings.schema, barrier)
        )
        for _ in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert _tables(settings) >= TABLES
