"""The hash chain over the event log, as pure functions (no I/O).

Each event's digest covers the previous digest and the event's hash:

    digest = SHA-256("posledger-chain-v1\\0" | previous digest | event hash)

The event hash has two formats. Version 2, written by every group commit in the
transaction that appends the event, covers the whole record of the event: the event row,
the who/where row written with it (`event_metadata`), and the record of the command that
wrote it (`processed_commands`), which answers the command's retries:

    v2 = SHA-256("posledger-event-v2\\0" | position | aggregate id | version
                 | topic length | topic | payload length | payload
                 | 0x00 (no metadata row)
                   or 0x01 | merchant | app | key id | location | device | request id
                        | 0x00/0x01 (the command has a record: `command_recorded`)
                 | 0x00 (no command record)
                   or 0x01 | command | fingerprint | aggregate id | aggregate version
                        | result (the stored jsonb's text))

Version 1 (positions up to the head row's `v1_through`, chained before version 2 existed)
covers the event row only:

    v1 = SHA-256("posledger-event-v1\\0" | position | aggregate id | version
                 | topic length | topic | payload length | payload)

Integers are big-endian (positions, versions and payload lengths 8 bytes, text lengths 4),
ids are their 16 bytes, text is UTF-8 after its length, a NULL has length -1: fixed widths
and a length before each variable field, so no two different records, or orders of
records, encode alike. The command record is the one with the metadata row's merchant and
request id, when the metadata row says the command was recorded. The chain starts from 32
zero bytes. Both formats have the same definition in SQL (`schema.event_hash_sql`), so the
database hashes the records where they lie and sends 32 bytes per event (a test keeps the
definitions equal).

A walk (`ChainWalker`) recomputes the chain in position order and compares it with the
digests stored when the chain was extended, and with the anchors of a signed checkpoint.
It stops at the first finding:

- changed: an event and a stored digest at the same position, and the digest differs (the
  event's id, version, topic or payload changed, or the stored digest did);
- deleted: a stored digest at a position where no event is left;
- inserted: an event at a position the chain had passed without one (or a stored digest
  was deleted);
- rewritten: the recomputed chain differs from a signed anchor although the stored chain
  agreed with the events up to there: the stored chain was rewritten to match changed
  events. Only a checkpoint kept outside the database catches this; it bounds the first
  change to the positions after the last good anchor, up to the bad one;
- unchained: an event after the chain's head. Every commit chains its events, so such an
  event was written around the ledger (or the head was moved back), or the log predates
  write-time chaining and `posledger audit chain` has not run yet. It is never "clean":
  the walk cannot vouch for it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

DIGEST_SIZE: Final = 32
GENESIS: Final = bytes(DIGEST_SIZE)
EVENT_DOMAIN: Final = b"posledger-event-v1\x00"
EVENT_DOMAIN_V2: Final = b"posledger-event-v2\x00"
LINK_DOMAIN: Final = b"posledger-chain-v1\x00"
# aggregate id, version, topic length (-1: NULL): what follows the position
_EVENT_FIELDS: Final = struct.Struct(">16sqi")
_STATE_LENGTH: Final = struct.Struct(">q")  # payload length (-1: NULL)
_TEXT_LENGTH: Final = struct.Struct(">i")  # text length (-1: NULL)
_BIGINT: Final = struct.Struct(">q")
ABSENT: Final = b"\x00"
PRESENT: Final = b"\x01"

# What a walk reads: position, event hash (None: no event there), stored digest (None:
# not chained).
ChainRow = tuple[int, bytes | None, bytes | None]
# The same with the event's fields instead of its hash (None id: no event there).
EventRow = tuple[int, UUID | None, int | None, str | None, bytes | None, bytes | None]


@dataclass(frozen=True)
class MetadataRow:
    """An `event_metadata` row as stored (None: NULL)."""

    merchant_id: str | None
    app_id: str | None
    key_id: str | None
    location_id: str | None
    device_id: str | None
    request_id: str | None
    command_recorded: bool = False


@dataclass(frozen=True)
class CommandRow:
    """A `processed_commands` row as stored; `result` is the jsonb's text (None: NULL)."""

    command: str | None
    fingerprint: str | None
    aggregate_id: UUID | None
    aggregate_version: int | None
    result: str | None


def _event_head(
    domain: bytes,
    position: int,
    originator_id: UUID,
    version: int,
    topic: str | None,
    state: bytes | None,
) -> Any:
    h = hashlib.sha256(domain)
    h.update(_BIGINT.pack(position))
    h.update(event_fields(originator_id, version, topic, state))
    if state is not None:
        h.update(state)
    return h


def event_fields(
    originator_id: UUID, version: int, topic: str | None, state: bytes | None
) -> bytes:
    """What both hashes cover of an event row between its position and its payload's bytes."""
    topic_bytes = b"" if topic is None else topic.encode()
    return b"".join(
        (
            _EVENT_FIELDS.pack(
                originator_id.bytes, version, -1 if topic is None else len(topic_bytes)
            ),
            topic_bytes,
            _STATE_LENGTH.pack(-1 if state is None else len(state)),
        )
    )


