"""The audit chain's tables and the SQL that encodes and hashes what the chain covers.

`<schema>.event_chain` holds one digest per chained event, by position; the one row of
`<schema>.event_chain_head` says how far the chain has got (the last chained position, its
digest and how many events are chained), whether commits chain their own events (`live`),
and up to which position the chain uses the version 1 event hash (`v1_through`: the chain
as it was before version 2; see `chain`). These tables are created with the ledger's
(`create_statements`, run by the recorder at start).

The encodings here are the SQL twins of `chain.event_fields`, `chain.metadata_bytes` and
`chain.command_bytes` (a test keeps the two definitions equal). The group commit chains with
them (`chain_sql`), `store.ChainKeeper` verifies with them.
"""

from __future__ import annotations

from collections.abc import Callable

from psycopg.sql import SQL, Composable, Composed, Identifier, Literal

from ledger.audit.chain import ABSENT, EVENT_DOMAIN, EVENT_DOMAIN_V2, GENESIS, LINK_DOMAIN, PRESENT

CHAIN_TABLE = "event_chain"
HEAD_TABLE = "event_chain_head"
EVENTS_TABLE = "ledger_events"
METADATA_TABLE = "event_metadata"
COMMANDS_TABLE = "processed_commands"


def create_statements(schema: str, events_table: str = EVENTS_TABLE) -> list[Composed]:
    """The chain's tables, and what later versions add to an older schema; idempotent.

    Run after the metadata table's own statement. A head row made here starts `live` when
    the log is empty; an older head row (a chain of version 1) keeps its chain, which
    verifies with version 1 up to its position.
    """
    head = Identifier(schema, HEAD_TABLE)
    return [
        SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " position bigint PRIMARY KEY,"
            " digest bytea NOT NULL CHECK (length(digest) = 32))"
        ).format(Identifier(schema, CHAIN_TABLE)),
        SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id boolean PRIMARY KEY DEFAULT true CHECK (id),"
            " position bigint NOT NULL DEFAULT 0,"
            " digest bytea NOT NULL,"
            " events bigint NOT NULL DEFAULT 0,"
            " extended_at timestamptz)"
        ).format(head),
        SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS live boolean NOT NULL DEFAULT false").format(
            head
        ),
        SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS v1_through bigint").format(head),
        SQL("UPDATE {} SET v1_through = position WHERE v1_through IS NULL").format(head),
        SQL(
            "INSERT INTO {} (digest, v1_through, live)"
            " SELECT {}, 0, NOT EXISTS (SELECT FROM {}) ON CONFLICT DO NOTHING"
        ).format(head, Literal(GENESIS), Identifier(schema, events_table)),
        SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS command_recorded boolean NOT NULL"
            " DEFAULT false"
        ).format(Identifier(schema, METADATA_TABLE)),
        # The position of the row's event (of a command record: of its command's first
        # event), written by the group commit, so that a verification reads them by range.
        SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS position bigint").format(
            Identifier(schema, METADATA_TABLE)
        ),
        SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (position)").format(
            Identifier(f"{METADATA_TABLE}_position_idx"), Identifier(schema, METADATA_TABLE)
        ),
        SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS position bigint").format(
            Identifier(schema, COMMANDS_TABLE)
        ),
        SQL("CREATE INDEX IF NOT EXISTS {} ON {} (position)").format(
            Identifier(f"{COMMANDS_TABLE}_position_idx"), Identifier(schema, COMMANDS_TABLE)
        ),
    ]


Text = Callable[[Composable], Composed]  # a text value's encoding in SQL (`text_sql`)


def text_sql(value: Composable) -> Composed:
    """A text value as the chain encodes it: its UTF-8 length (4 bytes), its bytes."""
    return SQL(
        "coalesce(pg_catalog.int4send(octet_length(convert_to({x}, 'UTF8')))"
        " || convert_to({x}, 'UTF8'), pg_catalog.int4send(-1))"
    ).format(x=value)


def text_utf8_sql(value: Composable) -> Composed:
    """`text_sql` in a UTF8 database, on a connection whose client_encoding is UTF8: there
    a text's bytes are its UTF-8 bytes, `textsend` hands them over as they are, and
    `octet_length` counts them. About 0.5 µs a value cheaper than two `convert_to` calls
    (which look up both encodings by name and validate the bytes), and verify encodes
    seven a row."""
    return SQL(
        "coalesce(pg_catalog.int4send(octet_length({x})) || pg_catalog.textsend({x}),"
        " pg_catalog.int4send(-1))"
    ).format(x=value)


