"""CatalogService over the wire, and sale line items priced from the catalog."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
from hypothesis import strategies as st

from ledger.v1 import catalog_pb2 as cpb
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


def _catalog_line(sku: str = "COF-250", **overrides: Any) -> pb.LineItemInput:
    """A line naming a sku and no price: the catalog prices it."""
    fields: dict[str, Any] = {"sku": sku, "name": "Coffee", "quantity": 1}
    fields.update(overrides)
    return pb.LineItemInput(**fields)


# ---- create and get ----------------------------------------------------------------------


def test_create_then_get_by_id_and_by_sku(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)

    assert uuid.UUID(product.id)
    assert product.version == 1
    assert (product.sku, product.name, product.category) == (
        "COF-250",
        "Coffee beans 250 g",
        "coffee",
    )
    assert (product.price, product.currency_code, product.tax_rate_ppm) == (1250, "USD", 88750)
    assert product.barcode == "4006381333931"
    assert product.status == cpb.PRODUCT_STATUS_ACTIVE
    assert product.discontinue_reason == ""
    assert product.HasField("created_at")
    assert product.updated_at == product.created_at
    assert api.get_product(stubs.catalog, product_id=product.id) == product
    assert api.get_product(stubs.catalog, product_id=product.id.upper()) == product
    assert api.get_product(stubs.catalog, sku="COF-250") == product


def test_optional_fields_may_be_left_out(stubs: Stubs) -> None:
    product = api.create_product(
        stubs.catalog, sku="FREE", price=0, tax_rate_ppm=0, barcode="", category=""
    )

    assert (product.price, product.tax_rate_ppm, product.barcode, product.category) == (
        0,
        0,
        "",
        "",
    )


def test_sku_is_unique_per_merchant(stubs: Stubs, two_merchants: tuple[Metadata, Metadata]) -> None:
    a, b = two_merchants
    mine = api.create_product(stubs.catalog, metadata=a)

    failure = _fails(
        lambda: api.create_product(stubs.catalog, metadata=a, name="Other", price=1),
        grpc.StatusCode.ALREADY_EXISTS,
        "SKU_TAKEN",
    )

    assert "COF-250" in failure.message
    assert api.get_product(stubs.catalog, sku="COF-250", metadata=a) == mine
    # Skus are per merchant: another merchant may use the same one for its own product.
    theirs = api.create_product(stubs.catalog, metadata=b, price=999)
    assert theirs.id != mine.id
    assert api.get_product(stubs.catalog, sku="COF-250", metadata=b).price == 999
    assert api.get_product(stubs.catalog, sku="COF-250", metadata=a).price == 1250


def test_create_product_field_violations(stubs: Stubs) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"sku": ""}, "sku"),
        ({"sku": "-starts-with-dash"}, "sku"),
        ({"sku": "has space"}, "sku"),
        ({"sku": "S" * 65}, "sku"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"price": -1}, "price"),
        ({"price": 10**15 + 1}, "price"),
        ({"currency_code": ""}, "currency_code"),
        ({"currency_code": "usd"}, "currency_code"),
        ({"currency_code": "ZZZ"}, "currency_code"),
        ({"tax_rate_ppm": 1_000_001}, "tax_rate_ppm"),
        ({"barcode": "400 638"}, "barcode"),
        ({"barcode": "b" * 65}, "barcode"),
        ({"category": "c" * 101}, "category"),
        ({"category": "bell\x07"}, "category"),
        ({"request_id": ""}, "request_id"),
    ]
    for overrides, field in cases:
        failure = _invalid(lambda o=overrides: api.create_product(stubs.catalog, **o))  # type: ignore[misc]
        assert failure.fields == {field}, (overrides, failure)

    unknown = _invalid(lambda: api.create_product(stubs.catalog, currency_code="ZZZ"))
    assert unknown.reason == "UNKNOWN_CURRENCY"
    assert unknown.violation("currency_code").reason == "UNKNOWN_CURRENCY"


def test_every_bad_field_of_a_product_is_reported_at_once(stubs: Stubs) -> None:
    failure = _invalid(
        lambda: api.create_product(
            stubs.catalog,
            sku="",
            name="",
            price=-5,
            currency_code="XQZ",
            tax_rate_ppm=2_000_000,
            barcode="a b",
        )
    )

    assert failure.fields == {"sku", "name", "price", "currency_code", "tax_rate_ppm", "barcode"}
    assert failure.reason == "INVALID_ARGUMENT"  # violations of different reasons
    assert failure.violation("sku").description == "is required"
    assert api.expect_failure(lambda: api.get_product(stubs.catalog, sku="X")).code == (
        grpc.StatusCode.NOT_FOUND
    )


# ---- update ------------------------------------------------------------------------------


def test_update_changes_only_the_masked_fields(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)

    # `name` is set in the message but not masked: it must not change.
    priced = api.update_product(
        stubs.catalog, product.id, {"price": 1400, "name": "ignored"}, paths=["price"]
    )

    assert priced.price == 1400
    assert priced.name == product.name
    assert priced.version == 2
    assert priced.created_at == product.created_at
    assert priced.updated_at.ToDatetime() >= product.updated_at.ToDatetime()

    # Several paths at once; a masked field left at its zero value is cleared.
    renamed = api.update_product(
        stubs.catalog,
        product.id,
        {"name": "Beans", "barcode": "", "category": "", "tax_rate_ppm": 0},
    )

    assert (renamed.name, renamed.barcode, renamed.category) == ("Beans", "", "")
    assert (renamed.price, renamed.tax_rate_ppm, renamed.sku) == (1400, 0, "COF-250")
    assert renamed.version == 3
    assert api.get_product(stubs.catalog, product_id=product.id) == renamed


def test_update_to_the_current_values_records_nothing(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)

    same = api.update_product(stubs.catalog, product.id, {"price": 1250, "name": product.name})

    assert same == product


def test_currency_can_change_with_the_price(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)

    euro = api.update_product(stubs.catalog, product.id, {"price": 1100, "currency_code": "EUR"})

    assert (euro.price, euro.currency_code) == (1100, "EUR")


def test_stale_expected_version_is_aborted(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)
    api.update_product(stubs.catalog, product.id, {"price": 1300}, expected_version=1)

    for call in [
        lambda: api.update_product(stubs.catalog, product.id, {"price": 1}, expected_version=1),
        lambda: api.update_product(stubs.catalog, product.id, {"price": 1}, expected_version=9),
        lambda: api.discontinue_product(stubs.catalog, product.id, expected_version=1),
    ]:
        failure = _fails(call, grpc.StatusCode.ABORTED, "VERSION_CONFLICT")
        assert "version" in failure.message

    current = api.get_product(stubs.catalog, product_id=product.id)
    assert (current.version, current.price, current.status) == (2, 1300, cpb.PRODUCT_STATUS_ACTIVE)
    updated = api.update_product(stubs.catalog, product.id, {"price": 1}, expected_version=2)
    assert updated.version == 3
    for version in (0, -1):
        failure = _invalid(
            lambda v=version: api.update_product(  # type: ignore[misc]
                stubs.catalog, product.id, {"price": 2}, expected_version=v
            )
        )
        assert failure.fields == {"expected_version"}


def test_update_product_field_violations(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)
    cases: list[tuple[dict[str, Any], list[str] | None, set[str]]] = [
        ({}, [], {"update_mask"}),
        ({"price": 5}, [], {"update_mask"}),
        ({}, ["sku"], {"update_mask"}),
        ({}, ["id"], {"update_mask"}),
        ({"price": 5}, ["product.price"], {"update_mask"}),
        ({}, ["nonsense"], {"update_mask"}),
        ({"price": -1}, None, {"product.price"}),
        ({"currency_code": "ZZZ"}, None, {"product.currency_code"}),
        ({"currency_code": ""}, None, {"product.currency_code"}),
        ({"name": ""}, None, {"product.name"}),
        ({"tax_rate_ppm": 1_000_001}, None, {"product.tax_rate_ppm"}),
        ({"barcode": "1 2"}, None, {"product.barcode"}),
        ({"category": "c" * 101}, None, {"product.category"}),
        (
            {"price": -1, "name": "", "currency_code": "EURO"},
            None,
            {"product.price", "product.name", "product.currency_code"},
        ),
    ]
    for changes, paths, fields in cases:
        failure = _invalid(
            lambda c=changes, p=paths: api.update_product(stubs.catalog, product.id, c, p)  # type: ignore[misc]
        )
        assert failure.fields == fields, (changes, paths, failure)

    assert _invalid(lambda: api.update_product(stubs.catalog, "nope", {"price": 1})).fields == {
        "product_id"
    }
    assert api.get_product(stubs.catalog, product_id=product.id) == product


# ---- discontinue -------------------------------------------------------------------------


def test_discontinued_product_stays_readable_and_frozen(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)

    gone = api.discontinue_product(stubs.catalog, product.id, reason="recalled")

    assert gone.status == cpb.PRODUCT_STATUS_DISCONTINUED
    assert (gone.discontinue_reason, gone.version) == ("recalled", 2)
    assert api.get_product(stubs.catalog, sku="COF-250") == gone
    # Discontinuing again is accepted and changes nothing.
    again = api.discontinue_product(stubs.catalog, product.id, reason="again")
    assert again == gone
    _fails(
        lambda: api.update_product(stubs.catalog, product.id, {"price": 1}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "PRODUCT_DISCONTINUED",
    )
    # The sku stays taken: a product's id derives from it.
    _fails(
        lambda: api.create_product(stubs.catalog),
        grpc.StatusCode.ALREADY_EXISTS,
        "SKU_TAKEN",
    )
    assert _invalid(
        lambda: api.discontinue_product(stubs.catalog, product.id, reason="r" * 501)
    ).fields == {"reason"}
    assert _invalid(lambda: api.discontinue_product(stubs.catalog, "")).fields == {"product_id"}


# ---- not found and bad ids ---------------------------------------------------------------


def test_other_merchants_products_are_not_found(
    stubs: Stubs, two_merchants: tuple[Metadata, Metadata]
) -> None:
    a, b = two_merchants
    product = api.create_product(stubs.catalog, metadata=a)
    missing = str(uuid.uuid4())

    for call in [
        lambda: api.get_product(stubs.catalog, product_id=product.id, metadata=b),
        lambda: api.get_product(stubs.catalog, sku=product.sku, metadata=b),
        lambda: api.update_product(stubs.catalog, product.id, {"price": 1}, metadata=b),
        lambda: api.discontinue_product(stubs.catalog, product.id, metadata=b),
        lambda: api.get_product(stubs.catalog, product_id=missing, metadata=a),
        lambda: api.get_product(stubs.catalog, sku="NOT-THERE", metadata=a),
        lambda: api.update_product(stubs.catalog, missing, {"price": 1}, metadata=a),
        lambda: api.discontinue_product(stubs.catalog, missing, metadata=a),
    ]:
        _fails(call, grpc.StatusCode.NOT_FOUND, "PRODUCT_NOT_FOUND")

    assert api.get_product(stubs.catalog, product_id=product.id, metadata=a) == product


def test_bad_lookups_are_invalid_not_missing(stubs: Stubs) -> None:
    for product_id in ["nope", "1234", str(uuid.uuid4())[:-1]]:
        failure = _invalid(lambda p=product_id: api.get_product(stubs.catalog, product_id=p))  # type: ignore[misc]
        assert failure.fields == {"product_id"}
    # No lookup at all reads as an empty product id.
    failure = _invalid(
        lambda: stubs.catalog.GetProduct(cpb.GetProductRequest(), timeout=api.TIMEOUT)
    )
    assert failure.fields == {"product_id"}
    for sku in ["", "bad sku", "-x"]:
        failure = _invalid(lambda s=sku: api.get_product(stubs.catalog, sku=s))  # type: ignore[misc]
        assert failure.fields == {"sku"}


# ---- idempotency -------------------------------------------------------------------------


def test_retries_return_byte_identical_responses(stubs: Stubs) -> None:
    create = api.create_product_request()
    created = stubs.catalog.CreateProduct(create, timeout=api.TIMEOUT)
    product_id = created.product.id
    update = api.update_product_request(product_id, {"price": 1500})
    updated = stubs.catalog.UpdateProduct(update, timeout=api.TIMEOUT)
    discontinue = api.discontinue_product_request(product_id)
    discontinued = stubs.catalog.DiscontinueProduct(discontinue, timeout=api.TIMEOUT)

    # Each retry answers as the first call did, even though the product moved on since.
    for _ in range(2):
        retried_create = stubs.catalog.CreateProduct(create, timeout=api.TIMEOUT)
        retried_update = stubs.catalog.UpdateProduct(update, timeout=api.TIMEOUT)
        retried_discontinue = stubs.catalog.DiscontinueProduct(discontinue, timeout=api.TIMEOUT)
        assert retried_create.SerializeToString() == created.SerializeToString()
        assert retried_update.SerializeToString() == updated.SerializeToString()
        assert retried_discontinue.SerializeToString() == discontinued.SerializeToString()

    assert created.product.version == 1
    assert updated.product.version == 2
    assert api.get_product(stubs.catalog, product_id=product_id).version == 3
    for call in [
        lambda: api.create_product(stubs.catalog, request_id=create.request_id, sku="OTHER"),
        lambda: api.update_product(
            stubs.catalog, product_id, {"price": 1600}, request_id=update.request_id
        ),
        lambda: api.update_product(
            stubs.catalog, product_id, {"price": 1500}, request_id=create.request_id
        ),
    ]:
        _fails(call, grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    _fails(
        lambda: api.get_product(stubs.catalog, sku="OTHER"),
        grpc.StatusCode.NOT_FOUND,
        "PRODUCT_NOT_FOUND",
    )


# ---- sales priced from the catalog -------------------------------------------------------


def test_sale_lines_take_price_and_tax_from_the_catalog(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)  # 1250 + 8.875 %

    sale = api.create_sale(
        stubs.sales,
        line_items=[
            _catalog_line(quantity=2),
            _catalog_line(unit_price=999),  # its own price, the catalog's tax rate
            _catalog_line(tax_rate_ppm=0),  # the catalog's price, its own tax rate
            api.line_item(sku="OPEN-1", unit_price=500),  # an open item
        ],
    )

    lines = [(i.unit_price, i.tax_rate_ppm, i.product_id) for i in sale.line_items]
    assert lines == [
        (1250, 88750, product.id),
        (999, 88750, product.id),
        (1250, 0, product.id),
        (500, 0, ""),
    ]
    assert (sale.line_items[0].gross_amount, sale.line_items[0].tax_amount) == (2500, 222)
    assert sale.total == 2500 + 222 + 999 + 89 + 1250 + 500

    added = api.add_line_item(stubs.sales, sale.id, line_item=_catalog_line(quantity=3))
    line = next(i for i in added.sale.line_items if i.line_id == added.line_id)
    assert (line.unit_price, line.tax_rate_ppm, line.product_id) == (1250, 88750, product.id)

    # A later price change leaves existing lines alone and prices new ones.
    api.update_product(stubs.catalog, product.id, {"price": 2000})
    repriced = api.add_line_item(stubs.sales, sale.id, line_item=_catalog_line())
    prices = [i.unit_price for i in repriced.sale.line_items]
    assert prices == [1250, 999, 1250, 500, 1250, 2000]
    assert api.get_sale(stubs.sales, sale.id) == repriced.sale


def test_sale_retried_after_a_price_change_answers_as_first_priced(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)
    request = api.create_sale_request(line_items=[_catalog_line(quantity=2)])
    first = stubs.sales.CreateSale(request, timeout=api.TIMEOUT)

    api.update_product(stubs.catalog, product.id, {"price": 9999})
    again = stubs.sales.CreateSale(request, timeout=api.TIMEOUT)

    assert again.SerializeToString() == first.SerializeToString()
    assert again.sale.line_items[0].unit_price == 1250


def test_unknown_sku_without_a_price_is_refused(
    stubs: Stubs, two_merchants: tuple[Metadata, Metadata]
) -> None:
    a, b = two_merchants
    api.create_product(stubs.catalog, metadata=a)
    sale = api.create_sale(stubs.sales, metadata=b)

    for call in [
        lambda: api.create_sale(stubs.sales, metadata=b, line_items=[_catalog_line("NOPE")]),
        lambda: api.add_line_item(
            stubs.sales, sale.id, metadata=b, line_item=_catalog_line("NOPE")
        ),
        # Another merchant's catalog is not this merchant's catalog.
        lambda: api.create_sale(stubs.sales, metadata=b, line_items=[_catalog_line()]),
    ]:
        failure = _fails(call, grpc.StatusCode.FAILED_PRECONDITION, "UNKNOWN_SKU")
        assert "unit_price" in failure.message

    assert api.get_sale(stubs.sales, sale.id, metadata=b).version == 1
    # With a price, an unknown sku is an open item.
    open_item = api.create_sale(
        stubs.sales, metadata=b, line_items=[_catalog_line("NOPE", unit_price=10)]
    )
    assert open_item.line_items[0].product_id == ""


def test_discontinued_product_cannot_be_sold(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)
    sale = api.create_sale(stubs.sales, line_items=[_catalog_line()])
    api.discontinue_product(stubs.catalog, product.id)

    for call in [
        lambda: api.create_sale(stubs.sales, line_items=[_catalog_line()]),
        lambda: api.create_sale(stubs.sales, line_items=[_catalog_line(unit_price=100)]),
        lambda: api.add_line_item(stubs.sales, sale.id, line_item=_catalog_line()),
    ]:
        _fails(call, grpc.StatusCode.FAILED_PRECONDITION, "PRODUCT_DISCONTINUED")

    # Lines added before it was discontinued stay, and the sale can still be paid.
    _, payment = api.paid_sale(stubs.sales, line_items=[api.line_item()])
    assert payment.status == pb.PAYMENT_STATUS_APPROVED
    assert api.get_sale(stubs.sales, sale.id).line_items[0].product_id == product.id


def test_a_reactivated_product_sells_again_once_per_request(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)
    api.discontinue_product(stubs.catalog, product.id)
    request = cpb.ReactivateProductRequest(
        request_id=api.new_request_id(), product_id=product.id, reason="back in stock"
    )
    reactivated = stubs.catalog.ReactivateProduct(request, timeout=api.TIMEOUT)
    assert reactivated.product.status == cpb.PRODUCT_STATUS_ACTIVE
    assert reactivated.product.price == product.price  # as it was
    retried = stubs.catalog.ReactivateProduct(request, timeout=api.TIMEOUT)
    assert (retried.product.version, retried.position) == (
        reactivated.product.version,
        reactivated.position,
    )
    sale = api.create_sale(stubs.sales, line_items=[_catalog_line()])
    assert sale.line_items[0].product_id == product.id

    missing = _fails(
        lambda: stubs.catalog.ReactivateProduct(
            cpb.ReactivateProductRequest(
                request_id=api.new_request_id(), product_id=str(uuid.uuid4())
            ),
            timeout=api.TIMEOUT,
        ),
        grpc.StatusCode.NOT_FOUND,
        "PRODUCT_NOT_FOUND",
    )
    assert missing.message
    bad = _invalid(
        lambda: stubs.catalog.ReactivateProduct(
            cpb.ReactivateProductRequest(request_id=api.new_request_id(), product_id="nope"),
            timeout=api.TIMEOUT,
        )
    )
    assert bad.fields == {"product_id"}


def test_catalog_price_in_another_currency_is_refused(stubs: Stubs) -> None:
    api.create_product(stubs.catalog, currency_code="EUR")

    _fails(
        lambda: api.create_sale(stubs.sales, line_items=[_catalog_line()]),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CURRENCY_MISMATCH",
    )

    euro = api.create_sale(stubs.sales, currency_code="EUR", line_items=[_catalog_line()])
    assert euro.line_items[0].unit_price == 1250
    # A line with its own price needs no conversion.
    usd = api.create_sale(stubs.sales, line_items=[_catalog_line(unit_price=1300)])
    assert usd.line_items[0].unit_price == 1300


def test_discount_beyond_the_catalog_line_amount_is_refused(stubs: Stubs) -> None:
    api.create_product(stubs.catalog, price=100)
    sale = api.create_sale(stubs.sales)

    for call in [
        lambda: api.create_sale(stubs.sales, line_items=[_catalog_line(discount=201, quantity=2)]),
        lambda: api.add_line_item(stubs.sales, sale.id, line_item=_catalog_line(discount=2**62)),
    ]:
        _fails(call, grpc.StatusCode.FAILED_PRECONDITION, "DISCOUNT_EXCEEDS_LINE")

    whole = api.create_sale(stubs.sales, line_items=[_catalog_line(discount=200, quantity=2)])
    assert (whole.line_items[0].discount, whole.total) == (200, 0)


# ---- malformed input never breaks the server ---------------------------------------------


@st.composite
def _catalog_calls(
    draw: st.DrawFn, stubs: Stubs, product_id: str, gone_id: str, sale_id: str
) -> Callable[[], object]:
    pick = fuzz.Picker(draw)
    target = pick(
        st.sampled_from([product_id, product_id.upper(), str(uuid.uuid4())]), fuzz.UUIDISH
    )
    rid = pick(st.uuids().map(str), st.uuids().map(str) | fuzz.TEXT)
    sku = pick(st.sampled_from(["COF-250", "GONE-1", "NEW-1", "NOPE"]), fuzz.TEXT)
    name = pick(st.just("Coffee"), fuzz.TEXT)
    price = pick(st.integers(0, 10**15), fuzz.NUMBER)
    currency = pick(st.sampled_from(["USD", "EUR", "JPY"]), fuzz.TEXT)
    tax = pick(st.integers(0, 10**6), fuzz.UINT32)
    kind = draw(st.sampled_from(["create", "update", "discontinue", "get", "sell", "sell"]))
    if kind == "create":
        create = cpb.CreateProductRequest(
            request_id=rid,
            sku=sku,
            name=name,
            price=price,
            currency_code=currency,
            tax_rate_ppm=tax,
            barcode=pick(st.just("4006381333931"), fuzz.TEXT),
            category=pick(st.just("coffee"), fuzz.TEXT),
        )
        return lambda: stubs.catalog.CreateProduct(create, timeout=api.TIMEOUT)
    if kind == "update":
        update = cpb.UpdateProductRequest(
            request_id=rid,
            product_id=target,
            product=cpb.ProductFields(
                name=name,
                price=price,
                currency_code=currency,
                tax_rate_ppm=tax,
                barcode=pick(st.just(""), fuzz.TEXT),
                category=pick(st.just("tea"), fuzz.TEXT),
            ),
        )
        valid_mask = st.lists(st.sampled_from(list(cpb.ProductFields.DESCRIPTOR.fields_by_name)))
        update.update_mask.paths.extend(pick(valid_mask, fuzz.MASK))
        fuzz.set_version(update, pick(st.none() | st.integers(1, 4), fuzz.VERSION))
        return lambda: stubs.catalog.UpdateProduct(update, timeout=api.TIMEOUT)
    if kind == "discontinue":
        # Never the product the sales name: once discontinued, no sale would get priced.
        discontinue = cpb.DiscontinueProductRequest(
            request_id=rid,
            product_id=pick(st.sampled_from([gone_id, str(uuid.uuid4())]), fuzz.UUIDISH),
            reason=pick(st.just("gone"), fuzz.TEXT),
        )
        fuzz.set_version(discontinue, pick(st.none() | st.integers(1, 4), fuzz.VERSION))
        return lambda: stubs.catalog.DiscontinueProduct(discontinue, timeout=api.TIMEOUT)
    if kind == "get":
        get = cpb.GetProductRequest()
        lookup = draw(st.sampled_from(["id", "sku", "none"]))
        if lookup == "id":
            get.product_id = target
        elif lookup == "sku":
            get.sku = sku
        return lambda: stubs.catalog.GetProduct(get, timeout=api.TIMEOUT)
    # Lines naming catalog skus, so that pricing from the catalog is exercised.
    line = pb.LineItemInput(
        sku=sku,
        name=name,
        quantity=pick(st.integers(1, 5) | st.integers(1, 10_000), fuzz.SMALL | fuzz.INT32),
        discount=pick(st.integers(0, 5000) | st.integers(0, 2**63 - 1), fuzz.NUMBER),
    )
    if draw(st.booleans()):
        line.unit_price = price
    if draw(st.booleans()):
        line.tax_rate_ppm = tax
    if draw(st.booleans()):
        sell = api.create_sale_request(request_id=rid, currency_code=currency, line_items=[line])
        return lambda: stubs.sales.CreateSale(sell, timeout=api.TIMEOUT)
    add = api.add_line_item_request(sale_id, request_id=rid, line_item=line)
    return lambda: stubs.sales.AddLineItem(add, timeout=api.TIMEOUT)


def test_malformed_catalog_requests_never_answer_internal_or_unknown(stubs: Stubs) -> None:
    product = api.create_product(stubs.catalog)
    gone = api.create_product(stubs.catalog, sku="GONE-1")
    api.discontinue_product(stubs.catalog, gone.id)
    sale = api.create_sale(stubs.sales)

    fuzz.never_internal(_catalog_calls(stubs, product.id, gone.id, sale.id))


@st.composite
def _catalog_priced_lines(draw: st.DrawFn, stubs: Stubs, sale_id: str) -> Callable[[], object]:
    """A well-formed line naming a catalog sku, with hostile quantities and amounts."""
    line = pb.LineItemInput(
        sku=draw(st.sampled_from(["COF-250", "BIG", "FREE", "EURO", "GONE-1", "NOPE"])),
        name="Coffee",
        quantity=draw(st.integers(1, 5) | st.integers(1, 10_000)),
        discount=draw(st.integers(0, 5000) | st.integers(0, 2**63 - 1)),
    )
    if draw(st.booleans()):
        line.unit_price = draw(st.integers(0, 2000) | st.integers(0, 10**15))
    if draw(st.booleans()):
        line.tax_rate_ppm = draw(st.integers(0, 10**6))
    if draw(st.booleans()):
        sell = api.create_sale_request(line_items=[line])
        return lambda: stubs.sales.CreateSale(sell, timeout=api.TIMEOUT)
    add = api.add_line_item_request(sale_id, line_item=line)
    return lambda: stubs.sales.AddLineItem(add, timeout=api.TIMEOUT)


def test_catalog_priced_lines_never_answer_internal(stubs: Stubs) -> None:
    api.create_product(stubs.catalog)
    api.create_product(stubs.catalog, sku="BIG", price=10**15)
    api.create_product(stubs.catalog, sku="FREE", price=0)
    api.create_product(stubs.catalog, sku="EURO", currency_code="EUR")
    gone = api.create_product(stubs.catalog, sku="GONE-1")
    api.discontinue_product(stubs.catalog, gone.id)
    sale = api.create_sale(stubs.sales)

    fuzz.never_internal(_catalog_priced_lines(stubs, sale.id), max_examples=100)