def _text(value: str | None) -> bytes:
    if value is None:
        return _TEXT_LENGTH.pack(-1)
    encoded = value.encode()
    return _TEXT_LENGTH.pack(len(encoded)) + encoded


def event_hash(
    position: int, originator_id: UUID, version: int, topic: str | None, state: bytes | None
) -> bytes:
    """The version 1 hash of one event as stored, at its position (the event row only)."""
    return bytes(_event_head(EVENT_DOMAIN, position, originator_id, version, topic, state).digest())


def event_hash_v2(
    position: int,
    originator_id: UUID,
    version: int,
    topic: str | None,
    state: bytes | None,
    metadata: MetadataRow | None,
    command: CommandRow | None,
) -> bytes:
    """The version 2 hash of one event: its row, its metadata row, its command record."""
    h = _event_head(EVENT_DOMAIN_V2, position, originator_id, version, topic, state)
    h.update(metadata_bytes(metadata))
    h.update(command_bytes(command))
    return bytes(h.digest())


def metadata_bytes(metadata: MetadataRow | None) -> bytes:
    """What the version 2 hash covers of an event's metadata row (after the event row)."""
    if metadata is None:
        return ABSENT
    return b"".join(
        (
            PRESENT,
            _text(metadata.merchant_id),
            _text(metadata.app_id),
            _text(metadata.key_id),
            _text(metadata.location_id),
            _text(metadata.device_id),
            _text(metadata.request_id),
            PRESENT if metadata.command_recorded else ABSENT,
        )
    )


def command_bytes(command: CommandRow | None) -> bytes:
    """What the version 2 hash covers of an event's command record (after its metadata)."""
    if command is None:
        return ABSENT
    return b"".join(
        (
            PRESENT,
            _text(command.command),
            _text(command.fingerprint),
            bytes(16) if command.aggregate_id is None else command.aggregate_id.bytes,
            _BIGINT.pack(-1 if command.aggregate_version is None else command.aggregate_version),
            _text(command.result),
        )
    )


def link(previous: bytes, hashed_event: bytes) -> bytes:
    """The chain's digest after an event, from the digest before it and the event's hash."""
    if len(previous) != DIGEST_SIZE or len(hashed_event) != DIGEST_SIZE:
        raise ValueError(f"digests and event hashes have {DIGEST_SIZE} bytes")
    return hashlib.sha256(LINK_DOMAIN + previous + hashed_event).digest()


def digest(
    previous: bytes,
    position: int,
    originator_id: UUID,
    version: int,
    topic: str | None,
    state: bytes | None,
) -> bytes:
    """The chain's digest after the event at `position`, following `previous`."""
    return link(previous, event_hash(position, originator_id, version, topic, state))


def chain(
    hashed: Iterable[tuple[int, bytes]], start_digest: bytes = GENESIS
) -> list[tuple[int, bytes]]:
    """Each (position, event hash)'s (position, digest), continuing from `start_digest`."""
    result = []
    current = start_digest
    for position, hashed_event in hashed:
        current = link(current, hashed_event)
        result.append((position, current))
    return result


class Kind(StrEnum):
    CHANGED = "changed"
    DELETED = "deleted"
    INSERTED = "inserted"
    REWRITTEN = "rewritten"
    UNCHAINED = "unchained"


@dataclass(frozen=True)
class Finding:
    """The first place where the log differs from what was chained or signed.

    For `rewritten`, the first change lies after `after` and at or before `position`.
    """

    kind: Kind
    position: int
    after: int | None = None

    def describe(self) -> str:
        if self.kind is Kind.CHANGED:
            return (
                f"the event at position {self.position} was changed "
                "(its id, version, topic or payload, its metadata, its command record, "
                "or its stored digest)"
            )
        if self.kind is Kind.DELETED:
            return f"the event at position {self.position} was deleted"
        if self.kind is Kind.INSERTED:
            return (
                f"an event was inserted at position {self.position} "
                "(or its stored digest was deleted)"
            )
        if self.kind is Kind.UNCHAINED:
            return (
                f"the event at position {self.position} and any after it are not chained: "
                "they were written around the ledger, or the chain's head was moved back, "
                "or the log predates write-time chaining (run `posledger audit chain` once)"
            )
        if self.after is not None and self.position == self.after + 1:
            where = f"at position {self.position}"
        else:
            where = f"after position {self.after} and at or before position {self.position}"
        return (
            f"the log differs from the signed checkpoint {where}: events were changed, "
            "deleted or inserted there and the stored chain was rewritten to match"
        )


@dataclass(frozen=True)
class Anchor:
    """The chain's digest after every event at or before `position`."""

    position: int
    digest: bytes


