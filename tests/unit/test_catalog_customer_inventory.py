"""Products, customers, stock and imported orders: their rules and validation, without I/O.

Aggregates are built through their own commands; a test then checks the events one command
recorded, the state it left, or the refusal (class and reason). Validation tests check the
exact field paths a client is told to fix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain.commands import (
    CardInput,
    Channel,
    EntryMethod,
    ImportedPayment,
    ImportOrder,
    LineItemInput,
    Outcome,
    RecordPaymentResult,
    RestockItem,
    Tender,
)
from ledger.domain.customer import (
    MAX_EXTERNAL_IDS,
    MAX_TAGS,
    Actor,
    CreateCustomer,
    Customer,
    ExternalId,
    ExternalIdClaim,
    UpdateCustomer,
    external_id_claim_id,
    validate_customer_command,
)
from ledger.domain.errors import AlreadyExists, InvalidRequest, NotFound, RuleViolated
from ledger.domain.inventory import (
    MAX_UNITS,
    AdjustmentReason,
    AdjustStock,
    ReceiveStock,
    RecordStockCount,
    StockItem,
    TransferStock,
    stock_item_id,
    validate_stock_command,
)
from ledger.domain.money import PPM
from ledger.domain.product import (
    CreateProduct,
    DiscontinueProduct,
    Product,
    UpdateProduct,
    product_id,
    validate_product_command,
)
from ledger.domain.sale import PaymentStatus, Sale, SaleStatus

MERCHANT = "merchant-1"
PRODUCT_ID = "5b0e8f3c-1a2d-4e6f-9a7b-8c9d0e1f2a3b"
OTHER_PRODUCT_ID = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
CUSTOMER_ID = "0f1e2d3c-4b5a-4968-8776-65544332211a"
APP = Actor(app_id="pos-app", key_id="key-123")
OTHER_APP = Actor(app_id="crm-app", key_id="key-456")
VISA = CardInput(brand="visa", last4="4242", entry_method=EntryMethod.DIPPED)
MUG = CreateProduct(
    sku="MUG-01",
    name="Mug",
    price=1200,
    currency_code="USD",
    tax_rate_ppm=80_000,
    barcode="4006381333931",
    category="kitchen",
)


def paths(error: InvalidRequest) -> list[str]:
    return [v.field for v in error.violations]


def names(events: Any) -> list[str]:
    return [type(e).__name__ for e in events]


def stored_and_decoded(events: list[CanMutateAggregate[UUID]]) -> list[CanMutateAggregate[UUID]]:
    """The events as the event store writes and reads them (same transcodings)."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[UUID] = Mapper(transcoder=transcoder)
    decoded = []
    for event in events:
        stored = mapper.to_stored_event(event)
        assert stored.topic.startswith("posledger.")  # stable names, not module paths
        again = mapper.to_domain_event(stored)
        assert isinstance(again, CanMutateAggregate)
        decoded.append(again)
    return decoded


