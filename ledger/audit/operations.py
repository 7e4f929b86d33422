"""What the `posledger audit` commands do: take a signed checkpoint, verify the log, and
verify an export against a checkpoint with no database."""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit.chain import (
    GENESIS,
    Anchor,
    ChainRow,
    ChainWalker,
    CommandRow,
    Finding,
    MetadataRow,
    event_hash,
    event_hash_v2,
)
from ledger.audit.checkpoint import Checkpoint, sign
from ledger.audit.store import ChainHead, ChainKeeper, Progress, VerifyReport

MAX_ANCHORS = 256  # per checkpoint: about 20 kB of JSON
EXPORT_FORMAT: Final = "posledger-audit-export/2"


def take_checkpoint(
    keeper: ChainKeeper,
    key: Ed25519PrivateKey,
    *,
    max_anchors: int = MAX_ANCHORS,
    progress: Progress | None = None,
) -> tuple[Checkpoint | None, VerifyReport]:
    """Verifies the chain, and signs what the events themselves give. Only reads.

    The digests signed are the ones recomputed from the events, never just the stored
    ones, and nothing is signed when the log was tampered with or has unchained events
    (the report says where).
    """
    chained = keeper.head().events
    every = -(-chained // max_anchors) if chained else 0
    report = keeper.verify(sample_every=every, progress=progress)
    if report.finding is not None:
        return None, report
    anchors = [a for a in report.samples if a.position < report.position]
    anchors.append(Anchor(report.position, report.digest))
    checkpoint = sign(
        key,
        schema=keeper.schema,
        position=report.position,
        digest=report.digest,
        events=report.events,
        anchors=tuple(anchors),
    )
    return checkpoint, report


def verify_log(
    keeper: ChainKeeper, checkpoint: Checkpoint | None = None, progress: Progress | None = None
) -> VerifyReport:
    """Recomputes the chain from the events; compares with the stored chain and, if
    given, with a (signature-checked) checkpoint. Only reads."""
    if checkpoint is None:
        return keeper.verify(progress=progress)
    return keeper.verify(checkpoint.all_anchors(), through=checkpoint.position, progress=progress)


# ---- exports --------------------------------------------------------------------------------


class UnverifiableExport(Exception):
    """An export that cannot prove anything (not tampered, just the wrong kind of file)."""


def export_header(
    schema: str,
    from_position: int,
    to_position: int,
    merchant: str | None,
    head: ChainHead,
    previous_digest: bytes,
) -> str:
    """The first line of an export: what it covers and where its chain starts."""
    return json.dumps(
        {
            "format": EXPORT_FORMAT,
            "schema": schema,
            "from_position": from_position,
            "to_position": to_position,
            "merchant": merchant,
            "chain_head": head.position,
            "previous_digest": previous_digest.hex(),
        },
        sort_keys=True,
    )


@dataclass(frozen=True)
class ExportReport:
    events: int
    position: int
    finding: Finding | None
    anchors_met: int
    seconds: float
    line: int = 0  # the line of the finding, when there is one


def _open(path: Path) -> Any:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gzipped else path.open(encoding="utf-8")


class MalformedLine(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


def _rows(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, ChainRow]]:
    """(line number, row as a walk reads it), with the event's hash recomputed from what
    the export says was hashed (never from a hash in the file)."""
    for number, text in lines:
        try:
            line = json.loads(text)
            hashed = line["hashed"]
            position = int(line["position"])
            originator_id = UUID(line["aggregate_id"])
            version = int(line["version"])
            state = (
                None
                if hashed["state"] is None
                else base64.b64decode(hashed["state"], validate=True)
            )
            topic = hashed["topic"]
            if hashed["format"] == 1:
                value = event_hash(position, originator_id, version, topic, state)
            elif hashed["format"] == 2:
                m, c = hashed["metadata"], hashed["command"]
                metadata = None
                if m is not None:
                    metadata = MetadataRow(
                        m[0], m[1], m[2], m[3], m[4], m[5], command_recorded=bool(m[6])
                    )
                command = None
                if c is not None:
                    command = CommandRow(
                        c[0], c[1], None if c[2] is None else UUID(c[2]), c[3], c[4]
                    )
                value = event_hash_v2(
                    position, originator_id, version, topic, state, metadata, command
                )
            else:
                raise ValueError(f"unknown hash format {hashed['format']!r}")
            digest = None if hashed["digest"] is None else bytes.fromhex(hashed["digest"])
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise MalformedLine(number, repr(e)) from None
        yield number, (position, value, digest)


def verify_export(path: Path, checkpoint: Checkpoint | None) -> ExportReport:
    """Recomputes the chain over an export, as `ChainKeeper.verify` does over the log, and
    meets the checkpoint's anchors inside the export's range. Needs no database.

    Raises `UnverifiableExport` when the file is no whole-range export (a merchant's
    export has other merchants' events left out, so its chain cannot be recomputed), and
    `MalformedLine` when a line does not parse (the file was damaged or edited).
    """
    started = time.perf_counter()
    with _open(path) as f:
        numbered = enumerate(f, start=1)
        try:
            _, first = next(numbered)
            header = json.loads(first)
        except (StopIteration, ValueError) as e:
            raise UnverifiableExport(f"{path} is not an export: {e!r}") from None
        if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
            raise UnverifiableExport(f"{path} is not an export of format {EXPORT_FORMAT}")
        if header.get("merchant") is not None:
            raise UnverifiableExport(
                "a merchant's export leaves other merchants' events out, so its chain cannot "
                "be recomputed; export the whole range (no --merchant) to verify it"
            )
        try:
            start = int(header["from_position"])
            previous = bytes.fromhex(header["previous_digest"])
            chain_head = int(header["chain_head"])
        except (KeyError, ValueError, TypeError) as e:
            raise MalformedLine(1, repr(e)) from None
        anchors: tuple[Anchor, ...] = ()
        if checkpoint is not None:
            stop = int(header.get("to_position") or 0)
            anchors = tuple(
                a for a in checkpoint.all_anchors() if start <= a.position <= (stop or a.position)
            )
            if not anchors or (start > 1 and previous == GENESIS):
                raise UnverifiableExport(
                    f"no signed digest of the checkpoint falls inside the export "
                    f"(positions {start}..{header.get('to_position')}): export a range that "
                    f"reaches position {checkpoint.position}"
                )
        walker = ChainWalker(digest=previous, chain_head=chain_head, anchors=anchors)
        line = 0
        for number, row in _rows(numbered):
            line = number
            if walker.feed((row,)) is not None:
                break
        walker.finish()
    met = sum(1 for a in anchors if a.position <= walker.position)
    return ExportReport(
        events=walker.events,
        position=walker.position,
        finding=walker.finding,
        anchors_met=met,
        seconds=time.perf_counter() - started,
        line=line if walker.finding else 0,
    )
