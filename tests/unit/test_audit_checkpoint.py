"""Signed checkpoints and the operator's key: round trip, and every way to spoil one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit.chain import Anchor
from ledger.audit.checkpoint import (
    BadCheckpoint,
    Checkpoint,
    generate_key,
    load,
    load_private_key,
    load_public_key,
    parse,
    sign,
)

HEAD = b"\x07" * 32


def signed(key: Ed25519PrivateKey, anchors: tuple[Anchor, ...] | None = None) -> Checkpoint:
    return sign(
        key,
        schema="public",
        position=42,
        digest=HEAD,
        events=40,
        anchors=(Anchor(10, b"\x01" * 32), Anchor(42, HEAD)) if anchors is None else anchors,
    )


def test_a_checkpoint_round_trips_through_its_file() -> None:
    key = Ed25519PrivateKey.generate()
    checkpoint = signed(key)
    loaded = parse(checkpoint.to_json(), key.public_key())
    assert loaded == checkpoint
    assert loaded.all_anchors() == (Anchor(10, b"\x01" * 32), Anchor(42, HEAD))
    document = json.loads(checkpoint.to_json())
    assert document["position"] == 42
    assert document["digest"] == HEAD.hex()
    assert {"schema", "created_at", "public_key", "signature"} <= document.keys()


def test_the_head_is_an_anchor_even_when_not_listed() -> None:
    checkpoint = signed(Ed25519PrivateKey.generate(), anchors=(Anchor(10, b"\x01" * 32),))
    assert checkpoint.all_anchors()[-1] == Anchor(42, HEAD)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("position", 43),
        ("digest", "00" * 32),
        ("events", 41),
        ("schema", "other"),
        ("anchors", [[10, "02" * 32], [42, HEAD.hex()]]),
        ("created_at", "2020-01-01T00:00:00+00:00"),
    ],
)
def test_any_edit_breaks_the_signature(field: str, value: object) -> None:
    document = json.loads(signed(Ed25519PrivateKey.generate()).to_json())
    document[field] = value
    with pytest.raises(BadCheckpoint, match="signature"):
        parse(json.dumps(document))


def test_a_checkpoint_re_signed_with_another_key_fails_against_the_trusted_key() -> None:
    operator = Ed25519PrivateKey.generate()
    forged = signed(Ed25519PrivateKey.generate())
    assert parse(forged.to_json()) == forged  # intact, but not the operator's
    with pytest.raises(BadCheckpoint, match="another key"):
        parse(forged.to_json(), operator.public_key())


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"format": "something else"}),
        json.dumps({"format": "posledger-audit-checkpoint/1"}),
    ],
)
def test_malformed_files_are_bad_checkpoints(text: str) -> None:
    with pytest.raises(BadCheckpoint):
        parse(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("digest", "abcd"),
        ("position", -1),
        ("position", "42"),
        ("public_key", "!!"),
        ("public_key", "AAAA"),
        ("anchors", [[10]]),
    ],
)
def test_malformed_fields_are_bad_checkpoints(field: str, value: object) -> None:
    document = json.loads(signed(Ed25519PrivateKey.generate()).to_json())
    document[field] = value
    with pytest.raises(BadCheckpoint, match="malformed"):
        parse(json.dumps(document))


@pytest.mark.parametrize(
    "anchors",
    [
        (Anchor(42, HEAD), Anchor(10, b"\x01" * 32)),  # out of order
        (Anchor(10, b"\x01" * 32), Anchor(10, b"\x01" * 32)),  # twice
        (Anchor(50, HEAD),),  # past the head
        (Anchor(42, b"\x01" * 32),),  # contradicts the head
    ],
)
def test_inconsistent_anchors_are_refused_even_when_signed(anchors: tuple[Anchor, ...]) -> None:
    checkpoint = signed(Ed25519PrivateKey.generate(), anchors=anchors)
    with pytest.raises(BadCheckpoint, match="malformed"):
        parse(checkpoint.to_json())


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    key = generate_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = load_private_key(path)
    assert loaded.public_key() == key.public_key()
    assert load_public_key(tmp_path / "audit.key.pub") == key.public_key()
    with pytest.raises(FileExistsError):
        generate_key(path)


def test_loading_files_that_are_not_keys_or_checkpoints(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("nothing")
    with pytest.raises(BadCheckpoint):
        load_private_key(junk)
    with pytest.raises(BadCheckpoint):
        load_public_key(junk)
    with pytest.raises(BadCheckpoint):
        load(tmp_path / "missing.json")