def replay(events: list[CanMutateAggregate[UUID]]) -> Any:
    aggregate: Any = None
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def state(aggregate: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


# ---- products ---------------------------------------------------------------------------------


def given_product(cmd: CreateProduct = MUG) -> Product:
    product = Product.create(MERCHANT, cmd)
    product.collect_events()
    return product


def test_product_creation_records_every_field_under_an_id_derived_from_the_sku() -> None:
    product = Product.create(MERCHANT, MUG)

    (created,) = product.collect_events()
    assert isinstance(created, Product.Created)
    assert product.id == product_id(MERCHANT, "MUG-01")
    assert product.id != product_id("merchant-2", "MUG-01")
    assert product.id != product_id(MERCHANT, "MUG-02")
    assert (created.merchant_id, created.sku, created.name) == (MERCHANT, "MUG-01", "Mug")
    assert (created.price, created.currency_code, created.tax_rate_ppm) == (1200, "USD", 80_000)
    assert (created.barcode, created.category) == ("4006381333931", "kitchen")
    assert product.version == 1
    assert not product.is_discontinued


def test_product_update_records_only_the_fields_that_change() -> None:
    product = given_product()

    product.update({"name": "Mug", "price": 1350, "category": "kitchen", "barcode": ""})

    (updated,) = product.collect_events()
    assert isinstance(updated, Product.Updated)
    assert updated.changes == {"price": 1350, "barcode": ""}
    assert (product.name, product.price, product.barcode) == ("Mug", 1350, "")
    assert product.version == 2


def test_product_update_that_changes_nothing_records_nothing() -> None:
    product = given_product()

    product.update({"name": "Mug", "price": 1200, "tax_rate_ppm": 80_000})

    assert product.collect_events() == []
    assert product.version == 1


def test_discontinued_product_records_once_and_refuses_updates() -> None:
    product = given_product()

    product.discontinue("supplier stopped it")
    (event,) = product.collect_events()
    assert isinstance(event, Product.Discontinued)
    assert event.reason == "supplier stopped it"
    assert product.is_discontinued
    assert product.discontinue_reason == "supplier stopped it"

    product.discontinue("again")
    assert product.collect_events() == []
    assert product.discontinue_reason == "supplier stopped it"

    with pytest.raises(RuleViolated) as error:
        product.update({"price": 1})
    assert error.value.reason == "PRODUCT_DISCONTINUED"
    assert product.collect_events() == []
    assert product.price == 1200
    with pytest.raises(RuleViolated) as error:
        product.check_active()
    assert error.value.reason == "PRODUCT_DISCONTINUED"


def test_a_reactivated_product_is_sold_again_as_it_was_and_only_once() -> None:
    product = given_product()
    product.reactivate("still active")  # nothing to do
    assert product.collect_events() == []

    product.discontinue("out of season")
    product.reactivate("back in season")
    _, reactivated = product.collect_events()
    assert isinstance(reactivated, Product.Reactivated)
    assert reactivated.reason == "back in season"
    assert not product.is_discontinued
    assert product.discontinue_reason == ""
    product.check_active()
    product.update({"price": 1500})  # updates are allowed again
    assert product.price == 1500

    product.reactivate("twice")
    (updated,) = product.collect_events()
    assert isinstance(updated, Product.Updated)


def test_product_replayed_from_stored_events_equals_live_state() -> None:
    product = Product.create(MERCHANT, MUG)
    product.update({"price": 999, "category": "sale"})
    product.discontinue("end of line")
    events = list(product.collect_events())

    assert names(events) == ["Created", "Updated", "Discontinued"]
    assert state(replay(stored_and_decoded(events))) == state(product)


def test_valid_product_commands_pass() -> None:
    validate_product_command(MUG)
    validate_product_command(CreateProduct(sku="a", name="A", price=0, currency_code="JPY"))
    validate_product_command(
        UpdateProduct(PRODUCT_ID, (("price", 10), ("tax_rate_ppm", PPM), ("barcode", "")))
    )
    validate_product_command(DiscontinueProduct(PRODUCT_ID))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"sku": ""}, ["sku"]),
        ({"sku": "-starts-with-dash"}, ["sku"]),
        ({"sku": "has space"}, ["sku"]),
        ({"sku": "x" * 65}, ["sku"]),
        ({"name": " "}, ["name"]),
        ({"name": "n" * 201}, ["name"]),
        ({"price": -1}, ["price"]),
        ({"currency_code": ""}, ["currency_code"]),
        ({"currency_code": "XXX"}, ["currency_code"]),
        ({"tax_rate_ppm": -1}, ["tax_rate_ppm"]),
        ({"tax_rate_ppm": PPM + 1}, ["tax_rate_ppm"]),
        ({"barcode": "400 638"}, ["barcode"]),
        ({"barcode": "b" * 65}, ["barcode"]),
        ({"category": "c" * 101}, ["category"]),
        ({"sku": "", "price": -5, "currency_code": "usd"}, ["sku", "price", "currency_code"]),
    ],
)
def test_create_product_violations_name_the_field(
    change: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as error:
        validate_product_command(replace(MUG, **change))
    assert paths(error.value) == expected


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (UpdateProduct(PRODUCT_ID, ()), ["update_mask"]),
        (UpdateProduct(PRODUCT_ID, (("sku", "NEW"),)), ["update_mask"]),
        (UpdateProduct(PRODUCT_ID, (("colour", "red"), ("stock", 3))), ["update_mask"] * 2),
        (UpdateProduct("not-a-uuid", (("price", 1),)), ["product_id"]),
        (UpdateProduct("", (("price", 1),)), ["product_id"]),
        (UpdateProduct(PRODUCT_ID, (("name", ""),)), ["product.name"]),
        (UpdateProduct(PRODUCT_ID, (("price", -1),)), ["product.price"]),
        (UpdateProduct(PRODUCT_ID, (("currency_code", "EURO"),)), ["product.currency_code"]),
        (UpdateProduct(PRODUCT_ID, (("tax_rate_ppm", PPM + 1),)), ["product.tax_rate_ppm"]),
        (UpdateProduct(PRODUCT_ID, (("barcode", "a b"),)), ["product.barcode"]),
        (DiscontinueProduct("nope"), ["product_id"]),
        (DiscontinueProduct(PRODUCT_ID, "r" * 501), ["reason"]),
    ],
)
def test_update_and_discontinue_product_violations_name_the_field(
    cmd: UpdateProduct | DiscontinueProduct, expected: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as error:
        validate_product_command(cmd)
    assert paths(error.value) == expected


def test_fields_outside_the_update_mask_are_not_checked() -> None:
    # Only named fields are changed, so only they are validated.
    validate_product_command(UpdateProduct(PRODUCT_ID, (("category", "mugs"),)))


# ---- customers --------------------------------------------------------------------------------

ALICE = CreateCustomer(
    name="Alice Example",
    email="alice@example.com",
    phone="+4915112345678",
    tags=("vip", "newsletter"),
    external_ids=(ExternalId("shopify", "cust-1"), ExternalId("amazon", "A-9")),
)


def given_customer(cmd: CreateCustomer = ALICE) -> Customer:
    customer = Customer.create(MERCHANT, cmd, APP)
    customer.collect_events()
    return customer


def test_valid_customer_commands_pass() -> None:
    validate_customer_command(ALICE)
    validate_customer_command(CreateCustomer(name="Bob"))  # email and phone are optional
    validate_customer_command(
        CreateCustomer(name="Carol", marketing_consent=True, consent_channel=Channel.ONLINE)
    )
    validate_customer_command(
        UpdateCustomer(CUSTOMER_ID, (("email", ""), ("tags", ()), ("external_ids", ())))
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": ""}, ["name"]),
        ({"email": "alice"}, ["email"]),
        ({"email": "alice@"}, ["email"]),
        ({"email": "alice@example"}, ["email"]),
        ({"email": "al ice@example.com"}, ["email"]),
        ({"email": "a@b@example.com"}, ["email"]),
        ({"email": f"{'a' * 250}@example.com"}, ["email"]),
        ({"phone": "015112345678"}, ["phone"]),  # no country code
        ({"phone": "+49 151 12345678"}, ["phone"]),
        ({"phone": "+0123456789"}, ["phone"]),
        ({"phone": "+12345"}, ["phone"]),  # too short
        ({"phone": "+1234567890123456"}, ["phone"]),  # 16 digits: too long
        ({"tags": ("ok", " ")}, ["tags[1]"]),
        ({"tags": ("t" * 51,)}, ["tags[0]"]),
        ({"tags": tuple(f"t{i}" for i in range(MAX_TAGS + 1))}, ["tags"]),
        ({"external_ids": (ExternalId("Shopify", "1"),)}, ["external_ids[0].channel"]),
        ({"external_ids": (ExternalId("", "1"),)}, ["external_ids[0].channel"]),
        ({"external_ids": (ExternalId("shop ify", "1"),)}, ["external_ids[0].channel"]),
        ({"external_ids": (ExternalId("x" * 33, "1"),)}, ["external_ids[0].channel"]),
        (
            {"external_ids": (ExternalId("shopify", "1"), ExternalId("pos", ""))},
            ["external_ids[1].external_id"],
        ),
        (
            {"external_ids": (ExternalId("shopify", "1"), ExternalId("shopify", "1"))},
            ["external_ids"],
        ),
        (
            {
                "external_ids": tuple(
                    ExternalId("shop", str(i)) for i in range(MAX_EXTERNAL_IDS + 1)
                )
            },
            ["external_ids"],
        ),
        ({"marketing_consent": True}, ["consent_channel"]),
        ({"email": "x", "phone": "x", "name": ""}, ["name", "email", "phone"]),
    ],
)
def test_create_customer_violations_name_the_field(
    change: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as error:
        validate_customer_command(replace(ALICE, **change))
    assert paths(error.value) == expected


def test_customer_errors_never_echo_personal_data() -> None:
    with pytest.raises(InvalidRequest) as error:
        validate_customer_command(
            replace(ALICE, email="secret-person@nowhere", phone="+49-secret-555")
        )
    assert "secret" not in str(error.value)
    assert all("secret" not in v.description for v in error.value.violations)


def test_same_external_id_on_different_channels_is_allowed() -> None:
    validate_customer_command(
        replace(ALICE, external_ids=(ExternalId("shopify", "1"), ExternalId("amazon", "1")))
    )


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (UpdateCustomer(CUSTOMER_ID, ()), ["update_mask"]),
        (UpdateCustomer(CUSTOMER_ID, (("merchant_id", "m2"),)), ["update_mask"]),
        (UpdateCustomer(CUSTOMER_ID, (("consent", True),)), ["update_mask"]),
        (UpdateCustomer("42", (("name", "X"),)), ["customer_id"]),
        (UpdateCustomer(CUSTOMER_ID, (("name", ""),)), ["customer.name"]),
        (UpdateCustomer(CUSTOMER_ID, (("email", "no-at-sign"),)), ["customer.email"]),
        (UpdateCustomer(CUSTOMER_ID, (("phone", "12345678"),)), ["customer.phone"]),
        (UpdateCustomer(CUSTOMER_ID, (("tags", ("",)),)), ["customer.tags[0]"]),
        (
            UpdateCustomer(CUSTOMER_ID, (("external_ids", (ExternalId("A", "1"),)),)),
            ["customer.external_ids[0].channel"],
        ),
        (
            UpdateCustomer(
                CUSTOMER_ID,
                (("external_ids", (ExternalId("pos", "1"), ExternalId("pos", "1"))),),
            ),
            ["customer.external_ids"],
        ),
        # Any change of consent must say through which channel it was given or withdrawn.
        (UpdateCustomer(CUSTOMER_ID, (("marketing_consent", True),)), ["consent_channel"]),
        (UpdateCustomer(CUSTOMER_ID, (("marketing_consent", False),)), ["consent_channel"]),
    ],
)
def test_update_customer_violations_name_the_field(
    cmd: UpdateCustomer, expected: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as error:
        validate_customer_command(cmd)
    assert paths(error.value) == expected


def test_customer_created_without_consent_records_one_event() -> None:
    customer = Customer.create(MERCHANT, ALICE, APP)

    (created,) = customer.collect_events()
    assert isinstance(created, Customer.Created)
    assert created.tags == ["vip", "newsletter"]
    assert created.external_ids == [
        {"channel": "shopify", "external_id": "cust-1"},
        {"channel": "amazon", "external_id": "A-9"},
    ]
    assert customer.external_ids == list(ALICE.external_ids)
    assert not customer.marketing_consent
    assert customer.consent_channel == ""
    assert customer.consent_changed_at is None


def test_consent_given_at_creation_is_an_event_of_its_own_naming_who_and_where() -> None:
    cmd = replace(ALICE, marketing_consent=True, consent_channel=Channel.IN_STORE)

    customer = Customer.create(MERCHANT, cmd, APP)

    created, consent = customer.collect_events()
    assert isinstance(created, Customer.Created)
    assert isinstance(consent, Customer.ConsentChanged)
    assert not hasattr(created, "marketing_consent")
    assert (consent.marketing_consent, consent.channel) == (True, "in_store")
    assert (consent.app_id, consent.key_id) == ("pos-app", "key-123")
    assert customer.marketing_consent
    assert customer.consent_channel == "in_store"
    assert customer.consent_changed_at == consent.timestamp


def test_profile_update_and_consent_change_are_separate_events() -> None:
    customer = given_customer()

    customer.update(
        {"email": "alice@new.example", "marketing_consent": True, "name": "Alice Example"},
        Channel.ONLINE,
        OTHER_APP,
    )

    updated, consent = customer.collect_events()
    assert isinstance(updated, Customer.Updated)
    assert updated.changes == {"email": "alice@new.example"}
    assert isinstance(consent, Customer.ConsentChanged)
    assert (consent.marketing_consent, consent.channel) == (True, "online")
    assert (consent.app_id, consent.key_id) == ("crm-app", "key-456")
    assert customer.email == "alice@new.example"
    assert customer.marketing_consent


def test_consent_only_update_records_no_profile_event_and_withdrawal_is_recorded() -> None:
    customer = given_customer()

    customer.update({"marketing_consent": True}, Channel.PHONE, APP)
    (given,) = customer.collect_events()
    customer.update({"marketing_consent": True}, Channel.ONLINE, OTHER_APP)  # no change
    assert customer.collect_events() == []
    customer.update({"marketing_consent": False}, Channel.ONLINE, OTHER_APP)
    (withdrawn,) = customer.collect_events()

    assert isinstance(given, Customer.ConsentChanged)
    assert isinstance(withdrawn, Customer.ConsentChanged)
    assert (given.marketing_consent, given.channel, given.app_id) == (True, "phone", "pos-app")
    assert (withdrawn.marketing_consent, withdrawn.channel, withdrawn.key_id) == (
        False,
        "online",
        "key-456",
    )
    assert not customer.marketing_consent
    assert customer.consent_channel == "online"
    assert customer.consent_changed_at == withdrawn.timestamp


def test_customer_update_records_only_changed_fields() -> None:
    customer = given_customer()

    customer.update(
        {
            "name": "Alice Example",
            "tags": ("vip", "newsletter"),
            "external_ids": (ExternalId("shopify", "cust-1"), ExternalId("amazon", "A-9")),
        },
        None,
        APP,
    )
    assert customer.collect_events() == []

    customer.update(
        {"tags": ("vip",), "external_ids": (ExternalId("shopify", "cust-2"),)}, None, APP
    )
    (updated,) = customer.collect_events()
    assert isinstance(updated, Customer.Updated)
    assert updated.changes == {
        "tags": ["vip"],
        "external_ids": [{"channel": "shopify", "external_id": "cust-2"}],
    }
    assert customer.tags == ["vip"]
    assert customer.external_ids == [ExternalId("shopify", "cust-2")]


def test_customer_replayed_from_stored_events_equals_live_state() -> None:
    customer = Customer.create(
        MERCHANT, replace(ALICE, marketing_consent=True, consent_channel=Channel.ONLINE), APP
    )
    customer.update(
        {"phone": "", "external_ids": (ExternalId("pos", "7"),), "marketing_consent": False},
        Channel.IN_STORE,
        OTHER_APP,
    )
    events = list(customer.collect_events())

    assert names(events) == ["Created", "ConsentChanged", "Updated", "ConsentChanged"]
    assert state(replay(stored_and_decoded(events))) == state(customer)


# ---- external id claims -----------------------------------------------------------------------

SHOPIFY_1 = ExternalId("shopify", "cust-1")


def test_claim_id_is_per_merchant_channel_and_external_id() -> None:
    ids = {
        external_id_claim_id(MERCHANT, SHOPIFY_1),
        external_id_claim_id("merchant-2", SHOPIFY_1),
        external_id_claim_id(MERCHANT, ExternalId("amazon", "cust-1")),
        external_id_claim_id(MERCHANT, ExternalId("shopify", "cust-2")),
    }
    assert len(ids) == 4
    assert external_id_claim_id(MERCHANT, SHOPIFY_1) == external_id_claim_id(
        MERCHANT, ExternalId("shopify", "cust-1")
    )


def test_external_id_claim_rules() -> None:
    claim = ExternalIdClaim.claim_new(MERCHANT, SHOPIFY_1, "customer-a")
    (created,) = claim.collect_events()
    assert isinstance(created, ExternalIdClaim.Created)
    assert claim.id == external_id_claim_id(MERCHANT, SHOPIFY_1)
    assert claim.customer_id == "customer-a"

    claim.claim("customer-a")  # the holder claiming again: nothing happens
    assert claim.collect_events() == []

    with pytest.raises(AlreadyExists) as error:
        claim.claim("customer-b")
    assert error.value.reason == "EXTERNAL_ID_TAKEN"
    assert claim.collect_events() == []
    assert claim.customer_id == "customer-a"

    claim.release("customer-b")  # not the holder: nothing to release
    assert claim.collect_events() == []
    assert claim.customer_id == "customer-a"

    claim.release("customer-a")
    (released,) = claim.collect_events()
    assert isinstance(released, ExternalIdClaim.Reassigned)
    assert released.customer_id == ""
    assert claim.customer_id == ""

    claim.claim("customer-b")
    (reassigned,) = claim.collect_events()
    assert isinstance(reassigned, ExternalIdClaim.Reassigned)
    assert reassigned.customer_id == "customer-b"
    assert claim.customer_id == "customer-b"

    claim.release("")  # releasing for nobody never frees someone else's claim
    assert claim.collect_events() == []
    assert claim.version == 3


def test_claim_replayed_from_stored_events_equals_live_state() -> None:
    claim = ExternalIdClaim.claim_new(MERCHANT, SHOPIFY_1, "customer-a")
    claim.release("customer-a")
    claim.claim("customer-b")
    events = list(claim.collect_events())
    assert state(replay(stored_and_decoded(events))) == state(claim)


# ---- stock: validation ------------------------------------------------------------------------


def test_valid_stock_commands_pass() -> None:
    validate_stock_command(ReceiveStock(PRODUCT_ID, "loc-1", 1))
    validate_stock_command(ReceiveStock(PRODUCT_ID, "loc-1", MAX_UNITS, reference="PO-1"))
    validate_stock_command(AdjustStock(PRODUCT_ID, "loc-1", -3, AdjustmentReason.DAMAGE))
    validate_stock_command(AdjustStock(PRODUCT_ID, "loc-1", MAX_UNITS, AdjustmentReason.OTHER))
    validate_stock_command(RecordStockCount(PRODUCT_ID, "loc-1", 0))
    validate_stock_command(TransferStock(PRODUCT_ID, "loc-1", "loc-2", 5))


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (ReceiveStock("not-a-uuid", "loc-1", 1), ["product_id"]),
        (ReceiveStock("", "loc-1", 1), ["product_id"]),
        (ReceiveStock(PRODUCT_ID, "", 1), ["location_id"]),
        (ReceiveStock(PRODUCT_ID, "l" * 65, 1), ["location_id"]),
        (ReceiveStock(PRODUCT_ID, "loc-1", 0), ["quantity"]),
        (ReceiveStock(PRODUCT_ID, "loc-1", -1), ["quantity"]),
        (ReceiveStock(PRODUCT_ID, "loc-1", MAX_UNITS + 1), ["quantity"]),
        (ReceiveStock(PRODUCT_ID, "loc-1", 1, reference="r" * 129), ["reference"]),
        (ReceiveStock(PRODUCT_ID, "loc-1", 1, note="n" * 1001), ["note"]),
        (AdjustStock(PRODUCT_ID, "loc-1", 0, AdjustmentReason.LOSS), ["quantity"]),
        (AdjustStock(PRODUCT_ID, "loc-1", -MAX_UNITS - 1, AdjustmentReason.LOSS), ["quantity"]),
        (AdjustStock(PRODUCT_ID, "loc-1", MAX_UNITS + 1, AdjustmentReason.LOSS), ["quantity"]),
        (AdjustStock(PRODUCT_ID, "loc-1", 2, None), ["reason"]),
        (AdjustStock(PRODUCT_ID, "", 0, None), ["location_id", "quantity", "reason"]),
        (RecordStockCount(PRODUCT_ID, "loc-1", -1), ["counted_quantity"]),
        (RecordStockCount(PRODUCT_ID, "loc-1", MAX_UNITS + 1), ["counted_quantity"]),
        (RecordStockCount(PRODUCT_ID, " ", 3), ["location_id"]),
        (TransferStock(PRODUCT_ID, "loc-1", "loc-1", 1), ["to_location_id"]),
        (TransferStock(PRODUCT_ID, "", "loc-2", 1), ["from_location_id"]),
        (TransferStock(PRODUCT_ID, "loc-1", "", 1), ["to_location_id"]),
        (TransferStock(PRODUCT_ID, "loc-1", "loc-2", 0), ["quantity"]),
        (TransferStock(PRODUCT_ID, "loc-1", "loc-2", MAX_UNITS + 1), ["quantity"]),
        (TransferStock("x", "a", "a", -1), ["product_id", "to_location_id", "quantity"]),
    ],
)
def test_stock_command_violations_name_the_field(cmd: Any, expected: list[str]) -> None:
    with pytest.raises(InvalidRequest) as error:
        validate_stock_command(cmd)
    assert paths(error.value) == expected


