"""The catalog against the real event store: unique skus, partial updates, tenancy, retries."""

from __future__ import annotations

from functools import partial

import pytest

from ledger.application import Context, Ledger
from ledger.domain import product as d
from ledger.domain.errors import (
    AlreadyExists,
    InvalidRequest,
    NotFound,
    RequestIdReused,
    RuleViolated,
    VersionConflict,
)
from ledger.domain.product import Product, product_id
from tests.integration.catalog_support import create_product, topic_count
from tests.integration.conftest import (
    MERCHANT_A,
    MERCHANT_B,
    Db,
    ctx,
    failures,
    race,
    successes,
)

MUG = d.CreateProduct(
    sku="MUG-1",
    name="Mug",
    price=1200,
    currency_code="USD",
    tax_rate_ppm=80_000,
    barcode="4006381333931",
    category="kitchen",
)


def test_created_product_is_found_by_id_and_by_sku(ledger: Ledger, db: Db) -> None:
    outcome = ledger.create_product(ctx(), MUG)

    product = outcome.aggregate
    assert isinstance(product, Product)
    assert not outcome.replayed
    assert product.id == product_id(MERCHANT_A, "MUG-1")
    for found in (
        ledger.get_product(MERCHANT_A, str(product.id)),
        ledger.get_product_by_sku(MERCHANT_A, "MUG-1"),
    ):
        assert (found.id, found.sku, found.name, found.price) == (product.id, "MUG-1", "Mug", 1200)
        assert (found.currency_code, found.tax_rate_ppm) == ("USD", 80_000)
        assert (found.barcode, found.category) == ("4006381333931", "kitchen")
        assert not found.is_discontinued
    assert db.topics(product.id) == ["posledger.ProductCreated"]
    assert db.command_count() == 1


def test_a_taken_sku_is_already_exists_and_writes_nothing(ledger: Ledger, db: Db) -> None:
    ledger.create_product(ctx(), MUG)
    before = (db.event_count(), db.command_count())

    with pytest.raises(AlreadyExists) as error:
        ledger.create_product(ctx(), d.CreateProduct("MUG-1", "Other mug", 5, "EUR"))

    assert error.value.reason == "SKU_TAKEN"
    assert (db.event_count(), db.command_count()) == before
    assert ledger.get_product_by_sku(MERCHANT_A, "MUG-1").name == "Mug"


def test_skus_are_unique_per_merchant_only(ledger: Ledger, db: Db) -> None:
    a = ledger.create_product(ctx(MERCHANT_A), MUG).aggregate
    b = ledger.create_product(ctx(MERCHANT_B), MUG).aggregate

    assert a.id != b.id
    assert ledger.get_product_by_sku(MERCHANT_B, "MUG-1").id == b.id
    assert topic_count(db, "posledger.ProductCreated") == 2


def test_racing_creations_of_one_sku_exactly_one_wins(ledger: Ledger, db: Db) -> None:
    for n in range(5):
        sku = f"RACE-{n}"
        first = d.CreateProduct(sku, "First", 100, "USD")
        second = d.CreateProduct(sku, "Second", 200, "USD")

        outcomes = race(
            partial(ledger.create_product, ctx(), first),
            partial(ledger.create_product, ctx(), second),
        )

        (won,) = successes(outcomes)
        (lost,) = failures(outcomes)
        assert isinstance(lost, AlreadyExists), lost
        assert lost.reason == "SKU_TAKEN"
        key = product_id(MERCHANT_A, sku)
        assert db.topics(key) == ["posledger.ProductCreated"]
        assert ledger.get_product_by_sku(MERCHANT_A, sku).name == won.aggregate.name
    assert db.command_count() == 5


def test_update_changes_only_the_masked_fields(ledger: Ledger, db: Db) -> None:
    product = create_product(ledger, barcode="123", category="kitchen")
    cmd = d.UpdateProduct(
        str(product.id), (("price", 1500), ("category", ""), ("name", product.name))
    )

    updated = ledger.update_product(ctx(), cmd).aggregate

    assert (updated.price, updated.category, updated.barcode) == (1500, "", "123")
    assert updated.version == 2
    (row,) = [r for r in db.events(product.id) if r.topic == "posledger.ProductUpdated"]
    assert row.state["changes"] == {"price": 1500, "category": ""}
    stored = ledger.get_product(MERCHANT_A, str(product.id))
    assert (stored.price, stored.category, stored.barcode, stored.sku) == (1500, "", "123", "MUG-1")


