"""Hypothesis strategies for malformed wire values, shared by the fuzz tests of the new
services (catalog, customers, inventory, imports)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e import api_client as api

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
UINT32 = st.integers(min_value=0, max_value=2**32 - 1)
# Small numbers hit the interesting edges (0, 1, -1) far more often than INT64 does.
SMALL = st.integers(min_value=-3, max_value=3)
NUMBER = st.one_of(SMALL, INT64, st.sampled_from([10**9, 10**9 + 1, 10**15, 10**15 + 1]))
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=10),
    st.sampled_from(
        ["", " ", "\x00", "x" * 5000, "4111111111111111", "USD", "webshop", "a@b.co", "+4930123"]
    ),
)
UUIDISH = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper()), st.just(""), TEXT)
VERSION = st.none() | st.sampled_from([0, 1, 2, 99]) | INT64
MASK = st.lists(
    st.sampled_from(
        [
            "name",
            "price",
            "currency_code",
            "tax_rate_ppm",
            "barcode",
            "category",
            "email",
            "phone",
            "marketing_consent",
            "tags",
            "external_ids",
            "sku",
            "id",
            "product.price",
            "",
        ]
    )
    | TEXT,
    max_size=4,
)

T = TypeVar("T")


class Picker:
    """Draws either well-formed values (so a call reaches the ledger's rules) or anything.

    Each example is wild or not as a whole: with every field wild, a call would almost never
    get past validation to the rules (pricing, stock, consent) that can still break.
    """

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        # Hypothesis favours small draws (and shrinks towards them): well-formed is 0.
        self.wild = draw(st.integers(0, 2)) == 2  # about one example in three is wild

    def of(
        self, valid: st.SearchStrategy[T], anything: st.SearchStrategy[T]
    ) -> st.SearchStrategy[T]:
        return anything if self.wild else valid

    def __call__(self, valid: st.SearchStrategy[T], anything: st.SearchStrategy[T]) -> T:
        return self.draw(self.of(valid, anything))


EXPECTED_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
}


def set_version(request: Any, version: int | None) -> None:
    if version is not None:
        request.expected_version = version


def never_internal(
    calls: st.SearchStrategy[Callable[[], object]], *, max_examples: int = 150
) -> None:
    """Runs random calls: each succeeds or fails with an expected code, reason and details."""

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(call=calls)
    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except grpc.RpcError as error:
            failure = api.failure(error)
            assert failure.code in EXPECTED_CODES, failure
            assert failure.reason, f"{failure.code} without an ErrorInfo reason"
            if failure.code == grpc.StatusCode.INVALID_ARGUMENT:
                assert failure.violations, failure

    run()