# ---- stock: the item's arithmetic -------------------------------------------------------------


def given_stock(location: str = "loc-1") -> StockItem:
    item = StockItem.open(MERCHANT, PRODUCT_ID, location)
    item.collect_events()
    return item


def test_stock_item_id_is_per_merchant_product_and_location() -> None:
    item = StockItem.open(MERCHANT, PRODUCT_ID, "loc-1")
    assert item.id == stock_item_id(MERCHANT, PRODUCT_ID, "loc-1")
    others = {
        stock_item_id("merchant-2", PRODUCT_ID, "loc-1"),
        stock_item_id(MERCHANT, OTHER_PRODUCT_ID, "loc-1"),
        stock_item_id(MERCHANT, PRODUCT_ID, "loc-2"),
    }
    assert item.id not in others
    assert len(others) == 3
    assert item.on_hand == 0


def test_receive_and_adjust_move_on_hand() -> None:
    item = given_stock()

    item.receive(10, "PO-1", "first delivery")
    item.adjust(-3, AdjustmentReason.DAMAGE, "dropped")
    item.adjust(1, AdjustmentReason.CORRECTION, "")

    received, damaged, corrected = item.collect_events()
    assert isinstance(received, StockItem.Received)
    assert (received.quantity, received.reference, received.note) == (10, "PO-1", "first delivery")
    assert isinstance(damaged, StockItem.Adjusted)
    assert (damaged.quantity, damaged.reason) == (-3, "damage")
    assert isinstance(corrected, StockItem.Adjusted)
    assert corrected.reason == "correction"
    assert (item.on_hand, item.received, item.adjusted) == (8, 10, -2)


