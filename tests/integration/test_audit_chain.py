"""The audit chain against real PostgreSQL: extending it exactly once, and `posledger audit`
catching rows edited, deleted and inserted directly in the database, at the right position.

Tampering is done the way an intruder with database access would: SQL on the events table
(and, for the cases only a signed checkpoint catches, on the stored chain as well).
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.sql import SQL, Composed, Identifier
from typer.testing import CliRunner, Result

from ledger.application import Ledger
from ledger.audit import GENESIS, ChainKeeper, Finding, Kind, digest
from ledger.audit.chain import CommandRow, MetadataRow, chain, event_hash, event_hash_v2
from ledger.audit.schema import CHAIN_TABLE, HEAD_TABLE
from ledger.bootstrap import build_chain_keeper
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

    def records(self) -> list[tuple[int, bytes]]:
        """(position, v2 event hash) of every event, hashed in Python from the raw rows."""
        rows = self.execute(
            SQL(
                "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic,"
                " e.state, m.originator_id IS NOT NULL, m.merchant_id, m.app_id, m.key_id,"
                " m.location_id, m.device_id, m.request_id, m.command_recorded,"
                " c.merchant_id IS NOT NULL, c.command, c.fingerprint, c.aggregate_id,"
                " c.aggregate_version, c.result::text"
                " FROM {} e LEFT JOIN {} m USING (originator_id, originator_version)"
                " LEFT JOIN {} c ON m.command_recorded AND c.merchant_id = m.merchant_id"
                " AND c.request_id = m.request_id ORDER BY e.notification_id"
            ).format(
                self.table(EVENTS_TABLE),
                self.table("event_metadata"),
                self.table("processed_commands"),
            )
        )
        hashed = []
        for row in rows:
            position, originator_id, version, topic, state = row[:5]
            metadata = MetadataRow(*row[6:13]) if row[5] else None
            command = CommandRow(*row[14:19]) if row[13] else None
            state = None if state is None else bytes(state)
            hashed.append(
                (
                    position,
                    event_hash_v2(
                        position, originator_id, version, topic, state, metadata, command
                    ),
                )
            )
        return hashed

    def rechain(self, after: int) -> None:
        """An intruder covering their tracks: recomputes the stored chain after `after`
        over the events as they are now (with the ledger's own hashes)."""
        previous = [(p, d) for p, d in self.stored_chain() if p <= after]
        last_position, last_digest = previous[-1] if previous else (0, GENESIS)
        links = chain([h for h in self.records() if h[0] > after], last_digest)
        with psycopg.connect(self.url) as conn:  # one transaction: one WAL flush, not one a row
            conn.execute(
                SQL("DELETE FROM {} WHERE position > %s").format(self.table(CHAIN_TABLE)),
                (after,),
            )
            conn.cursor().executemany(
                SQL("INSERT INTO {} (position, digest) VALUES (%s, %s)").format(
                    self.table(CHAIN_TABLE)
                ),
                links,
            )
        head = links[-1] if links else (last_position, last_digest)
        self.execute(
            SQL("UPDATE {} SET position = %s, digest = %s, events = %s").format(
                self.table(HEAD_TABLE)
            ),
            (head[0], head[1], len(previous) + len(links)),
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


def replace_keeper_encoding(keeper: ChainKeeper, *, utf8: bool) -> ChainKeeper:
    """The same chain, verified as if the database's encoding were (or were not) UTF8."""
    other = ChainKeeper(keeper.url, keeper.schema)
    other.select_encoding = SQL("SELECT true") if utf8 else SQL("SELECT false")
    return other


def recompute_v2(log: Log) -> list[tuple[int, bytes]]:
    """The chain over the log as it is, computed in Python (version 2)."""
    return chain(log.records())


def recompute(rows: list[Row]) -> list[tuple[int, bytes]]:
    """The version 1 chain over `rows`, computed in Python from the raw rows."""
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
def keeper(settings: Settings, ledger: Ledger) -> ChainKeeper:
    return build_chain_keeper(settings)  # the ledger fixture made the tables


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
        # The command's ledger opens its whole pool at once (10 by default): on a shared
        # server, two workers running many commands ran it out of connections.
        "POSLEDGER_DB_POOL_SIZE": "2",
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
        hashed = keeper.event_hashes(conn, 0, 2**62, 100, v1_through=2**62)
    assert hashed == [(row[0], event_hash(*row)) for row in odd_rows]


def test_the_database_hashes_whole_records_exactly_as_version_2_defines(
    log: Log, keeper: ChainKeeper
) -> None:
    """Events with and without metadata and command records, odd text, NULLs."""
    ids = [uuid.uuid4() for _ in range(5)]
    events = [
        (1, ids[0], 1, "posledger.SaleCreated", b'{"a":1}'),
        (2, ids[1], 2**40, None, None),
        (5, ids[2], 3, "posledger.Café ✓", b"\x00\xff"),
        (9, ids[3], 1, "t", b"x" * 50_000),
        (12, ids[4], 2, "t", b"{}"),
    ]
    metadata = [  # events 1, 3, 4 and 5 have a row; 3 and 5 say their command was recorded
        (ids[0], 1, "acme", "till", "k1", "", "dev", "req-1", False),
        (ids[2], 3, "acme", "app ✓", "", "loc-日本", "", "req-2", True),
        (ids[3], 1, "acme", "", "", "", "", "req-3", True),  # no record with that id
        (ids[4], 2, "other", "a", "b", "c", "d", "req-1", True),
    ]
    commands = [
        ("acme", "req-1", "CreateSale", "fp1", ids[0], 1, '{"ids": {"x": "é"}}'),
        ("acme", "req-2", "RequestPayment", "fp2", ids[2], 3, '{"aggregates": [[1, 2]]}'),
        ("other", "req-1", "Import", "", ids[1], 9, "{}"),
    ]
    for row in events:
        log.execute(
            SQL(
                "INSERT INTO {} (notification_id, originator_id, originator_version, topic,"
                " state) VALUES (%s, %s, %s, %s, %s)"
            ).format(log.table(EVENTS_TABLE)),
            row,
        )
    for metadata_row in metadata:
        log.execute(
            SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)").format(
                log.table("event_metadata")
            ),
            metadata_row,
        )
    for command_row in commands:
        log.execute(
            SQL(
                "INSERT INTO {} (merchant_id, request_id, command, fingerprint, aggregate_id,"
                " aggregate_version, result) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)"
            ).format(log.table("processed_commands")),
            command_row,
        )
    with psycopg.connect(log.url) as conn:
        hashed = keeper.event_hashes(conn, 0, 2**62, 100)
    assert hashed == log.records()
    by_position = dict(hashed)
    # Event 1: metadata but its command is not marked recorded, so no record is read.
    assert by_position[1] == event_hash_v2(
        *events[0], MetadataRow("acme", "till", "k1", "", "dev", "req-1", False), None
    )
    assert by_position[2] == event_hash_v2(*events[1], None, None)
    # Event 3's record, by the metadata's merchant and request id, as stored (jsonb text).
    assert by_position[5] == event_hash_v2(
        *events[2],
        MetadataRow("acme", "app ✓", "", "loc-日本", "", "req-2", True),
        CommandRow("RequestPayment", "fp2", ids[2], 3, '{"aggregates": [[1, 2]]}'),
    )
    assert by_position[9] == event_hash_v2(
        *events[3], MetadataRow("acme", "", "", "", "", "req-3", True), None
    )


