"""The recorder under failure: a failed write must leave its pooled connection usable."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from eventsourcing.postgres import PostgresDatastore
from psycopg.conninfo import conninfo_to_dict
from psycopg.sql import SQL, Identifier

from ledger.application import Context, Ledger
from ledger.domain import commands as c
from ledger.domain.errors import RequestIdReused
from ledger.store import Settings, bound_pool
from tests.integration.conftest import MERCHANT_A, create_sale_cmd, ctx, new_request_id


@pytest.mark.parametrize("writes_before", [4, 5])
def test_a_lock_timeout_does_not_poison_the_connection(
    settings: Settings, writes_before: int
) -> None:
    """psycopg prepares a statement on its 5th or 6th run. When that run's transaction
    fails before the statement (here: the events table lock times out), the server never
    prepares it; if psycopg still thought it had, every later write on that connection
    would fail with `prepared statement "_pg3_N" does not exist`."""
    assert settings.database_url is not None
    one_connection = Settings(
        database_url=settings.database_url,
        schema=settings.schema,
        pool_size=1,
        lock_timeout_seconds=1,
    )
    ledger = Ledger.open(one_connection)
    try:
        for _ in range(writes_before):
            ledger.create_sale(ctx(), create_sale_cmd())
        with psycopg.connect(settings.database_url) as holder:
            holder.execute(
                SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
                    Identifier(settings.schema, "ledger_events")
                )
            )
            release = threading.Timer(1.1, holder.commit)
            release.start()
            try:
                # The first attempt times out on the lock; the library retries it.
                locked = ledger.create_sale(ctx(), create_sale_cmd())
            finally:
                release.join()
        assert locked.sale.version == 1

        for _ in range(6):
            ledger.create_sale(ctx(), create_sale_cmd())

        assert ledger.recorder.max_notification_id() is not None
        assert len(ledger.recorder.select_notifications(start=None, limit=100)) == (
            writes_before + 7
        )
    finally:
        ledger.close()


def test_a_command_waits_for_an_in_flight_record_of_its_request_id(
    ledger: Ledger, settings: Settings
) -> None:
    """A request whose id another transaction is recording waits for it: if that commits,
    its record answers (here: another request, so the id is reused); nothing hangs."""
    assert settings.database_url is not None
    request_id = new_request_id()
    other_sale = ledger.create_sale(ctx(), create_sale_cmd()).sale
    with psycopg.connect(settings.database_url) as twin:
        twin.execute(
            SQL(
                "INSERT INTO {} (merchant_id, request_id, command, fingerprint, aggregate_id,"
                " aggregate_version, result) VALUES (%s, %s, 'CancelSale', 'other', %s, 1, %s)"
            ).format(Identifier(settings.schema, "processed_commands")),
            (MERCHANT_A, request_id, other_sale.id, '{"ids": {}, "aggregates": []}'),
        )
        commit = threading.Timer(0.3, twin.commit)
        commit.start()
        try:
            with pytest.raises(RequestIdReused):
                ledger.create_sale(Context(MERCHANT_A, request_id), create_sale_cmd())
        finally:
            commit.join()

    # Nothing of the refused request was written, and the connection still works.
    assert len(ledger.recorder.select_notifications(start=None, limit=100)) == 1
    created = ledger.create_sale(ctx(), create_sale_cmd())
    assert created.sale.version == 1


def test_a_command_proceeds_when_the_in_flight_record_rolls_back(
    ledger: Ledger, settings: Settings
) -> None:
    assert settings.database_url is not None
    request_id = new_request_id()
    with psycopg.connect(settings.database_url) as twin:
        twin.execute(
            SQL(
                "INSERT INTO {} (merchant_id, request_id, command, fingerprint, aggregate_id,"
                " aggregate_version, result) VALUES (%s, %s, 'CreateSale', 'x', %s, 1, %s)"
            ).format(Identifier(settings.schema, "processed_commands")),
            (MERCHANT_A, request_id, uuid.uuid4(), "{}"),
        )
        rollback = threading.Timer(0.3, twin.rollback)
        rollback.start()
        try:
            created = ledger.create_sale(Context(MERCHANT_A, request_id), create_sale_cmd())
        finally:
            rollback.join()

    assert not created.replayed
    again = ledger.create_sale(Context(MERCHANT_A, request_id), create_sale_cmd())
    assert again.replayed
    assert again.sale.id == created.sale.id
    line = c.LineItemInput(sku="X-1", name="x", quantity=1, unit_price=1)
    assert ledger.add_line_item(ctx(), c.AddLineItem(str(created.sale.id), line)).sale.version == 2


def test_the_bounded_pool_closes_the_pool_it_replaces(settings: Settings) -> None:
    """The library's recorder opens its own pool (to register its types) before the ledger
    swaps in its bounded one. Left open, that pool's threads outlived the swap, and the
    collector later finalised it on one of its own threads ("cannot join current thread")."""
    assert settings.database_url is not None
    url = conninfo_to_dict(settings.database_url)
    datastore = PostgresDatastore(
        dbname=str(url["dbname"]),
        host=str(url.get("host", "127.0.0.1")),
        port=str(url.get("port", 5432)),
        user=str(url.get("user", "root")),
        password=str(url.get("password", "")),
    )
    with datastore.get_connection() as connection:  # opens the library's pool, as it does
        connection.execute("SELECT 1")
    replaced = datastore.pool
    assert not replaced.closed
    bound_pool(datastore, settings)
    try:
        assert replaced.closed
        assert datastore.pool is not replaced
    finally:
        datastore.pool.close()
