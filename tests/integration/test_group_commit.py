"""Group commit: many commands in one transaction, each succeeding or failing on its own.

The writer is made to collect a known group by holding the events table's lock from
another connection while the commands queue up behind the one it is stuck on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Identifier

from ledger.application import Ledger
from ledger.domain import commands as c
from ledger.domain.sale import Sale
from ledger.group_commit import (
    CommandRecord,
    CommitConflict,
    CommitRequest,
    DuplicateCommand,
    EventMetadata,
)
from ledger.store import Settings
from tests.integration.conftest import (
    COFFEE,
    EVENTS_TABLE,
    MERCHANT_A,
    Db,
    create_sale_cmd,
    ctx,
    open_sale,
    request_payment_cmd,
)

pytestmark = pytest.mark.timeout(120)


def _event(aggregate_id: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(
        originator_id=aggregate_id,
        originator_version=version,
        topic="posledger.TestEvent",
        state=b'{"n": %d}' % version,
    )


def _request(aggregate_id: uuid.UUID, version: int, request_id: str) -> CommitRequest:
    return CommitRequest(
        events=[_event(aggregate_id, version)],
        command_record=CommandRecord(
            merchant_id=MERCHANT_A,
            request_id=request_id,
            command="Test",
            fingerprint="f" * 64,
            aggregate_id=aggregate_id,
            aggregate_version=version,
        ),
        metadata=EventMetadata(merchant_id=MERCHANT_A, request_id=request_id),
    )


@contextmanager
def events_table_locked(db: Db) -> Iterator[Callable[[], bool]]:
    """Holds the lock every writer of the log needs, until the block ends.

    Yields a check: is a writer waiting for the lock?
    """
    table = Identifier(db.schema, EVENTS_TABLE)
    with psycopg.connect(db.url) as conn, psycopg.connect(db.url, autocommit=True) as probe:
        conn.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))

        def writer_waiting() -> bool:
            row = probe.execute(
                SQL("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass"),
                (table.as_string(probe),),
            ).fetchone()
            return bool(row and row[0])

        yield writer_waiting
        conn.rollback()


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_group_with_a_conflict_and_a_duplicate_commits_the_others_once(
    ledger: Ledger, db: Db
) -> None:
    committer = ledger.ledger_recorder.committer
    taken, clashing = uuid.uuid4(), uuid.uuid4()
    committer.commit(_request(clashing, 1, "already-there"))
    first = uuid.uuid4()
    good = [uuid.uuid4() for _ in range(3)]
    groups_before = committer.stats.groups

    with events_table_locked(db) as writer_waiting:
        # The writer takes this one alone and waits for the lock with it...
        blocker = _in_thread(lambda: committer.commit(_request(first, 1, "first")))
        _wait_until(writer_waiting)
        # ...while these queue up and will be committed as one group.
        calls = [
            lambda: committer.commit(_request(clashing, 1, "clashes")),  # version 1 exists
            lambda: committer.commit(_request(taken, 1, "already-there")),  # known request
            *[(lambda i=i: committer.commit(_request(good[i], 1, f"good-{i}"))) for i in range(3)],
        ]
        threads = [_in_thread(call) for call in calls]
        _wait_until(lambda: len(committer._queue) == len(calls))
    for thread, _ in [blocker, *threads]:
        thread.join(30)

    assert committer.stats.groups == groups_before + 2  # the blocker's, then all five
    outcomes = [outcome[0] for _, outcome in threads]
    assert isinstance(outcomes[0], CommitConflict)
    assert isinstance(outcomes[1], DuplicateCommand)
    committed = outcomes[2:]
    assert all(isinstance(ids, list) and len(ids) == 1 for ids in committed)
    rows = db.events()
    by_aggregate = {row.originator_id: row for row in rows}
    for aggregate_id, ids in zip(good, committed, strict=True):
        assert ids == [by_aggregate[aggregate_id].notification_id]
    assert taken not in by_aggregate
    assert [r.originator_id for r in rows].count(clashing) == 1
    assert sorted(r["request_id"] for r in db.commands()) == sorted(
        ["already-there", "first", "good-0", "good-1", "good-2"]
    )
    assert db.count("event_metadata") == len(rows)


def test_twins_of_one_request_in_one_group_write_once(ledger: Ledger, db: Db) -> None:
    """A twin arriving in the same group is deferred and then meets the first's record."""
    committer = ledger.ledger_recorder.committer
    sale = uuid.uuid4()
    with events_table_locked(db) as writer_waiting:
        blocker = _in_thread(lambda: committer.commit(_request(uuid.uuid4(), 1, "blocker")))
        _wait_until(writer_waiting)
        twins = [_in_thread(lambda: committer.commit(_request(sale, 1, "twin"))) for _ in range(2)]
        _wait_until(lambda: len(committer._queue) == 2)
    for thread, _ in [blocker, *twins]:
        thread.join(30)

    outcomes = sorted((outcome[0] for _, outcome in twins), key=lambda o: type(o).__name__)
    assert isinstance(outcomes[0], DuplicateCommand)
    assert isinstance(outcomes[1], list)
    assert [r.originator_id for r in db.events()].count(sale) == 1


