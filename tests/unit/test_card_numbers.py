"""The one card-number detector: what it catches, and the identifiers it leaves alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain import card_numbers as cn
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


def _read_in_full(text: str) -> bool:
    """The detector without its shortcuts: every string decoded, then its digit runs read."""
    decoded = cn._decoded(text)
    decoded = cn._E164_IN_TEXT.sub(" x ", cn._UUID.sub(" x ", decoded))
    return any(cn._run_has_card_number(groups) for groups in cn._runs(decoded))


_ASCII = st.characters(min_codepoint=32, max_codepoint=126)
_CARDLIKE = st.from_regex(r"[0-9 ./_%&#;+a-f-]{8,48}", fullmatch=True)


def _luhn_completed(body: str) -> str:
    return next(body + d for d in "0123456789" if cn._luhn_ok(body + d))


@st.composite
def _written_cards(draw: st.DrawFn) -> str:
    """A Luhn-valid number of 13 to 19 digits, in groups, inside other text."""
    card = _luhn_completed(draw(st.text("0123456789", min_size=12, max_size=18)))
    size = draw(st.integers(1, 6))
    separator = draw(st.sampled_from(["", " ", "-", ".", "  ", "_", "%20", "&nbsp;"]))
    groups = [card[i : i + size] for i in range(0, len(card), size)]
    around = st.text(_ASCII, max_size=8)
    return draw(around) + separator.join(groups) + draw(around)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(_ASCII, max_size=64),
        _CARDLIKE,
        _written_cards(),
        st.uuids().map(str),
        st.text(max_size=40),
    )
)
def test_the_shortcuts_decide_as_reading_in_full(text: str) -> None:
    # The fast paths (too few digits; plain ASCII needs no decoding) must never change a verdict.
    assert looks_like_card_number(text) == _read_in_full(text)


@pytest.mark.parametrize("text", [VISA, AMEX, "4111 1111 1111 1111", "4111%201111%201111%201111"])
def test_the_reading_in_full_catches_what_the_detector_does(text: str) -> None:
    assert _read_in_full(text)
    assert looks_like_card_number(text)