def test_verification_hashes_whole_records_exactly_as_version_2_defines(
    log: Log, keeper: ChainKeeper
) -> None:
    """The walk's own reading (records by position, else by key) hashes like the commits."""
    ids = [uuid.uuid4() for _ in range(4)]
    events = [
        (1, ids[0], 1, "posledger.SaleCreated", b'{"a":1}'),
        (2, ids[1], 2**40, None, None),
        (5, ids[2], 3, "posledger.Café ✓", b"\x00\xff"),
        (9, ids[3], 1, "t", b"x" * 50_000),
    ]
    # Event 1's row has its position, event 3's has none (an older row), event 9's has
    # another event's position (found by its key all the same); event 2 has no row.
    metadata = [
        (ids[0], 1, "acme", "till", "k1", "", "dev", "req-1", True, 1),
        (ids[2], 3, "acme", "app ✓", "", "loc-日本", "", "req-2", True, None),
        (ids[3], 1, "acme", "", "", "", "", "req-2", True, 2),
    ]
    commands = [  # req-1 kept its position; req-2 has none
        ("acme", "req-1", "CreateSale", "fp1", ids[0], 1, '{"ids": {"x": "é"}}', 1),
        ("acme", "req-2", "RequestPayment", "fp2", ids[2], 3, '{"aggregates": [[1, 2]]}', None),
    ]
    for row in events:
        log.execute(
            SQL(
                "INSERT INTO {} (notification_id, originator_id, originator_version, topic,"
                " state) VALUES (%s, %s, %s, %s, %s)"
            ).format(log.table(EVENTS_TABLE)),
            row,
        )
    for metadata_row in metadata:
        log.execute(
            SQL(
                "INSERT INTO {} (originator_id, originator_version, merchant_id, app_id,"
                " key_id, location_id, device_id, request_id, command_recorded, position)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(log.table("event_metadata")),
            metadata_row,
        )
    for command_row in commands:
        log.execute(
            SQL(
                "INSERT INTO {} (merchant_id, request_id, command, fingerprint, aggregate_id,"
                " aggregate_version, result, position) VALUES (%s, %s, %s, %s, %s, %s,"
                " %s::jsonb, %s)"
            ).format(log.table("processed_commands")),
            command_row,
        )
    expected = log.records()
    links = chain(expected)
    log.execute(SQL("INSERT INTO {} VALUES (%s, %s)").format(log.table(CHAIN_TABLE)), links[0])
    for link in links[1:]:
        log.execute(SQL("INSERT INTO {} VALUES (%s, %s)").format(log.table(CHAIN_TABLE)), link)
    log.execute(
        SQL("UPDATE {} SET position = %s, digest = %s, events = %s").format(log.table(HEAD_TABLE)),
        (*links[-1], len(links)),
    )
    # Ranges of 2 positions: req-2 spans two ranges; of 3 on two connections; all at once.
    for page_size, readers in ((2, 1), (3, 2), (100, 2)):
        report = keeper.verify(page_size=page_size, readers=readers)
        assert (report.finding, report.events) == (None, 4), (page_size, readers)
        assert (report.position, report.digest) == links[-1]
    # The encoding of text used outside UTF8 databases (`convert_to`) gives the same.
    fallback = replace_keeper_encoding(keeper, utf8=False)
    report = fallback.verify(page_size=3, readers=2)
    assert (report.finding, report.events, report.digest) == (None, 4, links[-1][1])
    with psycopg.connect(log.url) as conn:
        assert keeper.event_hashes(conn, 0, 2**62, 100) == expected
    # Each record is covered, whichever way it was found.
    log.execute(
        SQL("UPDATE {} SET fingerprint = 'x' WHERE request_id = 'req-2'").format(
            log.table("processed_commands")
        )
    )
    for page_size, readers in ((2, 1), (3, 2), (100, 1)):
        report = keeper.verify(page_size=page_size, readers=readers)
        assert report.finding == Finding(Kind.CHANGED, 5), (page_size, readers)
        assert (report.events, report.position) == (2, 2)
    assert fallback.verify(page_size=3, readers=2).finding == Finding(Kind.CHANGED, 5)


# ---- chained by the commits ----------------------------------------------------------------


# ---- chained by the commits ----------------------------------------------------------------


def test_every_commit_chains_its_events_in_its_own_transaction(
    ledger: Ledger, log: Log, keeper: ChainKeeper
) -> None:
    gaps = build_log(ledger, log)
    assert gaps
    assert not set(gaps) & set(log.positions())
    # No runner, no keeper: the commits alone chained every event, in position order.
    assert log.stored_chain() == recompute_v2(log)
    head = keeper.head()
    assert (head.live, head.v1_through) == (True, 0)
    assert head.position == log.positions()[-1]
    assert head.events == len(log.positions())
    assert keeper.extend().events == 0  # nothing left for the migration


def test_concurrent_commits_chain_each_event_exactly_once(
    ledger: Ledger, log: Log, keeper: ChainKeeper
) -> None:
    product = create_product(ledger)
    receive(ledger, product, 10)
    outcomes = race(*[lambda: sale_with_pending_payment(ledger) for _ in range(12)])
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert log.stored_chain() == recompute_v2(log)
    assert keeper.head().events == len(log.positions())


def test_commits_give_metadata_and_command_records_their_positions(
    ledger: Ledger, log: Log
) -> None:
    """What a verification reads by range: each metadata row at its event's position, each
    command record at its command's first event."""
    build_log(ledger, log)
    rows = log.execute(
        SQL(
            "SELECT e.notification_id, m.position, m.merchant_id, m.request_id,"
            " m.command_recorded FROM {} e JOIN {} m USING (originator_id, originator_version)"
            " ORDER BY e.notification_id"
        ).format(log.table(EVENTS_TABLE), log.table("event_metadata"))
    )
    assert len(rows) == len(log.positions())
    assert all(position == metadata_position for position, metadata_position, *_ in rows)
    first: dict[tuple[str, str], int] = {}
    for position, _, merchant, request, recorded in rows:
        if recorded:
            first.setdefault((merchant, request), position)
    recorded_positions = {
        (merchant, request): position
        for merchant, request, position in log.execute(
            SQL("SELECT merchant_id, request_id, position FROM {}").format(
                log.table("processed_commands")
            )
        )
    }
    assert first
    assert recorded_positions == first


def test_positions_are_only_a_way_in_and_the_migration_fills_missing_ones(
    settings: Settings, ledger: Ledger, log: Log
) -> None:
    """Rows without positions (older than them) or with changed ones verify the same, by
    their keys, and what they hold is still covered; `audit chain` gives positions back."""
    build_log(ledger, log)
    events = log.events()
    metadata, commands = log.table("event_metadata"), log.table("processed_commands")
    by_key = SQL(" WHERE originator_id = %s AND originator_version = %s")
    log.execute(SQL("UPDATE {} SET position = NULL WHERE position %% 3 = 0").format(metadata))
    log.execute(SQL("UPDATE {} SET position = NULL WHERE position %% 2 = 0").format(commands))
    log.execute(SQL("UPDATE {} SET position = position + 1000").format(commands))
    log.execute(SQL("UPDATE {} SET position = NULL").format(metadata) + by_key, events[4][1:3])
    log.execute(  # event 5's row now claims event 4's position
        SQL("UPDATE {} SET position = %s").format(metadata) + by_key,
        (events[4][0], *events[5][1:3]),
    )
    code, report, _ = verify(settings)
    assert (code, report["clean"], report["events"]) == (0, True, len(events))

    target = next(e for e in events[6:] if e[0] % 3 == 0)  # its row has no position
    ((device,),) = log.execute(
        SQL("SELECT device_id FROM {}").format(metadata) + by_key, target[1:3]
    )
    log.execute(SQL("UPDATE {} SET device_id = 'forged'").format(metadata) + by_key, target[1:3])
    code, report, _ = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": "changed", "position": target[0], "after": None}
    log.execute(
        SQL("UPDATE {} SET device_id = %s").format(metadata) + by_key, (device, *target[1:3])
    )
    assert verify(settings)[0] == 0

    result = audit(settings, "chain")
    assert result.exit_code == 0, result.output
    null_metadata = SQL("SELECT originator_id FROM {} WHERE position IS NULL").format(metadata)
    assert log.execute(null_metadata) == [(events[4][1],)]  # its position is taken
    null_commands = SQL("SELECT count(*) FROM {} WHERE position IS NULL").format(commands)
    assert log.execute(null_commands) == [(0,)]
    assert verify(settings)[0] == 0


def test_an_old_log_is_chained_once_by_the_migration(
    settings: Settings, ledger: Ledger, log: Log, keeper: ChainKeeper, key: Path, tmp_path: Path
) -> None:
    """A log of an older version, chained with version 1 and signed, then events not
    chained at all. `audit chain` chains them once and hands over to the commits."""
    build_log(ledger, log, sales=3)
    old = recompute(log.events())  # what the version 1 keeper had chained
    log.execute(SQL("DELETE FROM {}").format(log.table(CHAIN_TABLE)))
    for position, digest_ in old:
        log.execute(
            SQL("INSERT INTO {} VALUES (%s, %s)").format(log.table(CHAIN_TABLE)),
            (position, digest_),
        )
    log.execute(
        SQL(
            "UPDATE {} SET position = %s, digest = %s, events = %s, v1_through = %s, live = false"
        ).format(log.table(HEAD_TABLE)),
        (old[-1][0], old[-1][1], len(old), old[-1][0]),
    )
    signed_v1 = checkpoint(settings, key, tmp_path / "v1.json")
    sale_with_pending_payment(ledger)  # written while not live: not chained
    log.execute(SQL("UPDATE {} SET command_recorded = false").format(log.table("event_metadata")))
    first_unchained = log.positions()[len(old)]
    assert keeper.head().position == old[-1][0]

    code, report, messages = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": "unchained", "position": first_unchained, "after": None}
    assert "posledger audit chain" in messages
    assert not (tmp_path / "x.json").exists()
    result = audit(settings, "checkpoint", "--key", str(key), "--out", str(tmp_path / "x.json"))
    assert result.exit_code == 1  # nothing is signed over unchained events

    result = audit(settings, "chain")
    assert result.exit_code == 0, result.output
    assert "every commit now chains its own" in result.stderr
    head = keeper.head()
    assert head.live
    assert head.events == len(log.positions())
    sale_with_pending_payment(ledger)  # chained by its commit again
    code, report, _ = verify(settings, "--checkpoint", str(signed_v1))
    assert (code, report["clean"], report["unchained"]) == (0, True, 0), report
    assert "Nothing to do" in audit(settings, "chain").stderr
    # The migration marked the unchained events' commands as recorded: their records count.
    log.execute(SQL("UPDATE {} SET fingerprint = 'x'").format(log.table("processed_commands")))
    code, report, _ = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": "changed", "position": first_unchained, "after": None}


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


def test_an_event_written_around_the_ledger_is_unchained_and_never_clean(
    settings: Settings, ledger: Ledger, log: Log
) -> None:
    build_log(ledger, log)
    target = log.burn_position() + 5
    log.insert_event(target)  # after the head, with no commit to chain it

    code, report, messages = verify(settings)
    assert code == 1
    assert report["unchained"] == 1
    assert report["finding"] == {"kind": "unchained", "position": target, "after": None}
    assert "Clean" not in messages


_EVENT = " WHERE (originator_id, originator_version) = (%s, %s)"
METADATA_TAMPERINGS = {
    "merchant": "UPDATE {} SET merchant_id = 'merchant-b'" + _EVENT,
    "app": "UPDATE {} SET app_id = 'forged'" + _EVENT,
    "key": "UPDATE {} SET key_id = 'k'" + _EVENT,
    "device": "UPDATE {} SET device_id = 'd'" + _EVENT,
    "location": "UPDATE {} SET location_id = 'elsewhere'" + _EVENT,
    "request": "UPDATE {} SET request_id = 'r'" + _EVENT,
    "recorded": "UPDATE {} SET command_recorded = NOT command_recorded" + _EVENT,
    "deleted": "DELETE FROM {}" + _EVENT,
}


@pytest.mark.parametrize("field", sorted(METADATA_TAMPERINGS))
def test_edited_or_deleted_metadata_is_reported_at_its_events_position(
    settings: Settings, ledger: Ledger, log: Log, field: str
) -> None:
    build_log(ledger, log)
    assert verify(settings)[0] == 0
    target, originator_id, version, _, _ = log.events()[7]

    log.execute(
        SQL(METADATA_TAMPERINGS[field]).format(log.table("event_metadata")),
        (originator_id, version),
    )

    code, report, _ = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": "changed", "position": target, "after": None}


COMMAND_TAMPERINGS = {
    "command": "UPDATE {} SET command = 'VoidSale' WHERE request_id = %s",
    "fingerprint": "UPDATE {} SET fingerprint = 'forged' WHERE request_id = %s",
    "aggregate": "UPDATE {} SET aggregate_id = gen_random_uuid() WHERE request_id = %s",
    "version": "UPDATE {} SET aggregate_version = aggregate_version + 1 WHERE request_id = %s",
    "result": "UPDATE {} SET result = jsonb_set(result, '{{forged}}', 'true')"
    " WHERE request_id = %s",
    "deleted": "DELETE FROM {} WHERE request_id = %s",
}


@pytest.mark.parametrize("field", sorted(COMMAND_TAMPERINGS))
def test_an_edited_or_deleted_command_record_is_reported_at_its_first_event(
    settings: Settings, ledger: Ledger, log: Log, field: str
) -> None:
    """The record that answers a command's retries is covered by each of its events."""
    build_log(ledger, log)
    target = log.events()[7]
    (request_id,) = log.execute(
        SQL(
            "SELECT request_id FROM {} WHERE (originator_id, originator_version) = (%s, %s)"
        ).format(log.table("event_metadata")),
        (target[1], target[2]),
    )[0]
    first = min(
        p
        for (p,) in log.execute(
            SQL(
                "SELECT e.notification_id FROM {} e JOIN {} m"
                " USING (originator_id, originator_version) WHERE m.request_id = %s"
            ).format(log.table(EVENTS_TABLE), log.table("event_metadata")),
            (request_id,),
        )
    )

    log.execute(
        SQL(COMMAND_TAMPERINGS[field]).format(log.table("processed_commands")), (request_id,)
    )

    code, report, _ = verify(settings)
    assert code == 1
    assert report["finding"] == {"kind": "changed", "position": first, "after": None}


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
    log.rechain(positions[5])
    assert log.stored_chain() == recompute_v2(log)

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
    load_synthetic_events(log, 100_000)  # written around the ledger: not chained
    total = len(log.positions())
    assert total > 100_000
    # As an old log: the migration chains it once.
    log.execute(SQL("UPDATE {} SET live = false").format(log.table(HEAD_TABLE)))
    assert audit(settings, "chain").exit_code == 0

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
    log.rechain(target - 1)
    assert verify(settings)[0] == 0
    code, report, _ = verify(settings, "--checkpoint", str(signed))
    assert code == 1
    finding = report["finding"]
    assert finding["kind"] == "rewritten"
    assert finding["after"] < target <= finding["position"]
    assert finding["position"] - finding["after"] <= total // 256 + 2 * (total // 500 + 1)


# ---- verify only reads; exit codes ------------------------------------------------------------


@pytest.fixture
def read_only_settings(settings: Settings, ledger: Ledger, log: Log) -> Iterator[Settings]:
    """The test's schema, reached through a new role that may only read it."""
    assert settings.database_url is not None
    role = f"audit_ro_{uuid.uuid4().hex[:12]}"
    name = Identifier(role)
    schema = Identifier(settings.schema)
    log.execute(SQL("CREATE ROLE {} LOGIN").format(name))
    try:
        log.execute(SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, name))
        log.execute(SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, name))
        params = conninfo_to_dict(settings.database_url) | {"user": role}
        yield replace(settings, database_url=make_conninfo("", **params))
    finally:
        log.execute(SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(schema, name))
        log.execute(SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(schema, name))
        log.execute(SQL("DROP ROLE {}").format(name))


