"""The audit hash chain as pure functions: the digest, the walk that compares, the merge."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.audit.chain import (
    GENESIS,
    Anchor,
    ChainWalker,
    CommandRow,
    EventRow,
    Finding,
    Kind,
    MetadataRow,
    chain,
    digest,
    event_hash,
    event_hash_v2,
    hashed_rows,
    link,
    merge,
    verify_rows,
)

ID_A = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
ID_B = uuid.UUID("00000000-0000-0000-0000-0000000000bb")
Event = tuple[int, uuid.UUID, int, str | None, bytes | None]


def events(count: int, start: int = 1, step: int = 1) -> list[Event]:
    return [
        (start + i * step, ID_A if i % 2 else ID_B, i + 1, f"t{i % 3}", b'{"n":%d}' % i)
        for i in range(count)
    ]


def stored_chain(log: Sequence[Event]) -> dict[int, bytes]:
    digests = {}
    previous = GENESIS
    for position, originator_id, version, topic, state in log:
        previous = digest(previous, position, originator_id, version, topic, state)
        digests[position] = previous
    return digests


def rows(log: Sequence[Event], digests: dict[int, bytes]) -> list[EventRow]:
    """The log beside the stored chain, as the store's merge presents them."""
    by_position = {e[0]: e for e in log}
    result: list[EventRow] = []
    for position in sorted(by_position.keys() | digests.keys()):
        event = by_position.get(position)
        if event is None:
            result.append((position, None, None, None, None, digests[position]))
        else:
            result.append((*event, digests.get(position)))
    return result


# ---- the digest -----------------------------------------------------------------------------


def test_the_digest_is_sha256_of_the_documented_encoding() -> None:
    """An independent spelling of the format: changing the encoding breaks old chains."""
    previous = bytes(range(32))
    state = b'{"amount":900}'
    topic = "posledger.SaleCreated"
    encoded_event = (
        b"posledger-event-v1\x00"
        + (7).to_bytes(8, "big")
        + ID_A.bytes
        + (3).to_bytes(8, "big")
        + len(topic).to_bytes(4, "big")
        + topic.encode()
        + len(state).to_bytes(8, "big")
        + state
    )
    hashed = hashlib.sha256(encoded_event).digest()
    expected = hashlib.sha256(b"posledger-chain-v1\x00" + previous + hashed).digest()
    assert event_hash(7, ID_A, 3, topic, state) == hashed
    assert digest(previous, 7, ID_A, 3, topic, state) == expected
    assert link(previous, hashed) == expected


def test_null_topic_and_payload_have_length_minus_one() -> None:
    encoded = (
        b"posledger-event-v1\x00"
        + (1).to_bytes(8, "big")
        + ID_A.bytes
        + (1).to_bytes(8, "big")
        + b"\xff\xff\xff\xff"
        + b"\xff" * 8
    )
    assert event_hash(1, ID_A, 1, None, None) == hashlib.sha256(encoded).digest()


def test_the_digest_is_deterministic_and_32_bytes() -> None:
    first = digest(GENESIS, 1, ID_A, 1, "t", b"{}")
    assert first == digest(GENESIS, 1, ID_A, 1, "t", b"{}")
    assert len(first) == 32
    assert first != GENESIS


BASE = (GENESIS, 5, ID_A, 2, "posledger.SaleCreated", b'{"a":1}')


@pytest.mark.parametrize(
    "changed",
    [
        (b"\x01" * 32, *BASE[1:]),  # previous digest
        (BASE[0], 6, *BASE[2:]),  # position
        (*BASE[:2], ID_B, *BASE[3:]),  # aggregate id
        (*BASE[:3], 3, *BASE[4:]),  # version
        (*BASE[:4], "posledger.SaleCompleted", BASE[5]),  # topic
        (*BASE[:5], b'{"a":2}'),  # payload
        (*BASE[:5], b'{"a":1} '),  # payload, one byte longer
        (*BASE[:4], None, BASE[5]),  # NULL topic
        (*BASE[:5], None),  # NULL payload
    ],
    ids=["previous", "position", "id", "version", "topic", "payload", "longer", "null-t", "null-p"],
)
def test_any_field_change_changes_the_digest(
    changed: tuple[bytes, int, uuid.UUID, int, str | None, bytes | None],
) -> None:
    assert digest(*changed) != digest(*BASE)