def test_count_resets_on_hand_and_records_the_variance() -> None:
    item = given_stock()
    item.receive(10, "", "")
    item.record_sale("sale-1", 2)  # expected on hand: 8

    item.count(5, "shelf count")

    _, _, counted = item.collect_events()
    assert isinstance(counted, StockItem.Counted)
    assert (counted.counted_quantity, counted.expected_quantity) == (5, 8)
    assert item.on_hand == 5
    assert (item.last_count, item.last_count_variance, item.count_variance) == (5, -3, -3)
    assert item.last_counted_at == counted.timestamp

    item.count(7, "found a box")
    assert (item.on_hand, item.last_count_variance, item.count_variance) == (7, 2, -1)
    item.count(7, "")
    assert (item.on_hand, item.last_count_variance, item.count_variance) == (7, 0, -1)


def test_sales_may_take_on_hand_below_zero_and_a_count_explains_it() -> None:
    item = given_stock()
    item.record_sale("sale-1", 3)
    assert (item.on_hand, item.sold) == (-3, 3)

    item.count(0, "")

    assert item.on_hand == 0
    assert item.count_variance == 3
    assert item.last_count_variance == 3


def test_sold_and_returned_units() -> None:
    item = given_stock()
    item.receive(5, "", "")

    item.record_sale("sale-1", 4)
    item.record_return("sale-1", "refund-1", 1)

    _, sold, returned = item.collect_events()
    assert isinstance(sold, StockItem.Sold)
    assert (sold.sale_id, sold.quantity) == ("sale-1", 4)
    assert isinstance(returned, StockItem.Returned)
    assert (returned.sale_id, returned.refund_id, returned.quantity) == ("sale-1", "refund-1", 1)
    assert (item.on_hand, item.sold, item.returned) == (2, 4, 1)