def test_verify_and_checkpoint_work_on_a_read_only_role(
    ledger: Ledger, log: Log, read_only_settings: Settings, key: Path, tmp_path: Path
) -> None:
    build_log(ledger, log)
    code, report, messages = verify(read_only_settings)
    assert (code, report["clean"], report["events"]) == (0, True, len(log.positions())), messages
    signed = checkpoint(read_only_settings, key, tmp_path / "checkpoint.json")
    code, report, _ = verify(read_only_settings, "--checkpoint", str(signed))
    assert (code, report["clean"]) == (0, True)

    target = log.positions()[3]
    log.execute(SQL(TAMPERINGS["state"]).format(log.table(EVENTS_TABLE)), (target,))
    code, report, _ = verify(read_only_settings)
    assert (code, report["finding"]["position"]) == (1, target)


def test_verify_exits_3_when_it_cannot_verify(settings: Settings, ledger: Ledger) -> None:
    assert settings.database_url is not None
    unreachable = replace(settings, database_url="postgresql://nobody@127.0.0.1:1/none")
    code, report, messages = verify(unreachable)
    assert code == 3
    assert report == {}
    assert "Could not verify" in messages

    missing = replace(settings, schema=f"{settings.schema}_none")
    code, _, messages = verify(missing)
    assert code == 3
    with psycopg.connect(settings.database_url) as conn:  # and created nothing
        assert not conn.execute(
            "SELECT FROM pg_namespace WHERE nspname = %s", (missing.schema,)
        ).fetchall()

    assert audit(settings, "verify", "--no-such-option").exit_code == 3
    assert "Exit codes: 0 clean; 1 tampered" in " ".join(
        audit(settings, "verify", "--help").stdout.split()
    )


