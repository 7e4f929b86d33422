"""Card numbers never get in: every string of every request message and every header is
checked with the one detector (ledger/domain/card_numbers.py) before a servicer runs.

Fields are named by their path in the request (`line_items[2].name`),
headers as `metadata.<name>`. `authorization` is left alone (it is never stored or logged,
and a key's secret is random text) and so are binary (`-bin`) headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ledger.domain.validation import Checks

_UNCHECKED_HEADERS = frozenset({"authorization"})
# Repeated fields of streamed messages whose items the servicer checks one by one.
CHECKED_PER_ITEM = {"/ledger.v1.SalesService/ImportSales": frozenset({"orders"})}


def _check_value(checks: Checks, path: str, field: FieldDescriptor, value: Any) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        checks.no_card_number(path, value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        _check_message(checks, value, f"{path}.")


def _check_message(
    checks: Checks, message: Message, prefix: str, skip: frozenset[str] = frozenset()
) -> None:
    for field, value in message.ListFields():
        if field.name in skip:
            continue
        path = f"{prefix}{field.name}"
        entry_type = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
        if entry_type is not None and entry_type.GetOptions().map_entry:
            key_field = entry_type.fields_by_name["key"]
            value_field = entry_type.fields_by_name["value"]
            # Entries are named by position, never by their key, which may be the problem.
            for i, (key, item) in enumerate(sorted(value.items())):
                if key_field.type == FieldDescriptor.TYPE_STRING:
                    checks.no_card_number(f"{path}[{i}].key", key)
                _check_value(checks, f"{path}[{i}].value", value_field, item)
        elif field.is_repeated:
            for i, item in enumerate(value):
                _check_value(checks, f"{path}[{i}]", field, item)
        else:
            _check_value(checks, path, field, value)


def check_request(message: Message, prefix: str = "", skip: frozenset[str] = frozenset()) -> None:
    """Raises InvalidRequest (CARD_NUMBER_REJECTED) naming every field holding a PAN.

    Fields named in `skip` are left to the servicer, which checks each of their items with
    this same function and refuses only the bad item (the orders of an import).
    """
    checks = Checks()
    _check_message(checks, message, prefix, skip)
    checks.raise_if_any()


def check_headers(metadata: Iterable[tuple[str, str | bytes]]) -> None:
    checks = Checks()
    for key, value in metadata:
        if key in _UNCHECKED_HEADERS or key.endswith("-bin") or not isinstance(value, str):
            continue
        checks.no_card_number(f"metadata.{key}", value)
    checks.raise_if_any()
