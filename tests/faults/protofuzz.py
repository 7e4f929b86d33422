"""Hypothesis strategies that build any protobuf message from its descriptor.

Every field may be left unset or set to anything its wire type can carry: ints at and past
the ranges the ledger accepts, unknown enum numbers, huge and odd strings, timestamps
outside protobuf's range, long repeated fields. `known` strings (ids of real sales,
payments, …) are mixed in so that some calls get past id parsing to the ledger's rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# The edges a validator is most likely to get wrong, beside anything in range.
EDGES = [0, 1, -1, 2, 99, 10**6, 10**9, 10**12, 10**15 + 1, 2**31 - 1, 2**53 + 1]
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "\t\n",
    "USD",
    "usd",
    "XXX",
    "4111111111111111",
    "https://pos.example.com/callback",
    "file:///etc/passwd",
    "\u202e\u0301",  # right-to-left override, a lone combining mark
    "\U0001f600" * 50,
    "00000000-0000-0000-0000-000000000000",
    "'; DROP TABLE ledger_events; --",
    "%s %(x)s {0}",
]
MAX_DEPTH = 3
F = FieldDescriptor
INTEGER_RANGES = {
    **dict.fromkeys([F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32], INT32),
    **dict.fromkeys([F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64], INT64),
    **dict.fromkeys([F.TYPE_UINT32, F.TYPE_FIXED32], UINT32),
    **dict.fromkeys([F.TYPE_UINT64, F.TYPE_FIXED64], UINT64),
}
# Only in top-level fields, so that a message stays small enough to build quickly.
HUGE_STRINGS = [
    "x" * 10_000,
    "4" * 100_000,  # digits all the way: the card-number scan must stay quick
]
MAX_REPEATED = 12  # a top-level repeated field; deeper ones hold at most 3


def _integers(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    edges = [n for n in EDGES if low <= n <= high] + [low, high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _strings(known: Sequence[str], depth: int) -> st.SearchStrategy[str]:
    options = [st.text(max_size=30), st.sampled_from(ODD_STRINGS)]
    if depth == 0:
        options.append(st.sampled_from(HUGE_STRINGS))
    if known:
        options.append(st.sampled_from(known))
    return st.one_of(options)


def _scalar(field: FieldDescriptor, known: Sequence[str], depth: int) -> st.SearchStrategy[Any]:
    t = field.type
    if t in INTEGER_RANGES:
        return _integers(INTEGER_RANGES[t])
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if t == FieldDescriptor.TYPE_FLOAT:
            return st.floats(width=32)
        return st.floats()
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        # Known numbers often, any int32 (an unknown number on the wire) too.
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), _integers(INT32))
    if t == FieldDescriptor.TYPE_STRING:
        return _strings(known, depth)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    raise AssertionError(f"no strategy for field type {t} of {field.full_name}")


def messages(
    descriptor: Descriptor,
    known: Sequence[str] = (),
    depth: int = 0,
) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`'s type with any subset of their fields set to anything."""
    cls = GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for field in descriptor.fields:
            if not draw(st.booleans()):
                continue
            _set(draw, message, field, known, depth)
        return message

    return build()


def _value(field: FieldDescriptor, known: Sequence[str], depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        return messages(field.message_type, known, depth + 1)
    return _scalar(field, known, depth)


def _set(
    draw: st.DrawFn, message: Message, field: FieldDescriptor, known: Sequence[str], depth: int
) -> None:
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if is_message and depth >= MAX_DEPTH:
        return
    target = getattr(message, field.name)
    if is_message and field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        for _ in range(draw(st.integers(0, 4))):
            key = draw(_scalar(key_field, known, depth))
            value = draw(_value(value_field, known, depth))
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                target[key].CopyFrom(value)
            else:
                target[key] = value
        return
    if field.is_repeated:
        size = draw(st.integers(0, 3) if depth else st.sampled_from([0, 1, 2, 3, MAX_REPEATED]))
        items = [draw(_value(field, known, depth)) for _ in range(size)]
        if is_message:
            for item in items:
                target.add().CopyFrom(item)
        else:
            target.extend(items)
        return
    value = draw(_value(field, known, depth))
    if is_message:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


@st.composite
def raw_requests(draw: st.DrawFn, descriptor: Descriptor, known: Sequence[str] = ()) -> bytes:
    """Bytes sent as a request: random, or a real message cut short or with bytes flipped."""
    kind = draw(st.sampled_from(["random", "cut", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    encoded = draw(messages(descriptor, known)).SerializeToString()
    if not encoded:
        return draw(st.binary(min_size=1, max_size=20))
    if kind == "cut":
        return encoded[: draw(st.integers(0, len(encoded) - 1))]
    data = bytearray(encoded)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)