def test_transfer_moves_units_between_two_items() -> None:
    source, target = given_stock("loc-1"), given_stock("loc-2")
    source.receive(6, "", "")
    source.collect_events()

    source.transfer_out("t-1", 4, "loc-2", "TR-1")
    target.transfer_in("t-1", 4, "loc-1", "TR-1")

    (out,) = source.collect_events()
    (into,) = target.collect_events()
    assert isinstance(out, StockItem.TransferredOut)
    assert isinstance(into, StockItem.TransferredIn)
    assert (out.transfer_id, out.quantity, out.to_location_id) == ("t-1", 4, "loc-2")
    assert (into.transfer_id, into.quantity, into.from_location_id) == ("t-1", 4, "loc-1")
    assert (source.on_hand, source.transferred_out) == (2, 4)
    assert (target.on_hand, target.transferred_in) == (4, 4)


@pytest.mark.parametrize("on_hand", [0, 3, -2])
def test_transfer_refuses_more_than_on_hand(on_hand: int) -> None:
    item = given_stock()
    if on_hand:
        item.adjust(on_hand, AdjustmentReason.CORRECTION, "")
    item.collect_events()

    with pytest.raises(RuleViolated) as error:
        item.transfer_out("t-1", max(on_hand, 0) + 1, "loc-2", "")

    assert error.value.reason == "INSUFFICIENT_STOCK"
    assert item.collect_events() == []
    assert item.on_hand == on_hand
    assert item.transferred_out == 0


