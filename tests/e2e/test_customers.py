"""CustomerService over the wire: profiles, consent, external ids, tenancy, idempotency."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
from hypothesis import strategies as st

from ledger.v1 import customers_pb2 as cpb
from ledger.v1 import sales_pb2 as pb
from tests.e2e import api_client as api
from tests.e2e import strategies as fuzz
from tests.e2e.api_client import Metadata, Stubs


def _invalid(call: Callable[[], object]) -> api.RpcFailure:
    failure = api.expect_failure(call)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.domain == "posledger"
    assert failure.violations, "INVALID_ARGUMENT must name the bad fields"
    return failure


def _fails(call: Callable[[], object], code: grpc.StatusCode, reason: str) -> api.RpcFailure:
    failure = api.expect_failure(call)
    assert (failure.code, failure.reason) == (code, reason), failure
    assert failure.violations == []
    return failure


def _ids(customer: cpb.Customer) -> list[tuple[str, str]]:
    return [(e.channel, e.external_id) for e in customer.external_ids]


# ---- create and get ----------------------------------------------------------------------


def test_create_then_get(stubs: Stubs) -> None:
    customer = api.create_customer(
        stubs.customers,
        tags=["vip", "wholesale"],
        external_ids=[api.external_id("webshop", "u-1"), api.external_id("marketplace", "m-9")],
    )

    assert uuid.UUID(customer.id)
    assert customer.version == 1
    assert (customer.name, customer.email, customer.phone) == (
        "Ada Lovelace",
        "ada@example.com",
        "+4915112345678",
    )
    assert list(customer.tags) == ["vip", "wholesale"]
    assert _ids(customer) == [("webshop", "u-1"), ("marketplace", "m-9")]
    assert customer.marketing_consent is False
    assert customer.consent_channel == pb.SALES_CHANNEL_UNSPECIFIED
    assert not customer.HasField("consent_changed_at")
    assert customer.HasField("created_at")
    assert api.get_customer(stubs.customers, customer.id) == customer
    assert api.get_customer(stubs.customers, customer.id.upper()) == customer


def test_only_a_name_is_required(stubs: Stubs) -> None:
    customer = api.create_customer(stubs.customers, email="", phone="")

    assert (customer.email, customer.phone, list(customer.tags)) == ("", "", [])


def test_marketing_consent_records_its_channel(stubs: Stubs) -> None:
    customer = api.create_customer(
        stubs.customers, marketing_consent=True, consent_channel=pb.SALES_CHANNEL_ONLINE
    )

    assert customer.marketing_consent is True
    assert customer.consent_channel == pb.SALES_CHANNEL_ONLINE
    assert customer.HasField("consent_changed_at")
    assert api.get_customer(stubs.customers, customer.id) == customer

    for channel in [pb.SALES_CHANNEL_UNSPECIFIED, 99]:
        failure = _invalid(
            lambda c=channel: api.create_customer(  # type: ignore[misc]
                stubs.customers, marketing_consent=True, consent_channel=c
            )
        )
        assert failure.fields == {"consent_channel"}
    # Without consent, no channel is needed (and one given is ignored).
    quiet = api.create_customer(stubs.customers, consent_channel=pb.SALES_CHANNEL_PHONE)
    assert (quiet.marketing_consent, quiet.consent_channel) == (
        False,
        pb.SALES_CHANNEL_UNSPECIFIED,
    )


def test_create_customer_field_violations(stubs: Stubs) -> None:
    webshop = api.external_id("webshop", "u-1")
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"name": ""}, {"name"}),
        ({"name": "  "}, {"name"}),
        ({"name": "n" * 201}, {"name"}),
        ({"email": "not-an-email"}, {"email"}),
        ({"email": "ada@example"}, {"email"}),
        ({"email": "ada @example.com"}, {"email"}),
        ({"email": "@example.com"}, {"email"}),
        ({"email": "a" * 250 + "@example.com"}, {"email"}),
        ({"phone": "015112345678"}, {"phone"}),
        ({"phone": "+0151123456"}, {"phone"}),
        ({"phone": "+49 151 12345678"}, {"phone"}),
        ({"phone": "+12345"}, {"phone"}),
        ({"phone": "+1" + "2" * 15}, {"phone"}),
        ({"tags": [""]}, {"tags[0]"}),
        ({"tags": ["ok", "t" * 51]}, {"tags[1]"}),
        ({"tags": [f"t{i}" for i in range(21)]}, {"tags"}),
        ({"external_ids": [api.external_id("Web Shop", "1")]}, {"external_ids[0].channel"}),
        ({"external_ids": [api.external_id("", "1")]}, {"external_ids[0].channel"}),
        ({"external_ids": [api.external_id("webshop", "")]}, {"external_ids[0].external_id"}),
        ({"external_ids": [webshop, webshop]}, {"external_ids"}),
        (
            {"external_ids": [api.external_id("c", str(i)) for i in range(11)]},
            {"external_ids"},
        ),
        ({"request_id": ""}, {"request_id"}),
        (
            {"name": "", "email": "x", "phone": "555-0199", "tags": [""]},
            {"name", "email", "phone", "tags[0]"},
        ),
    ]
    for overrides, fields in cases:
        failure = _invalid(lambda o=overrides: api.create_customer(stubs.customers, **o))  # type: ignore[misc]
        assert failure.fields == fields, (overrides, failure)
        # Personal data is never echoed back in errors.
        email = overrides.get("email", "")
        assert not email or email not in failure.message
        phone = overrides.get("phone", "")
        assert not phone or phone not in failure.message


def test_duplicate_email_is_allowed(stubs: Stubs) -> None:
    first = api.create_customer(stubs.customers)
    second = api.create_customer(stubs.customers, name="Ada L.")

    assert first.id != second.id
    assert first.email == second.email


# ---- external ids ------------------------------------------------------------------------


def test_external_id_is_unique_per_channel(
    stubs: Stubs, two_merchants: tuple[Metadata, Metadata]
) -> None:
    a, b = two_merchants
    holder = api.create_customer(
        stubs.customers, metadata=a, external_ids=[api.external_id("webshop", "42")]
    )

    failure = _fails(
        lambda: api.create_customer(
            stubs.customers,
            metadata=a,
            name="Someone else",
            external_ids=[api.external_id("marketplace", "7"), api.external_id("webshop", "42")],
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "EXTERNAL_ID_TAKEN",
    )

    assert "webshop" in failure.message
    # Nothing of the refused customer was kept: its other id is still free.
    other = api.create_customer(
        stubs.customers, metadata=a, external_ids=[api.external_id("marketplace", "7")]
    )
    assert _ids(other) == [("marketplace", "7")]
    # The same id on another channel, or at another merchant, is a different id.
    api.create_customer(
        stubs.customers, metadata=a, external_ids=[api.external_id("marketplace", "42")]
    )
    api.create_customer(
        stubs.customers, metadata=b, external_ids=[api.external_id("webshop", "42")]
    )
    assert _ids(api.get_customer(stubs.customers, holder.id, metadata=a)) == [("webshop", "42")]


def test_external_ids_move_between_customers_only_when_released(stubs: Stubs) -> None:
    first = api.create_customer(stubs.customers, external_ids=[api.external_id("webshop", "1")])
    second = api.create_customer(stubs.customers, name="Bob")
    take = {"external_ids": [api.external_id("webshop", "1")]}

    _fails(
        lambda: api.update_customer(stubs.customers, second.id, take),
        grpc.StatusCode.ALREADY_EXISTS,
        "EXTERNAL_ID_TAKEN",
    )

    released = api.update_customer(
        stubs.customers, first.id, {"external_ids": [api.external_id("webshop", "1b")]}
    )
    assert _ids(released) == [("webshop", "1b")]
    taken = api.update_customer(stubs.customers, second.id, take)
    assert _ids(taken) == [("webshop", "1")]
    _fails(
        lambda: api.create_customer(
            stubs.customers, external_ids=[api.external_id("webshop", "1b")]
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "EXTERNAL_ID_TAKEN",
    )
    # Keeping one's own id while adding another is fine.
    both = api.update_customer(
        stubs.customers,
        second.id,
        {"external_ids": [api.external_id("webshop", "1"), api.external_id("pos", "p1")]},
    )
    assert _ids(both) == [("webshop", "1"), ("pos", "p1")]


# ---- update ------------------------------------------------------------------------------


def test_update_changes_only_the_masked_fields(stubs: Stubs) -> None:
    customer = api.create_customer(stubs.customers, tags=["vip"])

    moved = api.update_customer(
        stubs.customers,
        customer.id,
        {"email": "ada@lovelace.example", "name": "ignored", "phone": "+4930123456"},
        paths=["email"],
    )

    assert moved.email == "ada@lovelace.example"
    assert (moved.name, moved.phone) == (customer.name, customer.phone)
    assert moved.version == 2
    assert moved.created_at == customer.created_at

    # A masked field at its zero value clears it; masked lists are replaced.
    cleared = api.update_customer(
        stubs.customers, customer.id, {"phone": "", "tags": ["regular", "newsletter"]}
    )
    assert cleared.phone == ""
    assert list(cleared.tags) == ["regular", "newsletter"]
    assert cleared.email == "ada@lovelace.example"
    assert api.get_customer(stubs.customers, customer.id) == cleared

    same = api.update_customer(stubs.customers, customer.id, {"name": customer.name})
    assert same == cleared


def test_consent_changes_need_a_channel(stubs: Stubs) -> None:
    customer = api.create_customer(stubs.customers)

    failure = _invalid(
        lambda: api.update_customer(stubs.customers, customer.id, {"marketing_consent": True})
    )
    assert failure.fields == {"consent_channel"}

    granted = api.update_customer(
        stubs.customers,
        customer.id,
        {"marketing_consent": True},
        consent_channel=pb.SALES_CHANNEL_IN_STORE,
    )
    assert (granted.marketing_consent, granted.consent_channel) == (
        True,
        pb.SALES_CHANNEL_IN_STORE,
    )
    assert granted.HasField("consent_changed_at")

    # A consent value set but not masked changes nothing.
    unmasked = api.update_customer(
        stubs.customers, customer.id, {"name": "Ada", "marketing_consent": False}, paths=["name"]
    )
    assert unmasked.marketing_consent is True

    withdrawn = api.update_customer(
        stubs.customers,
        customer.id,
        {"marketing_consent": False},
        consent_channel=pb.SALES_CHANNEL_PHONE,
    )
    assert (withdrawn.marketing_consent, withdrawn.consent_channel) == (
        False,
        pb.SALES_CHANNEL_PHONE,
    )
    assert withdrawn.consent_changed_at.ToDatetime() >= granted.consent_changed_at.ToDatetime()


def test_update_customer_field_violations(stubs: Stubs) -> None:
    customer = api.create_customer(stubs.customers)
    cases: list[tuple[dict[str, Any], list[str] | None, set[str]]] = [
        ({}, [], {"update_mask"}),
        ({"name": "x"}, [], {"update_mask"}),
        ({}, ["id"], {"update_mask"}),
        ({}, ["consent_channel"], {"update_mask"}),
        ({}, ["customer.email"], {"update_mask"}),
        ({"name": ""}, None, {"customer.name"}),
        ({"email": "nope"}, None, {"customer.email"}),
        ({"phone": "555-1234"}, None, {"customer.phone"}),
        ({"tags": [""]}, None, {"customer.tags[0]"}),
        (
            {"external_ids": [api.external_id("Shop!", "1")]},
            None,
            {"customer.external_ids[0].channel"},
        ),
        (
            {"email": "nope", "phone": "1"},
            None,
            {"customer.email", "customer.phone"},
        ),
    ]
    for changes, paths, fields in cases:
        failure = _invalid(
            lambda c=changes, p=paths: api.update_customer(stubs.customers, customer.id, c, p)  # type: ignore[misc]
        )
        assert failure.fields == fields, (changes, paths, failure)

    assert _invalid(lambda: api.update_customer(stubs.customers, "nope", {"name": "x"})).fields == {
        "customer_id"
    }
    assert api.get_customer(stubs.customers, customer.id) == customer


def test_stale_expected_version_is_aborted(stubs: Stubs) -> None:
    customer = api.create_customer(stubs.customers)
    api.update_customer(stubs.customers, customer.id, {"name": "Ada"}, expected_version=1)

    failure = _fails(
        lambda: api.update_customer(
            stubs.customers, customer.id, {"name": "Stale"}, expected_version=1
        ),
        grpc.StatusCode.ABORTED,
        "VERSION_CONFLICT",
    )

    assert "version" in failure.message
    assert api.get_customer(stubs.customers, customer.id).name == "Ada"
    assert (
        api.update_customer(
            stubs.customers, customer.id, {"name": "Fresh"}, expected_version=2
        ).version
        == 3
    )


# ---- not found and bad ids ---------------------------------------------------------------


def test_other_merchants_customers_are_not_found(
    stubs: Stubs, two_merchants: tuple[Metadata, Metadata]
) -> None:
    a, b = two_merchants
    customer = api.create_customer(stubs.customers, metadata=a)
    missing = str(uuid.uuid4())

    for call in [
        lambda: api.get_customer(stubs.customers, customer.id, metadata=b),
        lambda: api.update_customer(stubs.customers, customer.id, {"name": "x"}, metadata=b),
        lambda: api.get_customer(stubs.customers, missing, metadata=a),
        lambda: api.update_customer(stubs.customers, missing, {"name": "x"}, metadata=a),
    ]:
        _fails(call, grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")

    assert api.get_customer(stubs.customers, customer.id, metadata=a) == customer
    for customer_id in ["", "nope", "1234"]:
        failure = _invalid(
            lambda c=customer_id: api.get_customer(stubs.customers, c, metadata=a)  # type: ignore[misc]
        )
        assert failure.fields == {"customer_id"}


# ---- idempotency -------------------------------------------------------------------------


def test_retries_return_byte_identical_responses(stubs: Stubs) -> None:
    create = api.create_customer_request(
        marketing_consent=True,
        consent_channel=pb.SALES_CHANNEL_ONLINE,
        external_ids=[api.external_id("webshop", "u-1")],
    )
    created = stubs.customers.CreateCustomer(create, timeout=api.TIMEOUT)
    customer_id = created.customer.id
    update = api.update_customer_request(
        customer_id,
        {"tags": ["vip"], "external_ids": [api.external_id("webshop", "u-2")]},
    )
    updated = stubs.customers.UpdateCustomer(update, timeout=api.TIMEOUT)
    api.update_customer(stubs.customers, customer_id, {"name": "Later"})

    for _ in range(2):
        again = stubs.customers.CreateCustomer(create, timeout=api.TIMEOUT)
        assert again.SerializeToString() == created.SerializeToString()
        assert (
            stubs.customers.UpdateCustomer(update, timeout=api.TIMEOUT).SerializeToString()
            == updated.SerializeToString()
        )

    # The retries created nobody: u-1 was released by the update and is free again.
    api.create_customer(stubs.customers, external_ids=[api.external_id("webshop", "u-1")])
    assert api.get_customer(stubs.customers, customer_id).version == created.customer.version + 2
    _fails(
        lambda: api.create_customer(stubs.customers, request_id=create.request_id, name="Other"),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )


# ---- malformed input never breaks the server ---------------------------------------------

CHANNEL = fuzz.INT32.map(pb.SalesChannel.ValueType)


@st.composite
def _external_ids(draw: st.DrawFn, pick: fuzz.Picker) -> list[cpb.ExternalId]:
    valid = st.builds(
        cpb.ExternalId,
        channel=st.sampled_from(["webshop", "marketplace"]),
        external_id=st.sampled_from(["1", "2", "42"]),
    )
    anything = st.builds(cpb.ExternalId, channel=fuzz.TEXT, external_id=fuzz.TEXT)
    return draw(st.lists(pick.of(valid, anything), max_size=3))


@st.composite
def _customer_calls(draw: st.DrawFn, stubs: Stubs, customer_id: str) -> Callable[[], object]:
    pick = fuzz.Picker(draw)
    rid = pick(st.uuids().map(str), st.uuids().map(str) | fuzz.TEXT)
    target = pick(st.sampled_from([customer_id, str(uuid.uuid4())]), fuzz.UUIDISH)
    name = pick(st.just("Ada"), fuzz.TEXT)
    email = pick(st.sampled_from(["", "ada@example.com", "a@b.co"]), fuzz.TEXT)
    phone = pick(st.sampled_from(["", "+4915112345678"]), fuzz.TEXT)
    consent = draw(st.booleans())
    channel = pick(st.sampled_from([0, 1, 2]).map(pb.SalesChannel.ValueType), CHANNEL)
    tags = draw(st.lists(pick.of(st.just("vip"), fuzz.TEXT), max_size=3))
    external_ids = draw(_external_ids(pick))
    kind = draw(st.sampled_from(["create", "update", "get"]))
    if kind == "create":
        create = cpb.CreateCustomerRequest(
            request_id=rid,
            name=name,
            email=email,
            phone=phone,
            marketing_consent=consent,
            consent_channel=channel,
            tags=tags,
            external_ids=external_ids,
        )
        return lambda: stubs.customers.CreateCustomer(create, timeout=api.TIMEOUT)
    if kind == "update":
        update = cpb.UpdateCustomerRequest(
            request_id=rid,
            customer_id=target,
            customer=cpb.CustomerFields(
                name=name,
                email=email,
                phone=phone,
                marketing_consent=consent,
                tags=tags,
                external_ids=external_ids,
            ),
            consent_channel=channel,
        )
        valid_mask = st.lists(st.sampled_from(list(cpb.CustomerFields.DESCRIPTOR.fields_by_name)))
        update.update_mask.paths.extend(pick(valid_mask, fuzz.MASK))
        fuzz.set_version(update, pick(st.none() | st.integers(1, 4), fuzz.VERSION))
        return lambda: stubs.customers.UpdateCustomer(update, timeout=api.TIMEOUT)
    get = cpb.GetCustomerRequest(customer_id=target)
    return lambda: stubs.customers.GetCustomer(get, timeout=api.TIMEOUT)


def test_malformed_customer_requests_never_answer_internal_or_unknown(stubs: Stubs) -> None:
    customer = api.create_customer(stubs.customers)

    fuzz.never_internal(_customer_calls(stubs, customer.id))
