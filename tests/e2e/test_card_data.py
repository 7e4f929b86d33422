"""Card numbers planted in every string field of every RPC, in request ids and headers,
written every way people write them: none reaches PostgreSQL or the server's log.

The server is `posledger serve` in a subprocess (development mode, every permission), so
its real log output is what gets scanned; afterwards every table of the test's schemas is
read back whole.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from psycopg.sql import SQL, Identifier

from ledger.store import Settings
from ledger.v1 import audit_pb2, catalog_pb2, customers_pb2, inventory_pb2, sales_pb2
from tests.e2e import api_client as api
from tests.e2e.test_cli import ServeProcess, cli_env  # noqa: F401  (a fixture)

MODULES = [sales_pb2, catalog_pb2, customers_pb2, inventory_pb2, audit_pb2]
FORMATS = [
    "{}",
    "card {} exp 12/27",
    "sep:{spaced}",
    "{dashed}",
    "{dotted}",
    "{underscored}",
    "{slashed}",
    "{url}",
    "{nbsp}",
    "{double}",
    "{fullwidth}",
    "{thin}",
    "pan%3A%20{url}",
]
IMPORT = "/ledger.v1.SalesService/ImportSales"
REJECTED = sales_pb2.IMPORT_STATUS_REJECTED
ROUNDS = 4  # plants per field, each another number written another way
# gRPC metadata values are printable ASCII: a client cannot even send the others.
HEADER_FORMATS = [f for f in FORMATS if f not in {"{nbsp}", "{fullwidth}", "{thin}"}]


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def card_numbers(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    numbers = []
    for i in range(count):
        length = 13 + i % 7
        body = rng.choice("3456") + "".join(rng.choice("0123456789") for _ in range(length - 2))
        numbers.append(_luhn_complete(body))
    return numbers


def written(pan: str, style: str) -> str:
    groups = [pan[i : i + 4] for i in range(0, len(pan), 4)]
    return style.format(
        pan,
        spaced=" ".join(groups),
        dashed="-".join(groups),
        dotted=".".join(groups),
        underscored="_".join(groups),
        slashed="/".join(groups),
        url="%20".join(groups),
        nbsp="\u00a0".join(groups),
        double="  ".join(groups),
        fullwidth="".join(chr(0xFF10 + int(d)) for d in pan),
        thin="\u2009".join(groups),
    )


def _string_paths(descriptor: Descriptor, depth: int = 0) -> Iterator[list[FieldDescriptor]]:
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            yield [field]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
            assert field.message_type is not None
            for rest in _string_paths(field.message_type, depth + 1):
                yield [field, *rest]


def _planted(message: Message, path: list[FieldDescriptor], value: str) -> None:
    field, rest = path[0], path[1:]
    target: Any = getattr(message, field.name)
    if not rest:
        if field.is_repeated:
            target.append(value)
        else:
            setattr(message, field.name, value)
        return
    _planted(target.add() if field.is_repeated else target, rest, value)


def _methods() -> Iterator[tuple[str, MethodDescriptor]]:
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield f"/{service.full_name}/{method.name}", method


def _call(
    channel: grpc.Channel, path: str, method: MethodDescriptor, request: Message, md: api.Metadata
) -> api.RpcFailure | Message:
    """The failure, or the (first) response."""
    response_class: Any = message_factory.GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_serializer": type(request).SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    response: Message
    try:
        if method.client_streaming:
            response = channel.stream_unary(path, **kwargs)(
                iter([request]), timeout=10, metadata=md
            )
        elif method.server_streaming:
            responses = channel.unary_stream(path, **kwargs)(request, timeout=3, metadata=md)
            response = next(iter(responses))
        else:
            response = channel.unary_unary(path, **kwargs)(request, timeout=10, metadata=md)
    except grpc.RpcError as error:
        return api.failure(error)
    return response


def _digits_only(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(
        str(unicodedata.decimal(ch)) for ch in text if unicodedata.decimal(ch, None) is not None
    )


def _schema_text(settings: Settings) -> str:
    assert settings.database_url
    chunks = []
    with psycopg.connect(settings.database_url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = %s OR table_schema LIKE %s",
            (settings.schema, settings.schema + r"\_\_%"),
        ).fetchall()
        assert len(tables) > 5, tables
        for schema, table in tables:
            for row in conn.execute(SQL("SELECT * FROM {}").format(Identifier(schema, table))):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("utf-8", errors="replace")
                    chunks.append(str(value))
    text = "\n".join(chunks)
    # JSON may escape non-ASCII characters; read them as the characters they stand for.
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)


def test_card_numbers_in_every_field_of_every_rpc_are_never_stored_or_logged(
    cli_env: dict[str, str],  # noqa: F811
    settings: Settings,
    tmp_path: Path,
) -> None:
    process = ServeProcess(cli_env, tmp_path / "serve.stderr")
    channel = grpc.insecure_channel(f"127.0.0.1:{process.port}")
    pans = card_numbers(600)
    planted: list[str] = []
    refused: dict[str, int] = {}
    try:
        process.wait_until_serving(channel)
        n = 0
        for path, method in _methods():
            request_class: Any = message_factory.GetMessageClass(method.input_type)
            for fields in [f for f in _string_paths(method.input_type) for _ in range(ROUNDS)]:
                pan = pans[n % len(pans)]
                request = request_class()
                _planted(request, fields, written(pan, FORMATS[n % len(FORMATS)]))
                n += 1
                planted.append(pan)
                failure = _call(channel, path, method, request, ())
                name = ".".join(f.name for f in fields)
                if path == IMPORT and fields[0].name == "orders":
                    # Each imported order is its own request: only that order is refused.
                    assert isinstance(failure, sales_pb2.ImportSalesResponse), (name, failure)
                    assert [o.status for o in failure.outcomes] == [REJECTED], (name, failure)
                    assert "card number" in failure.outcomes[0].message, (name, failure)
                    refused[path] = refused.get(path, 0) + 1
                    continue
                assert isinstance(failure, api.RpcFailure), (path, name, failure)
                assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, (path, name, failure)
                assert failure.reason == "CARD_NUMBER_REJECTED", (path, name, failure)
                refused[path] = refused.get(path, 0) + 1
            # Headers: the device id (stored with every event) and any other.
            for header in ["x-device-id", "x-request-note"]:
                pan = pans[n % len(pans)]
                n += 1
                planted.append(pan)
                failure = _call(
                    channel,
                    path,
                    method,
                    request_class(),
                    ((header, written(pan, HEADER_FORMATS[n % len(HEADER_FORMATS)])),),
                )
                assert isinstance(failure, api.RpcFailure), (path, header, failure)
                assert failure.reason == "CARD_NUMBER_REJECTED", (path, header, failure)
                refused[path] = refused.get(path, 0) + 1
        assert process.terminate() == 0, process.stderr
    finally:
        channel.close()
        process.kill()

    assert len(refused) == len(list(_methods())) == 37  # every RPC, every plant refused
    assert len(planted) > 500
    stored = _digits_only(_schema_text(settings))
    logged = _digits_only(process.stderr)
    assert '"rpc"' in process.stderr or "rpc" in process.stderr  # the log was written
    assert [pan for pan in set(planted) if pan in stored] == []
    assert [pan for pan in set(planted) if pan in logged] == []
