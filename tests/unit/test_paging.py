"""Keyset pages: a query asks for one row more than the page holds, to know if another follows."""

from __future__ import annotations

import pytest

from ledger.domain.errors import InvalidRequest
from projections import paging

ROWS = [{"sku": f"SKU-{i}", "name": f"Item {i}"} for i in range(4)]


def test_a_full_page_names_its_last_row_in_the_token() -> None:
    rows, token = paging.page_of("products", ROWS, 3, ["sku"])
    assert rows == ROWS[:3]
    assert paging.decode("products", token, 1, (paging.text,)) == ["SKU-2"]


def test_the_last_page_has_no_token() -> None:
    assert paging.page_of("products", ROWS, 4, ["sku"]) == (ROWS, "")
    assert paging.page_of("products", [], 4, ["sku"]) == ([], "")


def test_a_token_is_refused_by_another_listing() -> None:
    _, token = paging.page_of("products", ROWS, 1, ["sku"])
    with pytest.raises(InvalidRequest):
        paging.decode("customers", token, 1, (paging.text,))
