"""The one card-number detector: what it catches, and the identifiers it leaves alone."""

from __future__ import annotations

import pytest

from ledger.domain.card_numbers import REDACTED, looks_like_card_number, redacted

VISA = "4111111111111111"
AMEX = "378282246310005"


@pytest.mark.parametrize(
    "text",
    [
        VISA,
        AMEX,
        "4222222222222",  # 13 digits
        "6011000990139424",
        "4111 1111 1111 1111",
        "4111  1111  1111  1111",
        "4111\u00a01111\u00a01111\u00a01111",
        "4111\u20091111\u20091111\u20091111",  # thin spaces
        "4111-1111-1111-1111",
        "4111\u20131111\u20141111\u20121111",  # en, em and figure dashes
        "4111.1111.1111.1111",
        "4111_1111_1111_1111",
        "4111/1111/1111/1111",
        "4111\\1111\\1111\\1111",
        "4111 - 1111 . 1111 _ 1111",
        "4111%201111%201111%201111",
        "4111%25201111%25201111%25201111",
        "%34%31%31%31%31%31%31%31%31%31%31%31%31%31%31%31",
        "4111&#32;1111&#32;1111&#32;1111",
        "\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11",
        "4111\u200b1111\u200b1111\u200b1111",
        "card 4111 1111 1111 1111 exp 12/27",
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        "00004111111111111111",
        "order4111111111111111x",
        "+4111111111111111",  # too long for E.164
    ],
)
def test_card_numbers_are_caught_however_written(text: str) -> None:
    assert looks_like_card_number(text)
    assert redacted(text) == REDACTED


@pytest.mark.parametrize(
    "text",
    [
        "",
        "550e8400-e29b-41d4-a716-446655440000",
        "12973f62-a2c9-493a-ab75-291651054400",  # its 75291651054400 passes Luhn
        "+4915112345678",
        "call +4915112345678 after 6",
        "2026-12-01 10:30:15",
        "Table 12, 2 coffees at 3.50",
        "4111 1111 1111 1112",  # fails Luhn
        "411111111111",  # 12 digits
        "COF-250",
    ],
)
def test_identifiers_and_ordinary_text_pass(text: str) -> None:
    assert not looks_like_card_number(text)
    assert redacted(text) == text


def test_a_gtin_is_a_barcode_only_in_a_barcode_field() -> None:
    gtin = "4006381333924"  # valid GS1 check digit, and Luhn-valid too
    assert looks_like_card_number(gtin)
    assert not looks_like_card_number(gtin, "barcode")
    assert not looks_like_card_number(gtin, "product.barcode")
    assert looks_like_card_number("4006381333908", "barcode")  # Luhn, but no GS1 check digit
    assert looks_like_card_number(VISA, "barcode")  # 16 digits is no GTIN length