def test_field_boundaries_are_unambiguous() -> None:
    assert digest(GENESIS, 1, ID_A, 1, "ab", b"c") != digest(GENESIS, 1, ID_A, 1, "a", b"bc")
    assert digest(GENESIS, 1, ID_A, 1, "", b"") != digest(GENESIS, 1, ID_A, 1, None, None)
    assert digest(GENESIS, 1, ID_A, 1, "", b"x") != digest(GENESIS, 1, ID_A, 1, None, b"x")
    assert digest(GENESIS, 1, ID_A, 1, "t", b"") != digest(GENESIS, 1, ID_A, 1, "t", None)


def test_a_previous_digest_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        digest(b"short", 1, ID_A, 1, "t", b"")


def test_order_matters() -> None:
    one, two = events(2)
    assert (
        chain([(one[0], event_hash(*one)), (two[0], event_hash(*two))])[-1]
        != chain([(two[0], event_hash(*two)), (one[0], event_hash(*one))])[-1]
    )
    assert stored_chain([one, two])[2] != stored_chain([two, one])[1]


def test_chain_continues_from_a_start_digest() -> None:
    log = events(6)
    hashed = [(e[0], event_hash(*e)) for e in log]
    whole = chain(hashed)
    assert chain(hashed[3:], whole[2][1]) == whole[3:]
    assert whole == list(stored_chain(log).items())


# ---- the walk ---------------------------------------------------------------------------------


def test_a_clean_log_verifies() -> None:
    log = events(50, step=3)  # gaps between positions are normal
    assert verify_rows(rows(log, stored_chain(log))) is None


def test_verify_rows_finds_a_changed_payload_at_its_position() -> None:
    log = events(20)
    digests = stored_chain(log)
    position, originator_id, version, topic, _ = log[9]
    log[9] = (position, originator_id, version, topic, b'{"n":"forged"}')
    assert verify_rows(rows(log, digests)) == Finding(Kind.CHANGED, 10)


def test_verify_rows_reports_the_first_of_several_changes() -> None:
    log = events(20)
    digests = stored_chain(log)
    for i in (14, 6, 17):
        position, originator_id, _, topic, state = log[i]
        log[i] = (position, originator_id, 99, topic, state)
    assert verify_rows(rows(log, digests)) == Finding(Kind.CHANGED, 7)


def test_a_changed_stored_digest_is_found_at_its_position() -> None:
    log = events(10)
    digests = stored_chain(log)
    digests[4] = b"\x00" * 32
    assert verify_rows(rows(log, digests)) == Finding(Kind.CHANGED, 4)


def test_verify_rows_finds_a_deleted_event() -> None:
    log = events(10)
    digests = stored_chain(log)
    del log[4]  # position 5
    assert verify_rows(rows(log, digests)) == Finding(Kind.DELETED, 5)


def test_verify_rows_finds_an_inserted_event() -> None:
    log = events(10, step=2)  # positions 1, 3, ..., 19
    digests = stored_chain(log)
    log.insert(3, (6, ID_B, 1, "t", b"{}"))
    assert verify_rows(rows(log, digests)) == Finding(Kind.INSERTED, 6)


def test_events_after_the_chain_head_are_a_finding_never_clean() -> None:
    log = events(10)
    digests = stored_chain(log[:6])
    finding = verify_rows(rows(log, digests), chain_head=6)
    assert finding == Finding(Kind.UNCHAINED, 7)
    assert "not chained" in finding.describe()
    assert verify_rows(rows(log, digests)) == Finding(Kind.INSERTED, 7)
    assert verify_rows(rows(log[:6], digests), chain_head=6) is None


