"""Money: the one rounding rule (tax per line, half up) and the ISO 4217 currency table."""

from __future__ import annotations

import pytest

from ledger.domain.commands import Channel, LineItemInput
from ledger.domain.money import CURRENCY_EXPONENTS, MAX_AMOUNT, PPM, is_currency, line_tax
from ledger.domain.sale import Sale


@pytest.mark.parametrize(
    ("net_amount", "rate_ppm", "expected"),
    [
        (0, 88_750, 0),
        (1000, 0, 0),
        (1000, 88_750, 89),  # 88.75 -> 89
        (900, 88_750, 80),  # 79.875 -> 80
        (1, 500_000, 1),  # exactly half a minor unit rounds up
        (3, 500_000, 2),  # 1.5 -> 2 (half up, not half to even)
        (5, 500_000, 3),  # 2.5 -> 3 (half to even would give 2)
        (1, 499_999, 0),  # just under half rounds down
        (1, 500_001, 1),
        (10, 50_000, 1),  # 0.5 -> 1
        (9, 50_000, 0),  # 0.45 -> 0
        (12_345, PPM, 12_345),  # 100 %
        (MAX_AMOUNT, PPM, MAX_AMOUNT),  # no float precision loss at the top of the range
        (MAX_AMOUNT, 1, 1_000_000_000),
        (MAX_AMOUNT - 1, 88_750, 88_750_000_000_000),  # ...999.91125 rounds up
        (MAX_AMOUNT - 7, 88_750, 88_749_999_999_999),  # ...999.37875 rounds down
    ],
)
def test_line_tax_rounds_half_up_to_the_minor_unit(
    net_amount: int, rate_ppm: int, expected: int
) -> None:
    assert line_tax(net_amount, rate_ppm) == expected


def test_line_tax_is_exact_integer_arithmetic() -> None:
    # A float computation of 0.145 * 100 gives 14.499999..., which would round to 14.
    assert line_tax(100, 145_000) == 15
    assert isinstance(line_tax(100, 145_000), int)


@pytest.mark.parametrize(("net_amount", "rate_ppm"), [(-1, 0), (0, -1), (-100, 88_750)])
def test_line_tax_refuses_negative_inputs(net_amount: int, rate_ppm: int) -> None:
    with pytest.raises(AssertionError):
        line_tax(net_amount, rate_ppm)


def _sale(*items: LineItemInput) -> Sale:
    return Sale.create(
        merchant_id="merchant-1",
        location_id="store-1",
        channel=Channel.IN_STORE,
        currency_code="USD",
        line_items=items,
    )


def test_tax_is_rounded_per_line_and_totals_are_plain_sums() -> None:
    # Each line: 5 x 10 % = 0.5 -> 1. Rounding the sum instead would give 1.0 -> 1, not 2.
    item = LineItemInput(sku="gum", name="Gum", quantity=1, unit_price=5, tax_rate_ppm=100_000)
    sale = _sale(item, item)
    assert [line.tax_amount for line in sale.line_items] == [1, 1]
    assert sale.tax_total == 2
    assert sale.total == 12


def test_tax_applies_to_the_discounted_line_amount() -> None:
    item = LineItemInput(
        sku="mug", name="Mug", quantity=2, unit_price=500, discount=100, tax_rate_ppm=88_750
    )
    (line,) = _sale(item).line_items
    assert line.gross_amount == 1000
    assert line.tax_amount == 80  # 8.875 % of 900 = 79.875
    assert line.total_amount == 980


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("CLP", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("TND", 3),
        ("CLF", 4),
    ],
)
def test_currency_table_knows_the_minor_unit_exponent(code: str, exponent: int) -> None:
    assert is_currency(code)
    assert CURRENCY_EXPONENTS[code] == exponent


@pytest.mark.parametrize(
    "code",
    [
        "",
        "usd",  # codes are upper case
        "Usd",
        "US",
        "USDD",
        " USD",
        "XXX",  # "no currency"
        "XAU",  # gold is not money a till takes
        "ZZZ",
        "DEM",  # withdrawn
    ],
)
def test_unknown_currency_codes_are_not_currencies(code: str) -> None:
    assert not is_currency(code)
    assert code not in CURRENCY_EXPONENTS


def test_currency_table_is_well_formed() -> None:
    assert len(CURRENCY_EXPONENTS) > 150
    for code, exponent in CURRENCY_EXPONENTS.items():
        assert len(code) == 3
        assert code.isascii()
        assert code.isalpha()
        assert code.isupper()
        assert exponent in {0, 2, 3, 4}


def test_max_amount_leaves_room_for_sums_in_int64() -> None:
    assert MAX_AMOUNT == 10**15
    assert 9000 * MAX_AMOUNT < 2**63 - 1