# ---- offline: an export proven against a checkpoint ----------------------------------------------


def test_an_export_verifies_offline_and_a_one_byte_change_is_found(
    settings: Settings, ledger: Ledger, log: Log, key: Path, tmp_path: Path
) -> None:
    build_log(ledger, log)
    signed = checkpoint(settings, key, tmp_path / "checkpoint.json")
    export = tmp_path / "events.jsonl.gz"
    result = audit(settings, "export", "--output", str(export))
    assert result.exit_code == 0, result.output
    offline = ["--checkpoint", str(signed), "--public-key", f"{key}.pub"]
    no_database = replace(settings, database_url="postgresql://nobody@127.0.0.1:1/none")

    def verify_file(path: Path) -> tuple[int, dict[str, Any], str]:
        return verify(no_database, "--export", str(path), *offline)

    code, report, messages = verify_file(export)
    assert (code, report["clean"], report["events"]) == (0, True, len(log.positions())), messages
    assert "matches the signed checkpoint" in messages

    with gzip.open(export, "rt") as f:
        lines = f.read().splitlines()
    target = 5  # the fifth event
    event = json.loads(lines[target])
    for change in ("state", "metadata", "command"):
        edited = json.loads(lines[target])
        if change == "state":
            raw = bytearray(base64.b64decode(edited["hashed"]["state"]))
            raw[10] ^= 1  # one byte of the stored payload
            edited["hashed"]["state"] = base64.b64encode(bytes(raw)).decode()
        elif change == "metadata":
            edited["hashed"]["metadata"][4] += "x"  # the device
        else:
            fingerprint = edited["hashed"]["command"][1]  # one character changed
            edited["hashed"]["command"][1] = fingerprint[:-1] + (
                "1" if fingerprint.endswith("0") else "0"
            )
        path = tmp_path / f"{change}.jsonl"
        path.write_text("\n".join([*lines[:target], json.dumps(edited), *lines[target + 1 :]]))
        code, report, messages = verify_file(path)
        assert code == 1, (change, messages)
        assert report["finding"]["position"] == event["position"], change
        assert report["line"] == target + 1

    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:target], lines[target][:-1], *lines[target + 1 :]]))
    assert verify_file(broken)[0] == 1

    merchant_export = tmp_path / "m.jsonl"
    assert (
        audit(
            settings, "export", "--output", str(merchant_export), "--merchant", "merchant-a"
        ).exit_code
        == 0
    )
    assert verify_file(merchant_export)[0] == 3
