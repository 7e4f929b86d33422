"""Chains: commands on one aggregate decided on each other's state before it committed.

A command that decided on what an earlier command of this process handed to the writer
commits only behind it: in the same group, in order, or in a later group only if that one
committed and the aggregate is still exactly where it read it. A chain falls from its first
failed link on; nothing is written twice and no version is missing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.domain import commands as c
from ledger.domain import inventory as inv
from ledger.domain.errors import RuleViolated
from ledger.domain.sale import Sale
from ledger.group_commit import (
    CommandRecord,
    CommitConflict,
    CommitRequest,
    DuplicateCommand,
    EventMetadata,
    GroupCommitter,
    Pending,
)
from tests.integration.catalog_support import (
    approve,
    catalog_line,
    create_product,
    new_sale,
    receive,
    request_full_payment,
    stock,
)
from tests.integration.conftest import (
    MERCHANT_A,
    Db,
    ctx,
    failures,
    race,
    request_payment_cmd,
    successes,
)
from tests.integration.test_group_commit import _event, _wait_until, events_table_locked

pytestmark = pytest.mark.timeout(180)

Outcome = list[list[int] | Exception]


def _request(
    writes: Sequence[tuple[uuid.UUID, int]],
    request_id: str,
    after: Sequence[tuple[uuid.UUID, int, Pending]] = (),
) -> CommitRequest:
    first_id, first_version = writes[0]
    return CommitRequest(
        events=[_event(aggregate_id, version) for aggregate_id, version in writes],
        command_record=CommandRecord(
            merchant_id=MERCHANT_A,
            request_id=request_id,
            command="Test",
            fingerprint="f" * 64,
            aggregate_id=first_id,
            aggregate_version=first_version,
        ),
        metadata=EventMetadata(merchant_id=MERCHANT_A, request_id=request_id),
        after=after,
    )


def _hand(committer: GroupCommitter, request: CommitRequest) -> tuple[Pending, Outcome]:
    """Starts committing `request` in a thread; returns it once the writer has it queued."""
    handed: list[Pending] = []
    outcome: Outcome = []
    ready = threading.Event()

    def run() -> None:
        def on_handed(pending: Pending) -> None:
            handed.append(pending)
            ready.set()

        try:
            outcome.append(committer.commit(request, on_handed))
        except Exception as e:
            outcome.append(e)
            ready.set()

    threading.Thread(target=run, daemon=True).start()
    assert ready.wait(10)
    assert handed, f"not handed: {outcome}"
    return handed[0], outcome


def _answer(outcome: Outcome) -> list[int] | Exception:
    _wait_until(lambda: bool(outcome), timeout=30)
    return outcome[0]


def _chain(
    committer: GroupCommitter, aggregate_id: uuid.UUID, first: CommitRequest, links: int
) -> list[Outcome]:
    """`first`, then `links` commands each writing the next version behind the one before."""
    pending, outcome = _hand(committer, first)
    outcomes = [outcome]
    version = first.events[-1].originator_version
    for n in range(links):
        request = _request(
            [(aggregate_id, version + 1)],
            f"link-{aggregate_id}-{n}",
            after=[(aggregate_id, version, pending)],
        )
        pending, outcome = _hand(committer, request)
        outcomes.append(outcome)
        version += 1
    return outcomes


def _versions(db: Db, aggregate_id: uuid.UUID) -> list[int]:
    return [row.originator_version for row in db.events(aggregate_id)]


# ---- the writer and the commit function ----------------------------------------------------


def test_a_chain_in_one_group_commits_in_order(ledger: Ledger, db: Db) -> None:
    committer = ledger.ledger_recorder.committer
    item = uuid.uuid4()
    groups, chained = committer.stats.groups, committer.stats.chained
    with events_table_locked(db) as writer_waiting:
        blocker = _hand(committer, _request([(uuid.uuid4(), 1)], "blocker"))[1]
        _wait_until(writer_waiting)
        outcomes = _chain(committer, item, _request([(item, 1)], "first"), links=4)
    answers = [_answer(o) for o in [blocker, *outcomes]]

    assert all(isinstance(a, list) and len(a) == 1 for a in answers), answers
    assert committer.stats.groups == groups + 2  # the blocker's, then the whole chain
    assert committer.stats.chained == chained + 4
    rows = db.events(item)
    assert [r.originator_version for r in rows] == [1, 2, 3, 4, 5]
    assert [[r.notification_id] for r in rows] == answers[1:]  # positions in commit order
    assert db.count("event_metadata") == db.event_count()
    assert {r["request_id"] for r in db.commands()} >= {"first"} | {
        f"link-{item}-{n}" for n in range(4)
    }


@pytest.mark.parametrize("failure", ["clashed", "duplicate"])
def test_a_chain_falls_from_its_first_failed_link_and_leaves_no_gap(
    ledger: Ledger, db: Db, failure: str
) -> None:
    committer = ledger.ledger_recorder.committer
    item, neighbour = uuid.uuid4(), uuid.uuid4()
    if failure == "clashed":
        committer.commit(_request([(item, 1)], "another-writer"))  # version 1 is taken
        first = _request([(item, 1)], "first")
    else:
        committer.commit(_request([(uuid.uuid4(), 1)], "twin"))  # the request id is taken
        first = _request([(item, 1)], "twin")
    with events_table_locked(db) as writer_waiting:
        blocker = _hand(committer, _request([(uuid.uuid4(), 1)], "blocker"))[1]
        _wait_until(writer_waiting)
        outcomes = _chain(committer, item, first, links=3)
        beside = _hand(committer, _request([(neighbour, 1)], "neighbour"))[1]
    answers = [_answer(o) for o in outcomes]

    expected = CommitConflict if failure == "clashed" else DuplicateCommand
    assert isinstance(answers[0], expected)
    assert all(isinstance(a, CommitConflict) for a in answers[1:]), answers
    assert isinstance(_answer(blocker), list)
    assert isinstance(_answer(beside), list)  # its group's other commands stand
    assert _versions(db, item) == ([1] if failure == "clashed" else [])
    recorded = {r["request_id"] for r in db.commands()}
    assert not recorded & {f"link-{item}-{n}" for n in range(3)}
    assert db.count("event_metadata") == db.event_count()


def test_a_link_behind_a_failed_group_fails_without_being_sent(ledger: Ledger, db: Db) -> None:
    committer = ledger.ledger_recorder.committer
    item = uuid.uuid4()
    committer.commit(_request([(item, 1)], "another-writer"))
    with events_table_locked(db) as writer_waiting:
        # The writer takes the first link alone, while the lock is held...
        pending, first = _hand(committer, _request([(item, 1)], "first"))
        _wait_until(writer_waiting)
        # ...so the second queues behind a group in flight.
        second = _hand(committer, _request([(item, 2)], "second", after=[(item, 1, pending)]))[1]
        groups = committer.stats.groups
    assert isinstance(_answer(first), CommitConflict)
    assert isinstance(_answer(second), CommitConflict)
    assert committer.stats.groups == groups + 1  # only the first one's group was sent
    assert _versions(db, item) == [1]


def test_a_link_whose_predecessor_lost_its_record_to_a_twin_is_not_recorded(
    ledger: Ledger, db: Db
) -> None:
    """A twin records the request id while the group runs: the predecessor is lost at its
    record's insert, and the link behind it, whose record was inserted, gives it back."""
    committer = ledger.ledger_recorder.committer
    committer.commit(_request([(uuid.uuid4(), 1)], "warm-up"))  # the writer's connection
    assert committer._conn is not None
    writer_pid = committer._conn.info.backend_pid
    item = uuid.uuid4()
    commands = Identifier(db.schema, "processed_commands")
    with psycopg.connect(db.url) as twin:
        twin.execute(
            SQL(
                "INSERT INTO {} (merchant_id, request_id, command, fingerprint, aggregate_id,"
                " aggregate_version, result) VALUES (%s, 'twin', 'Test', %s, %s, 1, '{{}}')"
            ).format(commands),
            (MERCHANT_A, "f" * 64, uuid.uuid4()),
        )
        with psycopg.connect(db.url, autocommit=True) as probe:

            def writer_waits_for_the_twin() -> bool:
                row = probe.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (writer_pid,)
                ).fetchone()
                return bool(row and row[0] == "Lock")

            with events_table_locked(db) as writer_waiting:
                blocker = _hand(committer, _request([(uuid.uuid4(), 1)], "blocker"))[1]
                _wait_until(writer_waiting)
                outcomes = _chain(committer, item, _request([(item, 1)], "twin"), links=2)
            _wait_until(writer_waits_for_the_twin)
        twin.commit()
    answers = [_answer(o) for o in outcomes]

    assert isinstance(_answer(blocker), list)
    assert isinstance(answers[0], DuplicateCommand)
    assert all(isinstance(a, CommitConflict) for a in answers[1:]), answers
    assert _versions(db, item) == []
    recorded = [r["request_id"] for r in db.commands()]
    assert recorded.count("twin") == 1
    assert not set(recorded) & {f"link-{item}-{n}" for n in range(2)}
    assert db.count("event_metadata") == db.event_count()


