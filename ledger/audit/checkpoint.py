"""Signed checkpoints: the chain's digest at a position, signed with the operator's key.

A checkpoint is a small JSON file that can be kept anywhere (off the database server). Its
Ed25519 signature covers every field but itself, in a canonical encoding. Besides the head
(position and digest) it carries up to a few hundred evenly spaced anchors, so a log whose
stored chain was rewritten to hide a change is caught, and the change is placed between two
anchors (exactly, while the log has no more events than anchors).

`load` checks the file's shape and signature; pinning the operator's public key (the one
`keygen` printed) is what proves the checkpoint is theirs, not merely intact.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.audit.chain import DIGEST_SIZE, Anchor

FORMAT: Final = "posledger-audit-checkpoint/1"
_SIGNED_PREFIX: Final = b"posledger-audit-checkpoint/1\n"


class BadCheckpoint(Exception):
    """A checkpoint that cannot be trusted: unreadable, malformed, or wrongly signed."""


@dataclass(frozen=True)
class Checkpoint:
    schema: str  # the ledger's database schema
    position: int  # last chained position
    digest: bytes  # the chain's digest there
    events: int  # events chained up to there
    anchors: tuple[Anchor, ...]  # the chain's digest at evenly spaced positions (and head)
    created_at: str
    public_key: bytes  # raw Ed25519 public key
    signature: bytes = b""

    def all_anchors(self) -> tuple[Anchor, ...]:
        """The anchors and the head, which a verification must meet."""
        if self.anchors and self.anchors[-1].position == self.position:
            return self.anchors
        return (*self.anchors, Anchor(self.position, self.digest))

    def body(self) -> dict[str, Any]:
        """Every field but the signature, as stored in the file."""
        return {
            "format": FORMAT,
            "schema": self.schema,
            "position": self.position,
            "digest": self.digest.hex(),
            "events": self.events,
            "anchors": [[a.position, a.digest.hex()] for a in self.anchors],
            "created_at": self.created_at,
            "public_key": base64.b64encode(self.public_key).decode(),
        }

    def signed_bytes(self) -> bytes:
        canonical = json.dumps(self.body(), sort_keys=True, separators=(",", ":"))
        return _SIGNED_PREFIX + canonical.encode()

    def to_json(self) -> str:
        document = self.body() | {"signature": base64.b64encode(self.signature).decode()}
        return json.dumps(document, indent=2) + "\n"


def sign(
    key: Ed25519PrivateKey,
    *,
    schema: str,
    position: int,
    digest: bytes,
    events: int,
    anchors: tuple[Anchor, ...],
) -> Checkpoint:
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    unsigned = Checkpoint(
        schema=schema,
        position=position,
        digest=digest,
        events=events,
        anchors=anchors,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        public_key=public,
    )
    return replace(unsigned, signature=key.sign(unsigned.signed_bytes()))


def parse(text: str, trusted_key: Ed25519PublicKey | None = None) -> Checkpoint:
    """The checkpoint in `text`, its signature checked (against `trusted_key` if given)."""
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise BadCheckpoint(f"not a checkpoint ({FORMAT})")
        checkpoint = Checkpoint(
            schema=_str(document["schema"]),
            position=_int(document["position"]),
            digest=_digest(document["digest"]),
            events=_int(document["events"]),
            anchors=tuple(
                Anchor(_int(position), _digest(digest)) for position, digest in document["anchors"]
            ),
            created_at=_str(document["created_at"]),
            public_key=base64.b64decode(_str(document["public_key"]), validate=True),
            signature=base64.b64decode(_str(document["signature"]), validate=True),
        )
    except BadCheckpoint:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise BadCheckpoint(f"malformed checkpoint: {e!r}") from None
    try:
        embedded = Ed25519PublicKey.from_public_bytes(checkpoint.public_key)
    except ValueError:
        raise BadCheckpoint("malformed checkpoint: bad public key") from None
    if trusted_key is not None and public_bytes(trusted_key) != checkpoint.public_key:
        raise BadCheckpoint("the checkpoint was signed with another key than the trusted one")
    try:
        embedded.verify(checkpoint.signature, checkpoint.signed_bytes())
    except InvalidSignature:
        raise BadCheckpoint("the checkpoint's signature does not match its contents") from None
    positions = [a.position for a in checkpoint.anchors]
    if positions != sorted(set(positions)) or (positions and positions[-1] > checkpoint.position):
        raise BadCheckpoint("malformed checkpoint: anchors out of order or past the head")
    last = checkpoint.anchors[-1] if checkpoint.anchors else None
    if last and last.position == checkpoint.position and last.digest != checkpoint.digest:
        raise BadCheckpoint("malformed checkpoint: the last anchor contradicts the head")
    return checkpoint


def load(path: Path, trusted_key: Ed25519PublicKey | None = None) -> Checkpoint:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BadCheckpoint(f"cannot read {path}: {e}") from None
    return parse(text, trusted_key)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise TypeError(f"expected a non-negative integer, got {value!r}")
    return value


def _digest(value: Any) -> bytes:
    raw = bytes.fromhex(_str(value))
    if len(raw) != DIGEST_SIZE:
        raise ValueError(f"a digest has {DIGEST_SIZE} bytes")
    return raw


# ---- keys ---------------------------------------------------------------------------------


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def generate_key(path: Path) -> Ed25519PrivateKey:
    """A new private key, written to `path` (PEM, readable by its owner only), and
    its public key beside it (`<path>.pub`). Never overwrites a file."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise FileExistsError(f"{existing} exists")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_text(public_pem(key.public_key()))
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise BadCheckpoint(f"cannot load the private key {path}: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadCheckpoint(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BadCheckpoint(f"cannot load the public key {path}: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadCheckpoint(f"{path} is not an Ed25519 public key")
    return key