def test_transfer_of_exactly_what_is_on_hand_empties_the_location() -> None:
    item = given_stock()
    item.receive(3, "", "")
    item.transfer_out("t-1", 3, "loc-2", "")
    assert item.on_hand == 0


# ---- stock: conservation, over random movements -----------------------------------------------

LOCATIONS = ("loc-a", "loc-b")


@dataclass(frozen=True)
class Move:
    kind: str
    location: int  # index into LOCATIONS (the source, for a transfer)
    quantity: int


quantities = st.integers(min_value=1, max_value=50)
moves = st.one_of(
    st.builds(Move, st.just("receive"), st.integers(0, 1), quantities),
    st.builds(
        Move,
        st.just("adjust"),
        st.integers(0, 1),
        st.integers(-50, 50).filter(lambda q: q != 0),
    ),
    st.builds(Move, st.just("count"), st.integers(0, 1), st.integers(0, 80)),
    st.builds(Move, st.just("sale"), st.integers(0, 1), quantities),
    st.builds(Move, st.just("return"), st.integers(0, 1), quantities),
    st.builds(Move, st.just("transfer"), st.integers(0, 1), quantities),
)


def balance(item: StockItem) -> int:
    return (
        item.received
        + item.returned
        + item.adjusted
        + item.transferred_in
        - item.sold
        - item.transferred_out
        + item.count_variance
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(moves, min_size=1, max_size=60))
def test_stock_is_conserved_and_replay_equals_live_state(script: list[Move]) -> None:
    items = [StockItem.open(MERCHANT, PRODUCT_ID, loc) for loc in LOCATIONS]
    history: list[list[CanMutateAggregate[UUID]]] = [list(i.collect_events()) for i in items]
    flows = {"received": 0, "adjusted": 0, "counted": 0, "sold": 0, "returned": 0}
    transferred = 0

    for n, move in enumerate(script):
        item = items[move.location]
        total_before = sum(i.on_hand for i in items)
        expected_change = 0
        match move.kind:
            case "receive":
                item.receive(move.quantity, f"PO-{n}", "")
                flows["received"] += move.quantity
                expected_change = move.quantity
            case "adjust":
                item.adjust(move.quantity, AdjustmentReason.CORRECTION, "")
                flows["adjusted"] += move.quantity
                expected_change = move.quantity
            case "count":
                expected_change = move.quantity - item.on_hand
                item.count(move.quantity, "")
                flows["counted"] += expected_change
            case "sale":
                item.record_sale(f"sale-{n}", move.quantity)
                flows["sold"] += move.quantity
                expected_change = -move.quantity
            case "return":
                item.record_return(f"sale-{n}", f"refund-{n}", move.quantity)
                flows["returned"] += move.quantity
                expected_change = move.quantity
            case "transfer":
                target = items[1 - move.location]
                if move.quantity > item.on_hand:
                    with pytest.raises(RuleViolated) as error:
                        item.transfer_out(f"t-{n}", move.quantity, target.location_id, "")
                    assert error.value.reason == "INSUFFICIENT_STOCK"
                else:
                    item.transfer_out(f"t-{n}", move.quantity, target.location_id, "")
                    target.transfer_in(f"t-{n}", move.quantity, item.location_id, "")
                    transferred += move.quantity
        for i, events in zip(items, history, strict=True):
            events.extend(i.collect_events())

        # Each item: on hand is exactly the sum of its movements.
        for i in items:
            assert i.on_hand == balance(i)
        # Across locations: transfers conserve units, everything else moves them.
        assert sum(i.on_hand for i in items) == total_before + expected_change
        assert sum(i.on_hand for i in items) == (
            flows["received"]
            + flows["adjusted"]
            + flows["counted"]
            + flows["returned"]
            - flows["sold"]
        )
        assert sum(i.transferred_in for i in items) == transferred
        assert sum(i.transferred_out for i in items) == transferred
        assert all(i.version == len(events) for i, events in zip(items, history, strict=True))

    for item, events in zip(items, history, strict=True):
        assert state(replay(events)) == state(item)
        assert state(replay(stored_and_decoded(events))) == state(item)


