"""The README's signature recipes, run as written: Python here, Node in a real `node`."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ledger.deliveries import signing

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet(language: str) -> str:
    section = README.read_text().split("### Verifying a delivery", 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} snippet under 'Verifying a delivery'"
    return match.group(1)


def signed(secret: str, body: bytes, at: int) -> dict[str, str]:
    return {
        signing.TIMESTAMP_HEADER: str(at),
        signing.SIGNATURE_HEADER: signing.signature(secret, at, body),
    }


BODY = json.dumps({"kind": "payment.resolved", "data": {"amount": 1250, "note": "café"}}).encode()


def test_the_python_recipe_accepts_a_signed_delivery_and_refuses_changes() -> None:
    scope: dict[str, Any] = {}
    exec(snippet("python"), scope)
    verify = scope["verify"]
    now = int(time.time())
    headers = signed("whsec_k", BODY, now)
    assert verify("whsec_k", headers, BODY)
    assert not verify("whsec_other", headers, BODY)
    assert not verify("whsec_k", headers, BODY + b" ")
    assert not verify("whsec_k", signed("whsec_k", BODY, now - 3600), BODY)


def test_the_node_recipe_accepts_a_signed_delivery_and_refuses_changes() -> None:
    if shutil.which("node") is None:  # CI installs node (.ci/run checks it): never skipped there
        if os.environ.get("CI"):
            pytest.fail("CI needs node for the Node verification recipe", pytrace=False)
        pytest.skip("node is not installed")
    now = int(time.time())
    cases = [
        ("whsec_k", signed("whsec_k", BODY, now), BODY, True),
        ("whsec_other", signed("whsec_k", BODY, now), BODY, False),
        ("whsec_k", signed("whsec_k", BODY, now), BODY + b" ", False),
        ("whsec_k", signed("whsec_k", BODY, now - 3600), BODY, False),
    ]
    program = snippet("javascript") + (
        "const cases = JSON.parse(process.argv[1]);\n"
        "console.log(JSON.stringify(cases.map(([s, h, b]) => "
        "verify(s, h, Buffer.from(b, 'base64')))));\n"
    )
    argument = json.dumps(
        [
            [secret, {k.lower(): v for k, v in headers.items()}, base64.b64encode(body).decode()]
            for secret, headers, body, _ in cases
        ]
    )
    result = subprocess.run(
        ["node", "-e", program, argument], capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(result.stdout) == [expected for *_, expected in cases]