def test_the_v2_hash_is_sha256_of_the_documented_encoding() -> None:
    """An independent spelling of version 2: the event, its metadata, its command record."""
    state = b'{"amount":900}'
    topic = "posledger.SaleCreated"

    def text(value: str) -> bytes:
        return len(value.encode()).to_bytes(4, "big") + value.encode()

    metadata = MetadataRow("acme", "till", "key-1", "loc-1", "dev-é", "req-1", True)
    command = CommandRow("CreateSale", "fp", ID_B, 4, '{"ids": {}}')
    encoded = (
        b"posledger-event-v2\x00"
        + (7).to_bytes(8, "big")
        + ID_A.bytes
        + (3).to_bytes(8, "big")
        + len(topic).to_bytes(4, "big")
        + topic.encode()
        + len(state).to_bytes(8, "big")
        + state
        + b"\x01"
        + b"".join(text(v) for v in ("acme", "till", "key-1", "loc-1", "dev-é", "req-1"))
        + b"\x01"
        + b"\x01"
        + text("CreateSale")
        + text("fp")
        + ID_B.bytes
        + (4).to_bytes(8, "big")
        + text('{"ids": {}}')
    )
    assert event_hash_v2(7, ID_A, 3, topic, state, metadata, command) == (
        hashlib.sha256(encoded).digest()
    )
    bare = (
        b"posledger-event-v2\x00" + encoded[19 : 19 + 8 + 16 + 8 + 4 + len(topic) + 8 + len(state)]
    )
    assert event_hash_v2(7, ID_A, 3, topic, state, None, None) == (
        hashlib.sha256(bare + b"\x00\x00").digest()
    )
    # Every field counts: a change anywhere, or a record left out, changes the hash.
    variants = {
        event_hash_v2(7, ID_A, 3, topic, state, metadata, command),
        event_hash_v2(7, ID_A, 3, topic, state, metadata, None),
        event_hash_v2(7, ID_A, 3, topic, state, None, command),
        event_hash_v2(7, ID_A, 3, topic, state, replace(metadata, device_id="dev-e"), command),
        event_hash_v2(7, ID_A, 3, topic, state, replace(metadata, command_recorded=False), command),
        event_hash_v2(7, ID_A, 3, topic, state, metadata, replace(command, result='{"ids":{}}')),
        event_hash_v2(7, ID_A, 3, topic, state, metadata, replace(command, aggregate_version=5)),
        event_hash(7, ID_A, 3, topic, state),
    }
    assert len(variants) == 8


def test_the_walk_can_start_from_a_trusted_digest() -> None:
    log = events(10)
    digests = stored_chain(log)
    tail = [r for r in rows(log, digests) if r[0] > 4]
    assert verify_rows(tail, digests[4]) is None
    assert verify_rows(tail) == Finding(Kind.CHANGED, 5)


def test_a_rewritten_chain_is_caught_by_anchors_only() -> None:
    log = events(12)
    anchors = [Anchor(p, d) for p, d in stored_chain(log).items()]
    position, originator_id, version, topic, _ = log[4]
    log[4] = (position, originator_id, version, topic, b"forged")
    rewritten = stored_chain(log)  # the attacker recomputes the stored chain too
    assert verify_rows(rows(log, rewritten)) is None
    finding = verify_rows(rows(log, rewritten), anchors=anchors)
    assert finding == Finding(Kind.REWRITTEN, 5, after=4)
    assert "at position 5" in finding.describe()


def test_sparse_anchors_bound_the_change() -> None:
    log = events(12)
    digests = stored_chain(log)
    anchors = [Anchor(4, digests[4]), Anchor(8, digests[8]), Anchor(12, digests[12])]
    del log[5]  # position 6, and the attacker rewrites the chain without it
    finding = verify_rows(rows(log, stored_chain(log)), anchors=anchors)
    assert finding == Finding(Kind.REWRITTEN, 8, after=4)
    assert "after position 4 and at or before position 8" in finding.describe()