# ---- sales: imported orders -------------------------------------------------------------------

TEE = LineItemInput(
    sku="TEE-1", name="T-shirt", quantity=2, unit_price=1500, tax_rate_ppm=190_000, product_id=""
)  # 3000 + 570 tax = 3570
CAP = LineItemInput(sku="CAP-1", name="Cap", quantity=1, unit_price=1000, discount=100)  # 900


def order(**changes: Any) -> ImportOrder:
    base = ImportOrder(
        channel="shopify",
        external_order_id="1001",
        sales_channel=Channel.ONLINE,
        location_id="web",
        currency_code="EUR",
        line_items=(replace(TEE, product_id=PRODUCT_ID), CAP),
        payments=(
            ImportedPayment(Tender.CARD, 4000, VISA, "AUTH1", "ch_1"),
            ImportedPayment(Tender.GIFT_CARD, 470),
        ),
        customer_id="cust-1",
        placed_at=datetime(2025, 3, 1, 12, 30, tzinfo=UTC),
        note="gift wrap",
    )
    return replace(base, **changes)


def test_imported_order_is_a_completed_sale_with_settled_payments() -> None:
    sale_id = uuid.uuid4()

    sale = Sale.import_order(sale_id, MERCHANT, order(), "fingerprint-1")

    events = list(sale.collect_events())
    assert names(events) == ["Created", "Imported", "Completed"]
    assert [type(e) for e in events] == [Sale.Created, Sale.Imported, Sale.Completed]
    assert sale.id == sale_id
    assert sale.status is SaleStatus.COMPLETED
    assert (sale.total, sale.paid_total, sale.amount_due) == (4470, 4470, 0)
    assert (sale.channel, sale.location_id, sale.currency_code) == (Channel.ONLINE, "web", "EUR")
    assert (sale.external_order_id, sale.customer_id, sale.note) == ("1001", "cust-1", "gift wrap")
    assert (sale.import_channel, sale.import_fingerprint) == ("shopify", "fingerprint-1")
    assert sale.placed_at == datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    assert [line.product_id for line in sale.line_items] == [PRODUCT_ID, ""]
    payments = list(sale.payments.values())
    assert [(p.tender, p.approved_amount, p.status) for p in payments] == [
        ("card", 4000, PaymentStatus.APPROVED),
        ("gift_card", 470, PaymentStatus.APPROVED),
    ]
    assert payments[0].card == {"brand": "visa", "last4": "4242", "entry_method": "dipped"}
    assert (payments[0].auth_code, payments[0].processor_reference) == ("AUTH1", "ch_1")
    assert all(p.app_id == "import:shopify" for p in payments)
    imported = events[1]
    assert isinstance(imported, Sale.Imported)
    assert imported.placed_at == sale.placed_at
    assert state(replay(stored_and_decoded(events))) == state(sale)


@pytest.mark.parametrize("paid", [4469, 4471, 1])
def test_imported_payments_must_add_up_to_the_total(paid: int) -> None:
    payments = (ImportedPayment(Tender.CASH, paid),)

    with pytest.raises(RuleViolated) as error:
        Sale.import_order(uuid.uuid4(), MERCHANT, order(payments=payments), "f")

    assert error.value.reason == "PAYMENTS_DO_NOT_MATCH_TOTAL"


def test_imported_line_without_a_price_is_an_unknown_sku() -> None:
    unpriced = replace(CAP, unit_price=None)

    with pytest.raises(RuleViolated) as error:
        Sale.import_order(uuid.uuid4(), MERCHANT, order(line_items=(unpriced,)), "f")

    assert error.value.reason == "UNKNOWN_SKU"