def event_head_fields_sql(e: str, text: Text = text_sql) -> Composed:
    """The event's fields before its payload's bytes (from its position to its length)."""
    return SQL(
        " || pg_catalog.int8send({e}.notification_id)"
        " || pg_catalog.uuid_send({e}.originator_id)"
        " || pg_catalog.int8send({e}.originator_version)"
        " || {topic}"
        " || coalesce(pg_catalog.int8send(octet_length({e}.state)::bigint),"
        " pg_catalog.int8send(-1::bigint))"
    ).format(e=Identifier(e), topic=text(column_sql(e, "topic")))


def event_fields_sql(e: str, text: Text = text_sql) -> Composed:
    return event_head_fields_sql(e, text) + SQL(" || coalesce({e}.state, ''::bytea)").format(
        e=Identifier(e)
    )


def column_sql(alias: str, name: str) -> Composed:
    return SQL("{}.{}").format(Identifier(alias), Identifier(name))


def metadata_bytes_sql(m: str = "m", text: Text = text_sql) -> Composed:
    """The version 2 encoding of a present metadata row (alias `m`), from PRESENT on."""
    fields = SQL(" || ").join(
        text(column_sql(m, name))
        for name in ("merchant_id", "app_id", "key_id", "location_id", "device_id", "request_id")
    )
    return SQL(
        "{present} || {fields} || CASE WHEN {m}.command_recorded THEN {present} ELSE {absent} END"
    ).format(present=Literal(PRESENT), absent=Literal(ABSENT), fields=fields, m=Identifier(m))


def command_bytes_sql(c: str = "c", text: Text = text_sql) -> Composed:
    """The version 2 encoding of a present command record (alias `c`), from PRESENT on."""
    fields = SQL(" || ").join(
        [
            text(column_sql(c, "command")),
            text(column_sql(c, "fingerprint")),
            SQL("coalesce(pg_catalog.uuid_send({}), {})").format(
                column_sql(c, "aggregate_id"), Literal(bytes(16))
            ),
            SQL("pg_catalog.int8send(coalesce({}, -1::bigint))").format(
                column_sql(c, "aggregate_version")
            ),
            text(SQL("{}::text").format(column_sql(c, "result"))),
        ]
    )
    return SQL("{} || {}").format(Literal(PRESENT), fields)


def event_hash_sql(version: int = 2, e: str = "e", m: str = "m", c: str = "c") -> Composed:
    """`chain.event_hash` (version 1) or `chain.event_hash_v2` of a row of the events
    table (alias `e`), computed by PostgreSQL. Version 2 reads the event's metadata row
    (alias `m`, joined on the event's id and version) and its command record (alias `c`,
    joined on the metadata's merchant and request id when `m.command_recorded`).

    The records are hashed where they lie and 32 bytes travel instead: verifying reads
    about twice as many events per second as fetching the payloads (bench/README.md).
    """
    if version == 1:
        return SQL("pg_catalog.sha256({domain}{fields})").format(
            domain=Literal(EVENT_DOMAIN), fields=event_fields_sql(e)
        )
    return SQL(
        "pg_catalog.sha256({domain}{fields}"
        " || CASE WHEN {m}.originator_id IS NULL THEN {absent} ELSE {metadata} END"
        " || CASE WHEN {c}.merchant_id IS NULL THEN {absent} ELSE {command} END)"
    ).format(
        domain=Literal(EVENT_DOMAIN_V2),
        fields=event_fields_sql(e),
        m=Identifier(m),
        c=Identifier(c),
        absent=Literal(ABSENT),
        metadata=metadata_bytes_sql(m),
        command=command_bytes_sql(c),
    )


def record_joins(schema: str, e: str = "e", m: str = "m", c: str = "c") -> Composed:
    """The joins `event_hash_sql(2)` reads, from the events aliased `e`."""
    return SQL(
        " LEFT JOIN {metadata} {m} ON {m}.originator_id = {e}.originator_id"
        " AND {m}.originator_version = {e}.originator_version"
        " LEFT JOIN {commands} {c} ON {m}.command_recorded"
        " AND {c}.merchant_id = {m}.merchant_id AND {c}.request_id = {m}.request_id"
    ).format(
        metadata=Identifier(schema, METADATA_TABLE),
        commands=Identifier(schema, COMMANDS_TABLE),
        e=Identifier(e),
        m=Identifier(m),
        c=Identifier(c),
    )


def chain_sql(schema: str) -> dict[str, Composable]:
    """What the group commit needs to chain its events (see `commit_function_sql`)."""
    return {
        "chain": Identifier(schema, CHAIN_TABLE),
        "chain_head": Identifier(schema, HEAD_TABLE),
        "link_domain": Literal(LINK_DOMAIN),
        "event_domain": Literal(EVENT_DOMAIN_V2),
        "absent": Literal(ABSENT),
        "command_bytes": command_bytes_sql("c"),
    }