def test_commands_racing_in_groups_answer_like_single_commands(ledger: Ledger, db: Db) -> None:
    """Many threads, some retrying the same request: one sale per request id."""
    request_ids = [str(uuid.uuid4()) for _ in range(40)]
    answers: dict[str, set[uuid.UUID]] = {r: set() for r in request_ids}
    lock = threading.Lock()

    def client(offset: int) -> None:
        for n in range(len(request_ids)):
            request_id = request_ids[(n + offset) % len(request_ids)]
            result = ledger.create_sale(ctx(MERCHANT_A, request_id), create_sale_cmd(COFFEE))
            with lock:
                answers[request_id].add(result.sale.id)

    threads = [threading.Thread(target=client, args=(i * 7,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert all(len(ids) == 1 for ids in answers.values())
    assert db.event_count() == len(request_ids)
    assert db.command_count() == len(request_ids)
    stats = ledger.ledger_recorder.committer.stats
    assert stats.largest_group > 1  # they really were grouped


def test_a_stale_cached_read_is_caught_at_commit_and_decided_again(
    ledger: Ledger, settings: Settings, db: Db
) -> None:
    """Another process's write leaves this one's cache behind; the commit notices."""
    sale = open_sale(ledger)
    other = Ledger.open(settings)
    try:
        other.add_line_item(ctx(), c.AddLineItem(str(sale.id), COFFEE))
    finally:
        other.close()
    # This process still has version 1 cached; its next command must build on version 2.
    result = ledger.add_line_item(ctx(), c.AddLineItem(str(sale.id), COFFEE))

    assert result.sale.version == 3
    assert [r.originator_version for r in db.events(sale.id)] == [1, 2, 3]
    assert len(ledger.get_sale(MERCHANT_A, str(sale.id)).line_items) == 3


def test_a_refusal_on_cached_state_is_confirmed_on_fresh_state(
    ledger: Ledger, settings: Settings
) -> None:
    """Cached state said "no such payment"; the database knows it: no false error."""
    sale = open_sale(ledger)
    other = Ledger.open(settings)
    try:
        requested = other.request_payment(ctx(), request_payment_cmd(str(sale.id), sale.total))
    finally:
        other.close()
    payment_id = requested.ids["payment_id"]

    canceled = ledger.cancel_payment(
        ctx(), c.CancelPayment(str(sale.id), payment_id, "changed their mind")
    )

    assert canceled.sale.payments[payment_id].status.name == "CANCELED"


def test_a_reader_tailing_the_log_sees_every_event_in_order(
    settings: Settings, db: Db, ledger: Ledger
) -> None:
    """Two writers (two recorders, as in two processes) commit groups while a reader tails."""
    writers = [ledger, Ledger.open(settings)]
    stop = threading.Event()
    seen: list[int] = []

    def tail() -> None:
        recorder = ledger.ledger_recorder
        last = 0
        while True:
            finished = stop.is_set()
            page = recorder.select_notifications(start=last + 1, limit=500)
            seen.extend(n.id for n in page)
            if page:
                last = page[-1].id
            elif finished:
                return
            else:
                time.sleep(0.001)

    def write(app: Ledger) -> None:
        for _ in range(40):
            sale = app.create_sale(ctx(), create_sale_cmd(COFFEE)).sale
            app.cancel_sale(ctx(), c.CancelSale(str(sale.id), "customer left"))

    reader = threading.Thread(target=tail, daemon=True)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in writers for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stop.set()
    reader.join(30)
    writers[1].close()

    stored = [row.notification_id for row in db.events()]
    assert len(stored) == 2 * 6 * 40 * 2
    assert seen == stored  # every event, each once, in position order
    assert max(w.ledger_recorder.committer.stats.largest_group for w in writers) > 1


CRASHING_WRITER = textwrap.dedent(
    """
    import sys, threading, uuid
    from ledger.application import Context, Ledger
    from ledger.domain import commands as c
    from ledger.store import Settings

    url, schema = sys.argv[1], sys.argv[2]
    ledger = Ledger.open(Settings(database_url=url, schema=schema, pool_size=4))
    line = c.LineItemInput(sku="COF-1", name="Coffee", quantity=2, unit_price=450)  # COFFEE
    out = threading.Lock()

    def client():
        while True:
            request_id = str(uuid.uuid4())
            with out:
                print("SENT", request_id, flush=True)
            sale = ledger.create_sale(
                Context(merchant_id="merchant-a", request_id=request_id),
                c.CreateSale(location_id="loc-1", channel=c.Channel.IN_STORE,
                             currency_code="USD", line_items=(line,)),
            ).sale
            with out:
                print("ACK", request_id, sale.id, flush=True)

    for _ in range(12):
        threading.Thread(target=client, daemon=True).start()
    threading.Event().wait()
    """
)


def test_a_crash_mid_group_loses_nothing_acknowledged(
    settings: Settings, db: Db, tmp_path: Path
) -> None:
    """kill -9 while groups are in flight: every acknowledged command is there, once;
    a retry of every command sent, acknowledged or not, answers one sale per request."""
    script = tmp_path / "writer.py"
    script.write_text(CRASHING_WRITER)
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, str(script), db.url, db.schema],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        _wait_until(lambda: log.read_text().count("ACK") >= 200, timeout=60)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)

    sent: list[str] = []
    acked: dict[str, str] = {}
    for line in log.read_text().splitlines():
        words = line.split()  # the kill may cut the last line short: only whole lines count
        if words[:1] == ["SENT"] and len(words) == 2:
            sent.append(words[1])
        elif words[:1] == ["ACK"] and len(words) == 3:
            acked[words[1]] = words[2]
    assert len(acked) >= 200

    records = {r["request_id"]: str(r["aggregate_id"]) for r in db.commands()}
    for request_id, sale_id in acked.items():
        assert records[request_id] == sale_id
        assert db.topics(sale_id) == [Sale.Created.TOPIC]
    assert db.event_count() == len(records)  # no event without its record

    ledger = Ledger.open(settings)
    try:
        for request_id in sent:
            again = ledger.create_sale(ctx(MERCHANT_A, request_id), create_sale_cmd(COFFEE))
            if request_id in acked:
                assert again.replayed
                assert str(again.sale.id) == acked[request_id]
    finally:
        ledger.close()
    assert db.event_count() == db.command_count() == len(set(sent))