# ---- sales: refunds that return goods to stock ------------------------------------------------


def completed_sale(*items: LineItemInput) -> tuple[Sale, str]:
    """A sale paid in full by card, and its payment id."""
    sale = Sale.create(
        merchant_id=MERCHANT,
        location_id="loc-1",
        channel=Channel.IN_STORE,
        currency_code="EUR",
        line_items=items,
    )
    payment_id = pay(sale, sale.amount_due)
    assert sale.status is SaleStatus.COMPLETED
    sale.collect_events()
    return sale, payment_id


def pay(sale: Sale, amount: int) -> str:
    payment_id = sale.request_payment(
        amount=amount,
        currency_code=sale.currency_code,
        tender_types=[Tender.CARD],
        callback_url="https://pos.example.com/cb",
        app_id="pos-app",
        api_version="1.0",
    )
    sale.record_payment_result(
        RecordPaymentResult(
            sale_id=str(sale.id),
            payment_id=payment_id,
            outcome=Outcome.APPROVED,
            tender=Tender.CARD,
            card=VISA,
        )
    )
    return payment_id


STOCKED = replace(TEE, product_id=PRODUCT_ID)  # 2 units, a catalog product


def line_id(sale: Sale, sku: str) -> str:
    return next(line.line_id for line in sale.line_items if line.sku == sku)


def test_refund_with_restock_records_the_product_and_quantity() -> None:
    sale, payment_id = completed_sale(STOCKED, CAP)
    tee = line_id(sale, "TEE-1")

    refund_id = sale.refund_payment(payment_id, 1785, "one returned", "", (RestockItem(tee, 1),))

    (refunded,) = sale.collect_events()
    assert isinstance(refunded, Sale.PaymentRefunded)
    assert refunded.refund_id == refund_id
    assert refunded.restock_items == [{"line_id": tee, "product_id": PRODUCT_ID, "quantity": 1}]
    assert sale.restocked(tee) == 1
    assert sale.refunds[0].restock_items == (
        {"line_id": tee, "product_id": PRODUCT_ID, "quantity": 1},
    )


def test_refund_without_restock_returns_nothing_to_stock() -> None:
    sale, payment_id = completed_sale(STOCKED)

    sale.refund_payment(payment_id, 100, "goodwill", "")

    (refunded,) = sale.collect_events()
    assert isinstance(refunded, Sale.PaymentRefunded)
    assert refunded.restock_items == []


def test_open_item_line_cannot_be_restocked() -> None:
    sale, payment_id = completed_sale(STOCKED, CAP)

    with pytest.raises(RuleViolated) as error:
        sale.refund_payment(payment_id, 900, "", "", (RestockItem(line_id(sale, "CAP-1"), 1),))

    assert error.value.reason == "LINE_NOT_STOCKED"
    assert sale.collect_events() == []
    assert sale.refunded_total == 0


def test_restock_cannot_exceed_units_sold_across_refunds() -> None:
    sale, payment_id = completed_sale(STOCKED)
    tee = line_id(sale, "TEE-1")

    with pytest.raises(RuleViolated) as error:
        sale.refund_payment(payment_id, 100, "", "", (RestockItem(tee, 3),))
    assert error.value.reason == "RESTOCK_EXCEEDS_SOLD"

    sale.refund_payment(payment_id, 100, "", "", (RestockItem(tee, 1),))
    sale.refund_payment(payment_id, 100, "", "", (RestockItem(tee, 1),))
    assert sale.restocked(tee) == 2
    with pytest.raises(RuleViolated) as error:
        sale.refund_payment(payment_id, 100, "", "", (RestockItem(tee, 1),))
    assert error.value.reason == "RESTOCK_EXCEEDS_SOLD"
    assert sale.refunded_total == 200
    # Money alone can still be refunded.
    sale.refund_payment(payment_id, 100, "", "")
    assert sale.refunded_total == 300


def test_restock_needs_a_completed_sale() -> None:
    sale = Sale.create(
        merchant_id=MERCHANT,
        location_id="loc-1",
        channel=Channel.IN_STORE,
        currency_code="EUR",
        line_items=(STOCKED,),
    )
    payment_id = pay(sale, 1000)  # a part payment: the sale stays open
    assert sale.status is SaleStatus.OPEN
    sale.collect_events()

    with pytest.raises(RuleViolated) as error:
        sale.refund_payment(payment_id, 1000, "", "", (RestockItem(line_id(sale, "TEE-1"), 1),))

    assert error.value.reason == "SALE_NOT_COMPLETED"
    assert sale.collect_events() == []


def test_restock_of_an_unknown_line_is_not_found() -> None:
    sale, payment_id = completed_sale(STOCKED)

    with pytest.raises(NotFound) as error:
        sale.refund_payment(payment_id, 100, "", "", (RestockItem(str(uuid.uuid4()), 1),))

    assert error.value.reason == "LINE_ITEM_NOT_FOUND"


def test_line_without_price_is_refused_as_unknown_sku() -> None:
    with pytest.raises(RuleViolated) as error:
        Sale.create(
            merchant_id=MERCHANT,
            location_id="loc-1",
            channel=Channel.IN_STORE,
            currency_code="EUR",
            line_items=(replace(CAP, unit_price=None),),
        )
    assert error.value.reason == "UNKNOWN_SKU"