def test_update_that_changes_nothing_writes_no_event_but_is_answered_again(
    ledger: Ledger, db: Db
) -> None:
    product = create_product(ledger)
    context = ctx()
    cmd = d.UpdateProduct(str(product.id), (("price", product.price),))

    first = ledger.update_product(context, cmd)
    again = ledger.update_product(context, cmd)

    assert first.aggregate.version == 1
    assert again.replayed
    assert again.aggregate.version == 1
    assert db.topics(product.id) == ["posledger.ProductCreated"]


def test_stale_expected_version_is_a_conflict(ledger: Ledger, db: Db) -> None:
    product = create_product(ledger)
    pid = str(product.id)
    ledger.update_product(ctx(), d.UpdateProduct(pid, (("price", 1300),)))  # now version 2
    before = (db.event_count(), db.command_count())
    stale = Context(MERCHANT_A, ctx().request_id, expected_version=1)

    with pytest.raises(VersionConflict):
        ledger.update_product(stale, d.UpdateProduct(pid, (("price", 1400),)))
    with pytest.raises(VersionConflict):
        ledger.discontinue_product(stale, d.DiscontinueProduct(pid))

    assert (db.event_count(), db.command_count()) == before
    current = Context(MERCHANT_A, ctx().request_id, expected_version=2)
    assert (
        ledger.update_product(current, d.UpdateProduct(pid, (("price", 1400),))).aggregate.price
        == 1400
    )


def test_racing_updates_with_one_expected_version_one_wins(ledger: Ledger, db: Db) -> None:
    for n in range(3):
        product = create_product(ledger, sku=f"SKU-{n}")
        pid = str(product.id)

        outcomes = race(
            partial(
                ledger.update_product,
                Context(MERCHANT_A, ctx().request_id, expected_version=1),
                d.UpdateProduct(pid, (("price", 1),)),
            ),
            partial(
                ledger.update_product,
                Context(MERCHANT_A, ctx().request_id, expected_version=1),
                d.UpdateProduct(pid, (("price", 2),)),
            ),
        )

        (won,) = successes(outcomes)
        (lost,) = failures(outcomes)
        assert isinstance(lost, VersionConflict), lost
        assert won.aggregate.version == 2
        assert db.topics(product.id) == ["posledger.ProductCreated", "posledger.ProductUpdated"]
        assert ledger.get_product(MERCHANT_A, pid).price == won.aggregate.price


def test_discontinued_product_refuses_updates(ledger: Ledger, db: Db) -> None:
    product = create_product(ledger)
    pid = str(product.id)

    done = ledger.discontinue_product(ctx(), d.DiscontinueProduct(pid, "end of line")).aggregate
    again = ledger.discontinue_product(ctx(), d.DiscontinueProduct(pid, "twice"))

    assert done.is_discontinued
    assert done.discontinue_reason == "end of line"
    assert again.aggregate.version == 2  # a second discontinuation records nothing
    with pytest.raises(RuleViolated) as error:
        ledger.update_product(ctx(), d.UpdateProduct(pid, (("price", 1),)))
    assert error.value.reason == "PRODUCT_DISCONTINUED"
    assert db.topics(product.id) == ["posledger.ProductCreated", "posledger.ProductDiscontinued"]
    stored = ledger.get_product_by_sku(MERCHANT_A, "MUG-1")
    assert stored.is_discontinued
    assert stored.price == product.price
    # Its sku stays taken: a discontinued product is never replaced by a new one.
    with pytest.raises(AlreadyExists):
        create_product(ledger)


