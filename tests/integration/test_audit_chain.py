"""The audit chain against real PostgreSQL: extending it exactly once, and `posledger audit`
catching rows edited, deleted and inserted directly in the database, at the right position.

Tampering is done the way an intruder with database access would: SQL on the events table
(and, for the cases only a signed checkpoint catches, on the stored chain as well).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Composed, Identifier
from typer.testing import CliRunner, Result

from ledger.application import Ledger
from ledger.audit import GENESIS, ChainKeeper, digest
from ledger.audit.chain import event_hash
from ledger.audit.store import CHAIN_TABLE, HEAD_TABLE
from ledger.cli import app
from ledger.store import Settings
from tests.integration.catalog_support import create_product, receive
from tests.integration.conftest import EVENTS_TABLE, race, sale_with_pending_payment

Row = tuple[int, uuid.UUID, int, str | None, bytes | None]


@dataclass(frozen=True)
class Log:
    """Direct SQL on one test schema: what an intruder (or an auditor) can do."""

    url: str
    schema: str

    def table(self, name: str) -> Identifier:
        return Identifier(self.schema, name)

    def execute(self, query: SQL | Composed, params: tuple[Any, ...] = ()) -> list[Any]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def events(self) -> list[Row]:
        return [
            (p, i, v, t, None if s is None else bytes(s))
            for p, i, v, t, s in self.execute(
                SQL(
                    "SELECT notification_id, originator_id, originator_version, topic, state"
                    " FROM {} ORDER BY notification_id"
                ).format(self.table(EVENTS_TABLE))
            )
        ]

    def positions(self) -> list[int]:
        return [row[0] for row in self.events()]

    def stored_chain(self) -> list[tuple[int, bytes]]:
        rows = self.execute(
            SQL("SELECT position, digest FROM {} ORDER BY position").format(self.table(CHAIN_TABLE))
        )
        return [(p, bytes(d)) for p, d in rows]

    def burn_position(self) -> int:
        """Takes a notification id and never uses it: the gap a rolled-back insert leaves."""
        sequence = f"{self.schema}.{EVENTS_TABLE}"
        rows = self.execute(
            SQL("SELECT nextval(pg_get_serial_sequence(%s, 'notification_id'))"), (sequence,)
        )
        return int(rows[0][0])

    def insert_event(self, position: int, topic: str = "posledger.SaleCreated") -> None:
        self.execute(
            SQL(
                "INSERT INTO {} (notification_id, originator_id, originator_version, topic,"
                " state) VALUES (%s, %s, 1, %s, %s)"
            ).format(self.table(EVENTS_TABLE)),
            (position, uuid.uuid4(), topic, b'{"forged":true}'),
        )

    def rewind_chain(self, position: int) -> None:
        """Drops the stored chain after `position` (an intruder covering their tracks;
        `extend` then recomputes it over the edited events)."""
        previous = [(p, d) for p, d in self.stored_chain() if p <= position]
        self.execute(
            SQL("DELETE FROM {} WHERE position > %s").format(self.table(CHAIN_TABLE)), (position,)
        )
        last_position, last_digest = previous[-1] if previous else (0, GENESIS)
        self.execute(
            SQL("UPDATE {} SET position = %s, digest = %s, events = %s").format(
                self.table(HEAD_TABLE)
            ),
            (last_position, last_digest, len(previous)),
        )


def recompute(rows: list[Row]) -> list[tuple[int, bytes]]:
    """The chain over `rows`, computed in Python from the raw rows."""
    result = []
    previous = GENESIS
    for position, originator_id, version, topic, state in rows:
        previous = digest(previous, position, originator_id, version, topic, state)
        result.append((position, previous))
    return result


@pytest.fixture
def log(settings: Settings, ledger: Ledger) -> Log:
    assert settings.database_url is not None
    return Log(settings.database_url, settings.schema)


@pytest.fixture
def keeper(ledger: Ledger) -> ChainKeeper:
    return ChainKeeper.for_ledger(ledger)


def build_log(ledger: Ledger, log: Log, sales: int = 6) -> list[int]:
    """A log of real events with gaps in its positions; returns the burnt positions."""
    gaps = []
    product = create_product(ledger)
    receive(ledger, product, 10)
    for i in range(sales):
        sale_with_pending_payment(ledger)
        if i % 2 == 0:
            gaps.append(log.burn_position())
    return gaps


# ---- the CLI ----------------------------------------------------------------------------------


def audit(settings: Settings, *args: str) -> Result:
    assert settings.database_url is not None
    env = {
        "POSLEDGER_DATABASE_URL": settings.database_url,
        "POSLEDGER_DB_SCHEMA": settings.schema,
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, ["audit", *args], env=env)


def verify(settings: Settings, *args: str) -> tuple[int, dict[str, Any], str]:
    """`posledger audit verify --json`: exit code, the JSON report, the messages."""
    result = audit(settings, "verify", "--json", *args)
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, report, result.stderr


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    result = CliRunner().invoke(app, ["audit", "keygen", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert "BEGIN PUBLIC KEY" in result.stdout
    return path


def checkpoint(settings: Settings, key: Path, out: Path) -> Path:
    result = audit(settings, "checkpoint", "--key", str(key), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


# ---- the SQL hash is the Python hash --------------------------------------------------------


def test_the_database_hashes_events_exactly_as_the_chain_defines(
    log: Log, keeper: ChainKeeper
) -> None:
    table = log.table(EVENTS_TABLE)
    odd_rows = [
        (1, uuid.uuid4(), 1, "posledger.SaleCreated", b'{"a":1}'),
        (2, uuid.uuid4(), 2**62, None, None),
        (5, uuid.uuid4(), 3, "", b""),
        (9, uuid.uuid4(), 1, "posledger.Café ✓ 日本", b"\x00\xff\x00 bytes"),
        (2**40, uuid.uuid4(), 7, "t", b"x" * 100_000),
    ]
    for row in odd_rows:
        log.execute(
            SQL(
                "INSERT INTO {} (notification_id, originator_id, originator_version, topic,"
                " state) VALUES (%s, %s, %s, %s, %s)"
            ).format(table),
            row,
        )
    with psycopg.connect(log.url) as conn:
        hashed = keeper.event_hashes(conn, 0, 2**62, 100)
    assert hashed == [(row[0], event_hash(*row)) for row in odd_rows]


# ---- extending ------------------------------------------------------------------------------


def test_extend_chains_every_event_once_in_position_order(
    ledger: Ledger, log: Log, keeper: ChainKeeper
) -> None:
    gaps = build_log(ledger, log)
    assert gaps
    assert not set(gaps) & set(log.positions())

    report = keeper.extend(page_size=3)  # many pages

    events = log.events()
    assert report.events == len(events)
    assert log.stored_chain() == recompute(events)
    assert report.head.position == events[-1][0]
    assert report.head.digest == recompute(events)[-1][1]
    assert keeper.head() == report.head
    assert keeper.extend().events == 0

    sale_with_pending_payment(ledger)
    more = keeper.extend(page_size=3)
    assert more.events == 2
    assert log.stored_chain() == recompute(log.events())
    assert more.head.events == len(log.events())


def test_concurrent_extends_chain_each_event_exactly_once(
    ledger: Ledger, log: Log, keeper: ChainKeeper
) -> None:
    build_log(ledger, log, sales=10)
    reports = race(*[lambda: keeper.extend(page_size=2) for _ in range(4)])
    chained = [r.events for r in reports if not isinstance(r, Exception)]
    assert len(chained) == 4, reports
    assert sum(chained) == len(log.events())
    assert log.stored_chain() == recompute(log.events())


def test_an_empty_log_verifies_clean(settings: Settings, ledger: Ledger) -> None:
    code, report, _ = verify(settings)
    assert code == 0
    assert report["clean"] is True
    assert report["events"] == 0


# ---- tampering, found by the stored chain -----------------------------------------------------


TAMPERINGS = {
    "state": "UPDATE {} SET state = state || ' '::bytea WHERE notification_id = %s",
    "topic": "UPDATE {} SET topic = 'posledger.SaleVoided' WHERE notification_id = %s",
    "version": "UPDATE {} SET originator_version = originator_version + 100"
    " WHERE notification_id = %s",
    "id": "UPDATE {} SET originator_id = gen_random_uuid() WHERE notification_id = %s",
    "null-state": "UPDATE {} SET state = NULL WHERE notification_id = %s",
}


@pytest.mark.parametrize("field", sorted(TAMPERINGS))
def test_an_edited_event_is_reported_at_its_position(
    settings: Settings, ledger: Ledger, log: Log, field: str
) -> None:
    build_log(ledger, log)
    assert audit(settings, "chain").exit_code == 0
    assert verify(settings)[0] == 0
    target = log.positions()[7]

    log.execute(SQL(TAMPERINGS[field]).format(log.table(EVENTS_TABLE)), (target,))

    code, report, messages = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": "changed", "position": target, "after": None}
    assert f"TAMPERED at position {target} (changed)" in messages


def test_a_deleted_event_is_reported_at_its_position(
    settings: Settings, ledger: Ledger, log: Log
) -> None:
    build_log(ledger, log)
    assert audit(settings, "chain").exit_code == 0
    target = log.positions()[5]

    log.execute(
        SQL("DELETE FROM {} WHERE notification_id = %s").format(log.table(EVENTS_TABLE)),
        (target,),
    )

    code, report, messages = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": "deleted", "position": target, "after": None}
    assert f"the event at position {target} was deleted" in messages


def test_an_event_inserted_into_a_gap_is_reported_at_its_position(
    settings: Settings, ledger: Ledger, log: Log
) -> None:
    gaps = build_log(ledger, log)
    assert audit(settings, "chain").exit_code == 0
    target = gaps[1]  # a burnt id inside the chained range
    assert log.positions()[0] < target < log.positions()[-1]

    log.insert_event(target)

    code, report, messages = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": "inserted", "position": target, "after": None}
    assert f"an event was inserted at position {target}" in messages


def test_an_event_deleted_and_replaced_at_its_position_is_reported_changed(
    settings: Settings, ledger: Ledger, log: Log
) -> None:
    build_log(ledger, log)
    assert audit(settings, "chain").exit_code == 0
    target = log.positions()[4]

    log.execute(
        SQL("DELETE FROM {} WHERE notification_id = %s").format(log.table(EVENTS_TABLE)),
        (target,),
    )
    log.insert_event(target)

    code, report, _ = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": "changed", "position": target, "after": None}


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("UPDATE {} SET digest = sha256(digest) WHERE position = %s", "changed"),
        ("DELETE FROM {} WHERE position = %s", "inserted"),
    ],
)
def test_an_edited_stored_chain_is_reported_at_its_position(
    settings: Settings, ledger: Ledger, log: Log, statement: str, kind: str
) -> None:
    build_log(ledger, log)
    assert audit(settings, "chain").exit_code == 0
    target = log.positions()[3]

    log.execute(SQL(statement).format(log.table(CHAIN_TABLE)), (target,))

    code, report, _ = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": kind, "position": target, "after": None}


def test_the_first_of_several_tamperings_is_reported(
    settings: Settings, ledger: Ledger, log: Log
) -> None:
    build_log(ledger, log)
    assert audit(settings, "chain").exit_code == 0
    positions = log.positions()
    events = log.table(EVENTS_TABLE)
    log.execute(SQL("DELETE FROM {} WHERE notification_id = %s").format(events), (positions[9],))
    log.execute(SQL(TAMPERINGS["state"]).format(events), (positions[3],))

    code, report, _ = verify(settings)
    assert code == 1
    assert report["finding"]["position"] == positions[3]


def test_events_after_the_chain_head_are_not_yet_chained(
    settings: Settings, ledger: Ledger, log: Log
) -> None:
    build_log(ledger, log)
    assert audit(settings, "chain").exit_code == 0
    sale_with_pending_payment(ledger)

    code, report, messages = verify(settings)
    assert code == 0
    assert report["unchained"] == 2
    assert "2 events after position" in messages

    assert audit(settings, "chain").exit_code == 0
    assert verify(settings)[1]["unchained"] == 0


# ---- tampering that only a signed checkpoint catches -------------------------------------------


def test_an_event_edited_with_its_stored_chain_is_caught_by_the_checkpoint(
    settings: Settings, ledger: Ledger, log: Log, keeper: ChainKeeper, key: Path, tmp_path: Path
) -> None:
    build_log(ledger, log)
    signed = checkpoint(settings, key, tmp_path / "checkpoint.json")
    public_key = f"{key}.pub"
    code, report, messages = verify(
        settings, "--checkpoint", str(signed), "--public-key", public_key
    )
    assert (code, report["clean"]) == (0, True)
    assert "matches the signed checkpoint" in messages
    positions = log.positions()
    target = positions[6]

    # The intruder edits an event and recomputes the stored chain from there on.
    log.execute(SQL(TAMPERINGS["state"]).format(log.table(EVENTS_TABLE)), (target,))
    log.rewind_chain(positions[5])
    keeper.extend()
    assert log.stored_chain() == recompute(log.events())

    code, report, _ = verify(settings)
    assert (code, report["clean"]) == (0, True)  # the stored chain alone is fooled

    code, report, messages = verify(
        settings, "--checkpoint", str(signed), "--public-key", public_key
    )
    assert code == 1
    # With no more events than anchors, every event is an anchor: the position is exact.
    assert report["finding"] == {"kind": "rewritten", "position": target, "after": positions[5]}
    assert f"TAMPERED at position {target} (rewritten)" in messages


def test_deleting_the_latest_events_with_their_chain_is_caught_by_the_checkpoint(
    settings: Settings, ledger: Ledger, log: Log, key: Path, tmp_path: Path
) -> None:
    build_log(ledger, log)
    signed = checkpoint(settings, key, tmp_path / "checkpoint.json")
    positions = log.positions()

    log.execute(
        SQL("DELETE FROM {} WHERE notification_id > %s").format(log.table(EVENTS_TABLE)),
        (positions[-3],),
    )
    log.rewind_chain(positions[-3])

    assert verify(settings)[0] == 0
    code, report, _ = verify(settings, "--checkpoint", str(signed))
    assert code == 1
    assert report["finding"] == {
        "kind": "rewritten",
        "position": positions[-2],
        "after": positions[-3],
    }


def test_a_checkpoint_stays_valid_while_the_log_grows(
    settings: Settings, ledger: Ledger, log: Log, key: Path, tmp_path: Path
) -> None:
    build_log(ledger, log)
    first = checkpoint(settings, key, tmp_path / "first.json")
    sale_with_pending_payment(ledger)
    second = checkpoint(settings, key, tmp_path / "second.json")
    sale_with_pending_payment(ledger)
    for signed in (first, second):
        code, report, _ = verify(settings, "--checkpoint", str(signed))
        assert (code, report["clean"]) == (0, True)
    document = json.loads(second.read_text())
    assert document["position"] == log.positions()[-3]
    assert document["events"] == len(log.positions()) - 2
    assert document["schema"] == settings.schema


def test_no_checkpoint_is_signed_over_a_tampered_log(
    settings: Settings, ledger: Ledger, log: Log, key: Path, tmp_path: Path
) -> None:
    build_log(ledger, log)
    assert audit(settings, "chain").exit_code == 0
    target = log.positions()[2]
    log.execute(SQL(TAMPERINGS["topic"]).format(log.table(EVENTS_TABLE)), (target,))

    out = tmp_path / "checkpoint.json"
    result = audit(settings, "checkpoint", "--key", str(key), "--out", str(out))
    assert result.exit_code == 1
    assert not out.exists()
    assert f"TAMPERED at position {target} (changed)" in result.stderr


def test_bad_checkpoints_and_keys_exit_2(
    settings: Settings, ledger: Ledger, log: Log, key: Path, tmp_path: Path
) -> None:
    build_log(ledger, log)
    signed = checkpoint(settings, key, tmp_path / "checkpoint.json")

    forged = json.loads(signed.read_text())
    forged["digest"] = "00" * 32
    forged["anchors"][-1][1] = "00" * 32
    forged_path = tmp_path / "forged.json"
    forged_path.write_text(json.dumps(forged))
    code, _, messages = verify(settings, "--checkpoint", str(forged_path))
    assert code == 2
    assert "signature does not match" in messages

    other = tmp_path / "other.key"
    assert CliRunner().invoke(app, ["audit", "keygen", "--out", str(other)]).exit_code == 0
    code, _, messages = verify(
        settings, "--checkpoint", str(signed), "--public-key", f"{other}.pub"
    )
    assert code == 2
    assert "another key" in messages

    code, _, _ = verify(settings, "--checkpoint", str(tmp_path / "missing.json"))
    assert code == 2
    result = audit(settings, "checkpoint", "--key", str(signed), "--out", str(tmp_path / "x"))
    assert result.exit_code == 2


# ---- a large clean log ------------------------------------------------------------------------


def load_synthetic_events(log: Log, count: int) -> None:
    """`count` events after the current ones, by COPY (the chain only needs rows), one id
    in 500 left out as a gap."""
    start = max(log.positions(), default=0)
    aggregate = uuid.uuid4()
    with psycopg.connect(log.url) as conn, conn.cursor() as curs:
        copy_sql = SQL(
            "COPY {} (notification_id, originator_id, originator_version, topic, state) FROM STDIN"
        ).format(log.table(EVENTS_TABLE))
        position = start
        with curs.copy(copy_sql) as copy:
            for i in range(count):
                position += 2 if position % 500 == 0 else 1
                if i % 10 == 0:
                    aggregate = uuid.uuid4()
                state = b'{"amount":%d,"merchant_id":"merchant-%d","note":"%s"}' % (
                    i,
                    i % 7,
                    b"x" * (i % 200),
                )
                copy.write_row((position, aggregate, i % 10 + 1, "posledger.Synthetic", state))
        curs.execute(
            SQL("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)"),
            (f"{log.schema}.{EVENTS_TABLE}", position),
        )


def test_a_clean_log_of_100000_events_verifies(
    settings: Settings, ledger: Ledger, log: Log, keeper: ChainKeeper, key: Path, tmp_path: Path
) -> None:
    build_log(ledger, log, sales=2)
    load_synthetic_events(log, 100_000)
    total = len(log.positions())
    assert total > 100_000

    signed = checkpoint(settings, key, tmp_path / "checkpoint.json")  # extends, verifies
    assert keeper.head().events == total
    started = time.perf_counter()
    code, report, messages = verify(
        settings, "--checkpoint", str(signed), "--public-key", f"{key}.pub"
    )
    seconds = time.perf_counter() - started
    assert code == 0, messages
    assert report["clean"] is True
    assert report["events"] == total
    assert report["unchained"] == 0
    assert "Clean." in messages
    assert f"Verified {total:,} events" in messages
    assert seconds < 30, f"verifying {total} events took {seconds:.1f} s"

    # With more events than anchors, a rewritten chain is placed between two anchors.
    document = json.loads(signed.read_text())
    assert 250 <= len(document["anchors"]) <= 257  # up to 256 evenly spaced, and the head
    assert document["anchors"][-1] == [document["position"], document["digest"]]
    positions = log.positions()
    target = positions[total // 2]
    log.execute(SQL(TAMPERINGS["version"]).format(log.table(EVENTS_TABLE)), (target,))
    log.rewind_chain(target - 1)
    keeper.extend()
    assert verify(settings)[0] == 0
    code, report, _ = verify(settings, "--checkpoint", str(signed))
    assert code == 1
    finding = report["finding"]
    assert finding["kind"] == "rewritten"
    assert finding["after"] < target <= finding["position"]
    assert finding["position"] - finding["after"] <= total // 256 + 2 * (total // 500 + 1)
