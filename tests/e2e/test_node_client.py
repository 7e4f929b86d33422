"""A Node.js client (examples/node, @grpc/grpc-js + @grpc/proto-loader) through a sale and an error.

It loads the same .proto files with the options the README gives, so a regression in what a
Node user sees (dropped snake_case fields, int64 as Long objects, undecodable error details)
fails here. Node and the example's packages are needed: CI installs them (`npm ci`); a
machine without Node skips this test outside CI and fails it in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger.application import Ledger
from ledger.v1 import sales_pb2 as pb
from tests.e2e.api_client import Stubs, bearer
from tests.e2e.conftest import MakeChannel, MakeServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
NPM_TIMEOUT = 240.0
RUN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if not found or not shutil.which("npm"):
        if os.environ.get("CI"):
            pytest.fail("CI needs node and npm for the Node client test", pytrace=False)
        pytest.skip("node and npm are not installed")
    if not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=EXAMPLE,
            check=True,
            timeout=NPM_TIMEOUT,
            capture_output=True,
        )
    return found


def test_node_client_completes_a_sale_and_reads_error_details(
    node: str, ledger: Ledger, make_server: MakeServer, make_channel: MakeChannel
) -> None:
    _, key = ledger.api_keys.create("merchant-node", "example-pos")
    server = make_server()
    done = subprocess.run(
        [node, str(EXAMPLE / "checkout.js"), f"127.0.0.1:{server.port}", key],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    steps = {line["step"]: line for line in map(json.loads, done.stdout.splitlines())}

    # int64 fields arrive as decimal strings (longs: String), enums by name (enums: String).
    assert steps["created"]["total"] == "756"
    assert steps["requested"]["status"] == "PAYMENT_STATUS_PENDING"
    completed = steps["completed"]
    assert completed["status"] == "SALE_STATUS_COMPLETED"
    assert completed["paid_total"] == "756"

    # The sale Node wrote is the merchant's, as the Python client reads it.
    stubs = Stubs.on(make_channel(server))
    sale = stubs.sales.GetSale(
        pb.GetSaleRequest(sale_id=completed["sale_id"]), metadata=bearer(key)
    ).sale
    assert sale.status == pb.SALE_STATUS_COMPLETED
    assert sale.version == int(completed["version"])
    assert [line.quantity for line in sale.line_items] == [2]  # snake_case fields arrived

    # The refusal's google.rpc.Status details decode: ErrorInfo and one violation per field.
    refused = steps["refused"]
    assert refused["code"] == "INVALID_ARGUMENT"
    by_type = {detail["@type"]: detail for detail in refused["details"]}
    assert by_type["google.rpc.ErrorInfo"]["domain"] == "posledger"
    violations = by_type["google.rpc.BadRequest"]["field_violations"]
    assert {v["field"] for v in violations} == {"currency_code", "line_items[0].quantity"}