@pytest.mark.parametrize(("stored", "commits"), [(3, True), (2, False), (4, False)])
def test_a_link_behind_a_committed_group_needs_exactly_the_version_it_read(
    ledger: Ledger, db: Db, stored: int, commits: bool
) -> None:
    """Not merely "not newer": a read at version 3 must find version 3 the latest."""
    committer = ledger.ledger_recorder.committer
    item, other = uuid.uuid4(), uuid.uuid4()
    for version in range(1, stored + 1):
        committer.commit(_request([(item, version)], f"setup-{version}"))
    predecessor = Pending(_request([(item, 3)], "predecessor"))
    predecessor.done.set()  # committed in an earlier group, as far as the writer knows
    # It reads the item at version 3 and writes another aggregate.
    request = _request([(other, 1)], "reader", after=[(item, 3, predecessor)])

    if commits:
        assert len(committer.commit(request)) == 1
        assert _versions(db, other) == [1]
    else:
        with pytest.raises(CommitConflict):
            committer.commit(request)
        assert _versions(db, other) == []


# ---- through the application ---------------------------------------------------------------


def _online_sales(ledger: Ledger, count: int) -> list[str]:
    return [
        str(new_sale(ledger, catalog_line("MUG-1", 1), channel=c.Channel.ONLINE).sale.id)
        for _ in range(count)
    ]