def test_retries_are_answered_from_the_record_and_write_nothing(ledger: Ledger, db: Db) -> None:
    create, update, discontinue = ctx(), ctx(), ctx()
    created = ledger.create_product(create, MUG)
    pid = str(created.aggregate.id)
    updated = ledger.update_product(update, d.UpdateProduct(pid, (("name", "Big mug"),)))
    ended = ledger.discontinue_product(discontinue, d.DiscontinueProduct(pid, "gone"))
    before = (db.event_count(), db.command_count())
    assert before == (3, 3)

    again = [
        ledger.create_product(create, MUG),
        ledger.update_product(update, d.UpdateProduct(pid, (("name", "Big mug"),))),
        ledger.discontinue_product(discontinue, d.DiscontinueProduct(pid, "gone")),
    ]

    assert all(o.replayed for o in again)
    assert [o.aggregate.version for o in again] == [1, 2, 3]
    assert again[0].aggregate.name == "Mug"  # as the original answer, not as it is now
    assert again[1].aggregate.name == "Big mug"
    assert not again[1].aggregate.is_discontinued
    assert again[2].aggregate.is_discontinued
    assert [o.aggregate.version for o in (created, updated, ended)] == [1, 2, 3]
    assert (db.event_count(), db.command_count()) == before


def test_reused_request_id_for_another_request_is_refused(ledger: Ledger, db: Db) -> None:
    context = ctx()
    product = ledger.create_product(context, MUG).aggregate
    before = (db.event_count(), db.command_count())

    with pytest.raises(RequestIdReused):
        ledger.create_product(context, d.CreateProduct("MUG-2", "Mug", 1200, "USD"))
    with pytest.raises(RequestIdReused):
        ledger.update_product(context, d.UpdateProduct(str(product.id), (("price", 1),)))

    assert (db.event_count(), db.command_count()) == before


def test_another_merchants_product_looks_missing(ledger: Ledger, db: Db) -> None:
    product = create_product(ledger, MERCHANT_A)
    pid = str(product.id)
    before = (db.event_count(), db.command_count())

    for lookup in (
        partial(ledger.get_product, MERCHANT_B, pid),
        partial(ledger.get_product_by_sku, MERCHANT_B, "MUG-1"),
        partial(ledger.update_product, ctx(MERCHANT_B), d.UpdateProduct(pid, (("price", 1),))),
        partial(ledger.discontinue_product, ctx(MERCHANT_B), d.DiscontinueProduct(pid)),
    ):
        with pytest.raises(NotFound) as error:
            lookup()
        assert error.value.reason == "PRODUCT_NOT_FOUND"

    # Exactly like an id nobody has.
    with pytest.raises(NotFound) as missing:
        ledger.get_product(MERCHANT_B, "00000000-0000-4000-8000-000000000000")
    assert missing.value.reason == "PRODUCT_NOT_FOUND"
    assert (db.event_count(), db.command_count()) == before
    assert ledger.get_product(MERCHANT_A, pid).price == product.price


def test_malformed_lookups_are_invalid_requests(ledger: Ledger) -> None:
    with pytest.raises(InvalidRequest) as by_id:
        ledger.get_product(MERCHANT_A, "not-a-uuid")
    with pytest.raises(InvalidRequest) as by_sku:
        ledger.get_product_by_sku(MERCHANT_A, "bad sku")
    assert [v.field for v in by_id.value.violations] == ["product_id"]
    assert [v.field for v in by_sku.value.violations] == ["sku"]


def test_invalid_product_commands_write_nothing(ledger: Ledger, db: Db) -> None:
    product = create_product(ledger)
    before = (db.event_count(), db.command_count())

    with pytest.raises(InvalidRequest) as created:
        ledger.create_product(ctx(), d.CreateProduct("", "", -1, "usd", tax_rate_ppm=-1))
    with pytest.raises(InvalidRequest) as updated:
        ledger.update_product(ctx(), d.UpdateProduct(str(product.id), (("sku", "X"),)))

    assert [v.field for v in created.value.violations] == [
        "sku",
        "name",
        "price",
        "currency_code",
        "tax_rate_ppm",
    ]
    assert [v.field for v in updated.value.violations] == ["update_mask"]
    assert (db.event_count(), db.command_count()) == before