@dataclass
class ChainWalker:
    """Recomputes the chain from rows in position order and compares as it goes.

    `chain_head`: the stored chain covers positions up to here; an event after it is an
    `unchained` finding (None: every row must be chained). `anchors`: signed digests to meet.
    `sample_every`: keep every n-th recomputed digest (for a new checkpoint's anchors).
    """

    digest: bytes = GENESIS
    chain_head: int | None = None
    anchors: Sequence[Anchor] = ()
    sample_every: int = 0
    position: int = 0  # of the last event walked
    events: int = 0
    finding: Finding | None = None
    samples: list[Anchor] = field(default_factory=list)
    _next_anchor: int = field(default=0, init=False)
    _good_anchor: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.anchors = sorted(self.anchors, key=lambda a: a.position)
        if len(self.digest) != DIGEST_SIZE:
            raise ValueError(f"a digest has {DIGEST_SIZE} bytes")

    def feed(self, rows: Iterable[ChainRow]) -> Finding | None:
        """Walks `rows` (after any walked before); returns the first finding, if any."""
        if self.finding is not None:
            return self.finding
        chain_head = self.chain_head
        next_anchor = self._next_anchor_position()
        sha256 = hashlib.sha256
        current = self.digest
        for position, hashed_event, stored in rows:
            if next_anchor is not None and next_anchor < position:
                self.digest = current
                if self._meet_anchors(before=position):
                    return self.finding
                next_anchor = self._next_anchor_position()
            chained = chain_head is None or position <= chain_head
            if hashed_event is None:
                if stored is not None and chained:
                    return self._found(Kind.DELETED, position, current)
                continue
            if len(hashed_event) != DIGEST_SIZE:
                raise ValueError(f"event hashes have {DIGEST_SIZE} bytes")
            if not chained:
                return self._found(Kind.UNCHAINED, position, current)
            following = sha256(LINK_DOMAIN + current + hashed_event).digest()
            if stored is None:
                return self._found(Kind.INSERTED, position, current)
            if stored != following:
                return self._found(Kind.CHANGED, position, current)
            current = following
            self.position = position
            self.events += 1
            if self.sample_every and self.events % self.sample_every == 0:
                self.samples.append(Anchor(position, current))
        self.digest = current
        return None

    def finish(self) -> Finding | None:
        """Meets the anchors after the last row; call once every row has been fed."""
        if self.finding is None:
            self._meet_anchors(before=None)
        return self.finding

    def _next_anchor_position(self) -> int | None:
        if self._next_anchor < len(self.anchors):
            return self.anchors[self._next_anchor].position
        return None

    def _meet_anchors(self, before: int | None) -> bool:
        anchors = self.anchors
        while self._next_anchor < len(anchors) and (
            before is None or anchors[self._next_anchor].position < before
        ):
            anchor = anchors[self._next_anchor]
            if anchor.digest != self.digest:
                self.finding = Finding(Kind.REWRITTEN, anchor.position, after=self._good_anchor)
                return True
            self._good_anchor = anchor.position
            self._next_anchor += 1
        return False

    def _found(self, kind: Kind, position: int, current: bytes) -> Finding:
        self.digest = current
        self.finding = Finding(kind, position)
        return self.finding


def hashed_rows(rows: Iterable[EventRow]) -> Iterable[ChainRow]:
    """Rows with the event's fields, as a walk reads them (with the event's hash)."""
    for position, originator_id, version, topic, state, stored in rows:
        if originator_id is None:
            yield position, None, stored
        else:
            assert version is not None
            yield position, event_hash(position, originator_id, version, topic, state), stored


def verify_rows(
    rows: Iterable[EventRow],
    start_digest: bytes = GENESIS,
    *,
    chain_head: int | None = None,
    anchors: Sequence[Anchor] = (),
) -> Finding | None:
    """The first finding in `rows` (in position order), or None when they all agree."""
    walker = ChainWalker(digest=start_digest, chain_head=chain_head, anchors=anchors)
    return walker.feed(hashed_rows(rows)) or walker.finish()


def merge(
    hashed: Sequence[tuple[int, bytes]], links: Sequence[tuple[int, bytes]], upto: int
) -> list[ChainRow]:
    """Event hashes and stored digests (each sorted by position) side by side, up to
    `upto` (rows beyond it are left out)."""
    if (
        len(hashed) == len(links)
        and (not hashed or (hashed[-1][0] <= upto and links[-1][0] <= upto))
        and [e[0] for e in hashed] == [c[0] for c in links]
    ):  # the usual case: every event chained, nothing missing
        return [(e[0], e[1], c[1]) for e, c in zip(hashed, links, strict=True)]
    rows: list[ChainRow] = []
    i = j = 0
    n, m = len(hashed), len(links)
    while True:
        e = hashed[i][0] if i < n and hashed[i][0] <= upto else None
        c = links[j][0] if j < m and links[j][0] <= upto else None
        if e is None and c is None:
            return rows
        if c is None or (e is not None and e < c):
            rows.append((hashed[i][0], hashed[i][1], None))
            i += 1
        elif e is None or c < e:
            rows.append((c, None, links[j][1]))
            j += 1
        else:
            rows.append((e, hashed[i][1], links[j][1]))
            i += 1
            j += 1