def _assert_no_gaps(db: Db, aggregate_id: uuid.UUID) -> None:
    versions = _versions(db, aggregate_id)
    assert versions == list(range(1, len(versions) + 1))


def test_many_reservations_on_one_item_land_in_chains_without_overselling(
    ledger: Ledger, db: Db
) -> None:
    mug = create_product(ledger)
    receive(ledger, mug, 30)
    sales = _online_sales(ledger, 40)
    committer = ledger.ledger_recorder.committer
    chained = committer.stats.chained

    outcomes = race(*[partial(request_full_payment, ledger, s) for s in sales])

    paid = successes(outcomes)
    refused = failures(outcomes)
    assert len(paid) == 30
    assert len(refused) == 10
    assert all(isinstance(e, RuleViolated) and e.reason == "INSUFFICIENT_STOCK" for e in refused)
    item = stock(ledger, mug)
    assert (item.on_hand, item.reserved, item.available) == (30, 30, 0)
    assert sum(item.reservations.values()) == 30
    _assert_no_gaps(db, item.id)
    assert db.topics(item.id).count("posledger.StockReserved") == 30
    assert committer.stats.chained > chained  # they did share groups

    # Completing them sells from the same item, in chains again.
    paid_sales = [s for s, o in zip(sales, outcomes, strict=True) if isinstance(o, str)]
    completions = race(
        *[
            partial(ledger.record_payment_result, ctx(), approve(s, str(p)))
            for s, p in zip(paid_sales, paid, strict=True)
        ]
    )
    assert not failures(completions)
    item = stock(ledger, mug)
    assert (item.on_hand, item.reserved, item.available) == (0, 0, 0)
    _assert_no_gaps(db, item.id)


