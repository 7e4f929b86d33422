"""Customers against the real event store: external ids unique per channel, consent history."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest

from ledger.application import Context, Ledger
from ledger.domain import customer as d
from ledger.domain.commands import Channel
from ledger.domain.customer import Customer, ExternalId, ExternalIdClaim, external_id_claim_id
from ledger.domain.errors import AlreadyExists, InvalidRequest, NotFound, VersionConflict
from tests.integration.catalog_support import topic_count
from tests.integration.conftest import (
    MERCHANT_A,
    MERCHANT_B,
    Db,
    failures,
    new_request_id,
    race,
    successes,
)

SHOPIFY_1 = ExternalId("shopify", "cust-1")
SHOPIFY_2 = ExternalId("shopify", "cust-2")
AMAZON_1 = ExternalId("amazon", "cust-1")
ALICE = d.CreateCustomer(
    name="Alice Example",
    email="alice@example.com",
    phone="+4915112345678",
    tags=("vip",),
    external_ids=(SHOPIFY_1,),
)


def app_ctx(
    merchant_id: str = MERCHANT_A, app_id: str = "crm-app", key_id: str = "key-1"
) -> Context:
    return Context(merchant_id, new_request_id(), app_id=app_id, key_id=key_id)


def create(
    ledger: Ledger, cmd: d.CreateCustomer = ALICE, merchant_id: str = MERCHANT_A
) -> Customer:
    customer = ledger.create_customer(app_ctx(merchant_id), cmd).aggregate
    assert isinstance(customer, Customer)
    return customer


def claim_holder(ledger: Ledger, external: ExternalId, merchant_id: str = MERCHANT_A) -> str:
    claim: object = ledger.repository.get(external_id_claim_id(merchant_id, external))
    assert isinstance(claim, ExternalIdClaim)
    return claim.customer_id


def test_created_customer_is_stored_with_its_claims(ledger: Ledger, db: Db) -> None:
    customer = create(ledger, replace(ALICE, external_ids=(SHOPIFY_1, AMAZON_1)))

    found = ledger.get_customer(MERCHANT_A, str(customer.id))
    assert (found.name, found.email, found.phone) == (
        "Alice Example",
        "alice@example.com",
        "+4915112345678",
    )
    assert found.tags == ["vip"]
    assert found.external_ids == [SHOPIFY_1, AMAZON_1]
    assert not found.marketing_consent
    assert db.topics(customer.id) == ["posledger.CustomerCreated"]
    assert claim_holder(ledger, SHOPIFY_1) == str(customer.id)
    assert claim_holder(ledger, AMAZON_1) == str(customer.id)
    assert topic_count(db, "posledger.ExternalIdClaimed") == 2
    assert db.command_count() == 1


def test_consent_is_recorded_with_who_when_and_which_channel(ledger: Ledger, db: Db) -> None:
    cmd = replace(ALICE, marketing_consent=True, consent_channel=Channel.IN_STORE)

    customer = ledger.create_customer(app_ctx(app_id="pos-app", key_id="key-7"), cmd).aggregate

    created, consent = db.events(customer.id)
    assert created.topic == "posledger.CustomerCreated"
    assert "marketing_consent" not in created.state
    assert consent.topic == "posledger.CustomerMarketingConsentChanged"
    assert consent.state["marketing_consent"] is True
    assert consent.state["channel"] == "in_store"
    assert (consent.state["app_id"], consent.state["key_id"]) == ("pos-app", "key-7")
    found = ledger.get_customer(MERCHANT_A, str(customer.id))
    assert found.marketing_consent
    assert found.consent_channel == "in_store"
    assert found.consent_changed_at is not None
    assert found.consent_changed_at == customer.consent_changed_at

    # Withdrawn later, by another app, through another channel, together with a profile edit.
    update = d.UpdateCustomer(
        str(customer.id),
        (("marketing_consent", False), ("email", "alice@new.example")),
        consent_channel=Channel.ONLINE,
    )
    ledger.update_customer(app_ctx(app_id="web-app", key_id="key-9"), update)

    topics = db.topics(customer.id)
    assert topics == [
        "posledger.CustomerCreated",
        "posledger.CustomerMarketingConsentChanged",
        "posledger.CustomerUpdated",
        "posledger.CustomerMarketingConsentChanged",
    ]
    updated, withdrawn = db.events(customer.id)[2:]
    assert updated.state["changes"] == {"email": "alice@new.example"}
    assert (withdrawn.state["marketing_consent"], withdrawn.state["channel"]) == (False, "online")
    assert (withdrawn.state["app_id"], withdrawn.state["key_id"]) == ("web-app", "key-9")
    found = ledger.get_customer(MERCHANT_A, str(customer.id))
    assert not found.marketing_consent
    assert found.consent_channel == "online"
    assert found.consent_changed_at > customer.consent_changed_at


def test_duplicate_email_is_allowed(ledger: Ledger) -> None:
    first = create(ledger, replace(ALICE, external_ids=()))
    second = create(ledger, replace(ALICE, name="Alice Other", external_ids=()))

    assert first.id != second.id
    assert ledger.get_customer(MERCHANT_A, str(second.id)).email == "alice@example.com"


def test_an_external_id_taken_on_the_channel_is_already_exists(ledger: Ledger, db: Db) -> None:
    holder = create(ledger)
    before = (db.event_count(), db.command_count())

    with pytest.raises(AlreadyExists) as error:
        create(ledger, d.CreateCustomer(name="Bob", external_ids=(AMAZON_1, SHOPIFY_1)))

    assert error.value.reason == "EXTERNAL_ID_TAKEN"
    assert "alice" not in error.value.message.lower()
    # Nothing of Bob was stored, not even his claim on the free amazon id.
    assert (db.event_count(), db.command_count()) == before
    assert claim_holder(ledger, SHOPIFY_1) == str(holder.id)
    # The same id on another channel, or at another merchant, is someone else's.
    create(ledger, d.CreateCustomer(name="Bob", external_ids=(AMAZON_1,)))
    create(ledger, d.CreateCustomer(name="Bob", external_ids=(SHOPIFY_1,)), MERCHANT_B)


def test_racing_creations_with_one_external_id_exactly_one_wins(ledger: Ledger, db: Db) -> None:
    for n in range(5):
        external = ExternalId("shopify", f"race-{n}")
        cmds = [d.CreateCustomer(name=name, external_ids=(external,)) for name in ("A", "B")]

        outcomes = race(*[partial(ledger.create_customer, app_ctx(), cmd) for cmd in cmds])

        (won,) = successes(outcomes)
        (lost,) = failures(outcomes)
        assert isinstance(lost, AlreadyExists), lost
        assert lost.reason == "EXTERNAL_ID_TAKEN"
        assert claim_holder(ledger, external) == str(won.aggregate.id)
        assert db.topics(external_id_claim_id(MERCHANT_A, external)) == [
            "posledger.ExternalIdClaimed"
        ]
    assert topic_count(db, "posledger.CustomerCreated") == 5
    assert db.command_count() == 5


def test_moving_an_external_id_releases_the_old_one(ledger: Ledger, db: Db) -> None:
    alice = create(ledger)
    move = d.UpdateCustomer(str(alice.id), (("external_ids", (SHOPIFY_2,)),))

    ledger.update_customer(app_ctx(), move)

    assert ledger.get_customer(MERCHANT_A, str(alice.id)).external_ids == [SHOPIFY_2]
    assert claim_holder(ledger, SHOPIFY_1) == ""
    assert claim_holder(ledger, SHOPIFY_2) == str(alice.id)
    assert db.topics(external_id_claim_id(MERCHANT_A, SHOPIFY_1)) == [
        "posledger.ExternalIdClaimed",
        "posledger.ExternalIdReassigned",
    ]
    # Another customer may now take the released id, but not the one Alice holds.
    bob = create(ledger, d.CreateCustomer(name="Bob", external_ids=(SHOPIFY_1,)))
    assert claim_holder(ledger, SHOPIFY_1) == str(bob.id)
    with pytest.raises(AlreadyExists) as error:
        create(ledger, d.CreateCustomer(name="Carol", external_ids=(SHOPIFY_2,)))
    assert error.value.reason == "EXTERNAL_ID_TAKEN"
    with pytest.raises(AlreadyExists):
        ledger.update_customer(
            app_ctx(), d.UpdateCustomer(str(bob.id), (("external_ids", (SHOPIFY_1, SHOPIFY_2)),))
        )
    assert ledger.get_customer(MERCHANT_A, str(bob.id)).external_ids == [SHOPIFY_1]
    # Alice gives up all her ids: Bob may take the one she had.
    ledger.update_customer(app_ctx(), d.UpdateCustomer(str(alice.id), (("external_ids", ()),)))
    ledger.update_customer(
        app_ctx(), d.UpdateCustomer(str(bob.id), (("external_ids", (SHOPIFY_1, SHOPIFY_2)),))
    )
    assert claim_holder(ledger, SHOPIFY_2) == str(bob.id)


def test_racing_updates_for_one_free_external_id_exactly_one_wins(ledger: Ledger) -> None:
    alice = create(ledger, replace(ALICE, external_ids=()))
    bob = create(ledger, d.CreateCustomer(name="Bob"))
    ledger.update_customer(
        app_ctx(), d.UpdateCustomer(str(alice.id), (("external_ids", (SHOPIFY_1,)),))
    )
    ledger.update_customer(app_ctx(), d.UpdateCustomer(str(alice.id), (("external_ids", ()),)))
    assert claim_holder(ledger, SHOPIFY_1) == ""

    outcomes = race(
        *[
            partial(
                ledger.update_customer,
                app_ctx(),
                d.UpdateCustomer(str(c.id), (("external_ids", (SHOPIFY_1,)),)),
            )
            for c in (alice, bob)
        ]
    )

    (won,) = successes(outcomes)
    (lost,) = failures(outcomes)
    assert isinstance(lost, AlreadyExists), lost
    assert claim_holder(ledger, SHOPIFY_1) == str(won.aggregate.id)
    holders = [
        c.id
        for c in (alice, bob)
        if ledger.get_customer(MERCHANT_A, str(c.id)).external_ids == [SHOPIFY_1]
    ]
    assert holders == [won.aggregate.id]


def test_update_changes_only_the_masked_fields(ledger: Ledger, db: Db) -> None:
    customer = create(ledger)

    ledger.update_customer(
        app_ctx(),
        d.UpdateCustomer(str(customer.id), (("tags", ("vip", "wholesale")), ("phone", ""))),
    )

    found = ledger.get_customer(MERCHANT_A, str(customer.id))
    assert (found.name, found.email, found.phone) == ("Alice Example", "alice@example.com", "")
    assert found.tags == ["vip", "wholesale"]
    assert found.external_ids == [SHOPIFY_1]
    (row,) = [r for r in db.events(customer.id) if r.topic == "posledger.CustomerUpdated"]
    assert row.state["changes"] == {"tags": ["vip", "wholesale"], "phone": ""}


def test_retries_are_answered_from_the_record_and_write_nothing(ledger: Ledger, db: Db) -> None:
    create_ctx, update_ctx = app_ctx(), app_ctx()
    created = ledger.create_customer(create_ctx, ALICE)
    cid = str(created.aggregate.id)
    update = d.UpdateCustomer(cid, (("external_ids", (SHOPIFY_2,)), ("name", "Alice B")))
    ledger.update_customer(update_ctx, update)
    before = (db.event_count(), db.command_count())

    created_again = ledger.create_customer(create_ctx, ALICE)
    updated_again = ledger.update_customer(update_ctx, update)

    assert created_again.replayed
    assert updated_again.replayed
    assert created_again.aggregate.id == created.aggregate.id  # not a second customer
    assert created_again.aggregate.name == "Alice Example"
    assert updated_again.aggregate.name == "Alice B"
    assert (db.event_count(), db.command_count()) == before
    assert topic_count(db, "posledger.CustomerCreated") == 1


def test_stale_expected_version_is_a_conflict(ledger: Ledger, db: Db) -> None:
    customer = create(ledger)
    cid = str(customer.id)
    ledger.update_customer(app_ctx(), d.UpdateCustomer(cid, (("name", "A"),)))  # version 2
    before = (db.event_count(), db.command_count())

    stale = Context(MERCHANT_A, new_request_id(), expected_version=1)
    with pytest.raises(VersionConflict):
        ledger.update_customer(stale, d.UpdateCustomer(cid, (("external_ids", (SHOPIFY_2,)),)))

    assert (db.event_count(), db.command_count()) == before
    assert claim_holder(ledger, SHOPIFY_1) == cid
    current = Context(MERCHANT_A, new_request_id(), expected_version=2)
    ledger.update_customer(current, d.UpdateCustomer(cid, (("external_ids", (SHOPIFY_2,)),)))
    assert claim_holder(ledger, SHOPIFY_2) == cid


def test_another_merchants_customer_looks_missing(ledger: Ledger, db: Db) -> None:
    customer = create(ledger, merchant_id=MERCHANT_A)
    cid = str(customer.id)
    before = (db.event_count(), db.command_count())

    with pytest.raises(NotFound) as got:
        ledger.get_customer(MERCHANT_B, cid)
    with pytest.raises(NotFound) as updated:
        ledger.update_customer(app_ctx(MERCHANT_B), d.UpdateCustomer(cid, (("name", "Mallory"),)))
    with pytest.raises(NotFound) as missing:
        ledger.get_customer(MERCHANT_B, "00000000-0000-4000-8000-000000000000")

    assert got.value.reason == updated.value.reason == missing.value.reason == "CUSTOMER_NOT_FOUND"
    assert (db.event_count(), db.command_count()) == before
    assert ledger.get_customer(MERCHANT_A, cid).name == "Alice Example"
    # The other merchant's claim on the same external id is its own.
    other = create(ledger, ALICE, MERCHANT_B)
    assert claim_holder(ledger, SHOPIFY_1, MERCHANT_B) == str(other.id)
    assert claim_holder(ledger, SHOPIFY_1, MERCHANT_A) == cid


def test_invalid_customer_commands_write_nothing(ledger: Ledger, db: Db) -> None:
    customer = create(ledger)
    before = (db.event_count(), db.command_count())

    with pytest.raises(InvalidRequest) as created:
        ledger.create_customer(
            app_ctx(), d.CreateCustomer(name="X", email="x@", phone="555-1234", tags=("",))
        )
    with pytest.raises(InvalidRequest) as updated:
        ledger.update_customer(
            app_ctx(), d.UpdateCustomer(str(customer.id), (("marketing_consent", True),))
        )
    with pytest.raises(InvalidRequest) as got:
        ledger.get_customer(MERCHANT_A, "customer-1")

    assert [v.field for v in created.value.violations] == ["email", "phone", "tags[0]"]
    assert [v.field for v in updated.value.violations] == ["consent_channel"]
    assert [v.field for v in got.value.violations] == ["customer_id"]
    assert (db.event_count(), db.command_count()) == before