def test_an_anchor_after_the_last_event_is_met_at_the_end() -> None:
    log = events(6)
    digests = stored_chain(log)
    truncated = log[:4]  # the last two events and their digests are gone
    assert verify_rows(rows(truncated, stored_chain(truncated))) is None
    finding = verify_rows(rows(truncated, stored_chain(truncated)), anchors=[Anchor(6, digests[6])])
    assert finding == Finding(Kind.REWRITTEN, 6, after=0)


def test_an_anchor_in_a_gap_means_every_event_up_to_it() -> None:
    log = events(5, step=10)  # positions 1, 11, 21, 31, 41
    digests = stored_chain(log)
    assert verify_rows(rows(log, digests), anchors=[Anchor(15, digests[11])]) is None
    assert verify_rows(rows(log, digests), anchors=[Anchor(15, digests[21])]) == Finding(
        Kind.REWRITTEN, 15, after=0
    )


def test_samples_are_every_nth_recomputed_digest() -> None:
    log = events(10)
    digests = stored_chain(log)
    walker = ChainWalker(sample_every=3)
    assert walker.feed(hashed_rows(rows(log, digests))) is None
    assert walker.samples == [Anchor(p, digests[p]) for p in (3, 6, 9)]
    assert (walker.position, walker.digest, walker.events) == (10, digests[10], 10)


@given(
    count=st.integers(min_value=1, max_value=40),
    data=st.data(),
)
def test_any_single_tampering_is_found_at_its_position(count: int, data: st.DataObject) -> None:
    log = events(count, step=2)
    digests = stored_chain(log)
    i = data.draw(st.integers(min_value=0, max_value=count - 1))
    what = data.draw(st.sampled_from(["id", "version", "topic", "state", "delete", "insert"]))
    position, originator_id, version, topic, state = log[i]
    expected = Finding(Kind.CHANGED, position)
    if what == "id":
        log[i] = (position, uuid.uuid4(), version, topic, state)
    elif what == "version":
        log[i] = (position, originator_id, version + 1, topic, state)
    elif what == "topic":
        log[i] = (position, originator_id, version, (topic or "") + "x", state)
    elif what == "state":
        log[i] = (position, originator_id, version, topic, (state or b"") + b" ")
    elif what == "delete":
        del log[i]
        expected = Finding(Kind.DELETED, position)
    else:
        log.insert(i, (position - 1, uuid.uuid4(), 1, "t", b"{}"))  # into the gap before
        expected = Finding(Kind.INSERTED, position - 1)
    assert verify_rows(rows(log, digests)) == expected


@given(sizes=st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=8))
def test_feeding_in_pages_equals_feeding_at_once(sizes: list[int]) -> None:
    log = events(sum(sizes) + 3)
    digests = stored_chain(log)
    all_rows = list(hashed_rows(rows(log, digests)))
    anchors = [Anchor(p, d) for p, d in digests.items() if p % 4 == 0]
    walker = ChainWalker(anchors=anchors)
    start = 0
    for size in [*sizes, len(all_rows)]:
        assert walker.feed(all_rows[start : start + size]) is None
        start += size
    assert walker.finish() is None
    assert (walker.events, walker.digest) == (len(log), digests[len(log)])


# ---- merging the two reads ------------------------------------------------------------------


def test_merge_puts_events_and_digests_side_by_side() -> None:
    h = [(1, b"h1"), (3, b"h3"), (4, b"h4")]
    c = [(1, b"d1"), (2, b"d2"), (4, b"d4")]
    assert merge(h, c, upto=10) == [
        (1, b"h1", b"d1"),
        (2, None, b"d2"),
        (3, b"h3", None),
        (4, b"h4", b"d4"),
    ]
    assert merge(h, c, upto=2) == [(1, b"h1", b"d1"), (2, None, b"d2")]


def test_merge_of_aligned_pages_trims_to_upto() -> None:
    h = [(1, b"h1"), (2, b"h2")]
    c = [(1, b"d1"), (2, b"d2")]
    assert merge(h, c, upto=2) == [(1, b"h1", b"d1"), (2, b"h2", b"d2")]
    assert merge(h, c, upto=1) == [(1, b"h1", b"d1")]
    assert merge([], [], upto=5) == []