def test_a_second_ledger_writing_the_item_makes_chains_retry_and_nothing_is_lost(
    ledger: Ledger, db: Db
) -> None:
    """Another process's receipts break chains at commit; every sale still lands once."""
    mug = create_product(ledger)
    receive(ledger, mug, 10)
    sales = _online_sales(ledger, 24)
    other = Ledger.open(ledger.settings)
    try:
        receipts = [
            (lambda: other.receive_stock(ctx(), inv.ReceiveStock(str(mug.id), "loc-1", 1)))
            for _ in range(12)
        ]
        payments: list[Callable[[], object]] = [
            partial(request_full_payment, ledger, s) for s in sales
        ]
        outcomes = race(*payments, *receipts)
    finally:
        other.close()

    paid = successes(outcomes[: len(sales)])
    refused = failures(outcomes[: len(sales)])
    assert not failures(outcomes[len(sales) :])
    assert all(isinstance(e, RuleViolated) and e.reason == "INSUFFICIENT_STOCK" for e in refused)
    item = stock(ledger, mug)
    assert item.on_hand == 22
    assert item.reserved == len(paid) <= 22
    assert sum(item.reservations.values()) == len(paid)
    assert set(item.reservations) == {
        s for s, o in zip(sales, outcomes, strict=False) if not isinstance(o, Exception)
    }
    _assert_no_gaps(db, item.id)
    topics = db.topics(item.id)
    assert topics.count("posledger.StockReserved") == len(paid)
    assert topics.count("posledger.StockReceived") == 13
    # One record per command that succeeded, and never one for a decision that fell.
    requests = [r["request_id"] for r in db.commands()]
    assert len(requests) == len(set(requests))


def test_twins_inside_a_chain_are_answered_once(ledger: Ledger, db: Db) -> None:
    """Retries with the same request id among a chain: one reservation per request."""
    mug = create_product(ledger)
    receive(ledger, mug, 100)
    sales = _online_sales(ledger, 12)
    contexts = [ctx() for _ in sales]
    commands = [request_payment_cmd(s, ledger.get_sale(MERCHANT_A, s).amount_due) for s in sales]

    def pay(n: int) -> str:
        return str(ledger.request_payment(contexts[n], commands[n]).ids["payment_id"])

    outcomes = race(*[partial(pay, n % len(sales)) for n in range(3 * len(sales))])

    assert not failures(outcomes)
    for n in range(len(sales)):
        assert len(set(outcomes[n :: len(sales)])) == 1  # every twin got the same payment
    item = stock(ledger, mug)
    assert item.reserved == len(sales)
    _assert_no_gaps(db, item.id)
    assert db.topics(item.id).count("posledger.StockReserved") == len(sales)


def test_stress_a_hot_item_under_mixed_writers_keeps_its_totals(ledger: Ledger, db: Db) -> None:
    """Rounds of reservations, completions and a second ledger's receipts, all racing."""
    mug = create_product(ledger)
    receive(ledger, mug, 15)
    other = Ledger.open(ledger.settings)
    received, sold = 15, 0
    try:
        for _ in range(3):
            sales = _online_sales(ledger, 12)
            calls: list[Callable[[], object]] = [
                partial(request_full_payment, ledger, s) for s in sales
            ]
            calls += [
                lambda: other.receive_stock(ctx(), inv.ReceiveStock(str(mug.id), "loc-1", 2))
                for _ in range(3)
            ]
            outcomes = race(*calls)
            received += 6
            paid = [
                (s, str(o)) for s, o in zip(sales, outcomes, strict=False) if isinstance(o, str)
            ]
            done = race(
                *[partial(ledger.record_payment_result, ctx(), approve(s, p)) for s, p in paid]
            )
            assert not failures(done)
            sold += len(paid)
            item = stock(ledger, mug)
            assert (item.on_hand, item.reserved) == (received - sold, 0)
    finally:
        other.close()
    _assert_no_gaps(db, stock(ledger, mug).id)
    assert sold <= received


def test_a_command_on_a_busy_item_waits_for_its_turn_and_decides_once(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another command holds the item's turn, a payment of a sale of it does not
    decide on state that is about to change and decide again: it waits, then decides."""
    mug = create_product(ledger)
    receive(ledger, mug, 5)
    (sale_id,) = _online_sales(ledger, 1)
    decisions: list[str] = []
    decide = Sale.request_payment

    def counted(self: Sale, **fields: Any) -> str:
        decisions.append(str(self.id))
        return decide(self, **fields)

    monkeypatch.setattr(Sale, "request_payment", counted)
    paid: list[str] = []
    with ledger.command_cache.writing(frozenset({stock(ledger, mug).id})):
        payer = threading.Thread(
            target=lambda: paid.append(request_full_payment(ledger, sale_id)), daemon=True
        )
        payer.start()
        payer.join(0.3)
        assert decisions == []  # waiting for the turn, not deciding on the item as it is
    payer.join(10)
    assert decisions == [sale_id]  # once, not once before the wait and once after
    assert len(paid) == 1
    assert stock(ledger, mug).reserved == 1
