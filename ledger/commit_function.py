"""The PL/pgSQL function that commits a group of commands (see ledger/group_commit.py),
and the arguments it takes, built from the group's requests.

Kept apart from the writer thread that calls it: this is the SQL and its arguments, that is
the thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg.sql import SQL, Composable, Composed, Identifier, Literal

from ledger.audit.chain import ABSENT, MetadataRow, event_fields, metadata_bytes

if TYPE_CHECKING:
    from ledger.group_commit import CommitRequest

FUNCTION_NAME = "posledger_commit_group"


def commit_function_sql(
    schema: str, events_table: str, channel: str, chain: dict[str, Composable]
) -> Composed:
    """`CREATE OR REPLACE FUNCTION` for the group commit, for one schema's tables.

    Simple statements, each planned once per connection and cached by PL/pgSQL. It returns
    a row per command that is not written (`known`: its request id is recorded; `clashed`:
    an event clashes or a read moved on; `lost`: a twin recorded the request id while this
    ran), a row per event written, with its notification id, and how long it has held the
    lock (`held`, in microseconds, before the COMMIT that follows).

    `chain` names the audit chain's tables and SQL (`ledger.audit.schema.chain_sql`).
    """
    return SQL(
        """
CREATE OR REPLACE FUNCTION {function}(
    lock_timeout text,
    ev_cmd int[], ev_id uuid[], ev_version bigint[], ev_topic text[], ev_state bytea[],
    ev_fields bytea[], ev_records bytea[],
    md_merchant text[], md_app text[], md_key text[], md_location text[], md_device text[],
    md_request text[],
    rc_cmd int[], rc_merchant text[], rc_request text[], rc_command text[],
    rc_fingerprint text[], rc_aggregate uuid[], rc_version bigint[], rc_result text[],
    rd_cmd int[], rd_id uuid[], rd_version bigint[],
    ch_cmd int[], ch_on int[], ch_id uuid[], ch_version bigint[])
RETURNS TABLE (kind text, cmd int, originator_id uuid, originator_version bigint,
               notification_id bigint)
LANGUAGE plpgsql
AS $body$
DECLARE
    locked_at timestamptz;
    known int[];
    clashed int[];
    lost int[];
    skipped int[];
    new_position bigint[];
    new_id uuid[];
    new_version bigint[];
    new_hash bytea[];
    new_digest bytea[];
    rc_encoded_cmd int[];
    rc_encoded bytea[];
    ev_position bigint[];
    position_sequence regclass := pg_catalog.pg_get_serial_sequence(
        pg_catalog.quote_ident({schema_name}) || '.' || pg_catalog.quote_ident({table_name}),
        'notification_id');
    chain_live boolean := false;
    chain_digest bytea;
    unrecorded int[] := '{{}}';
    i int;
BEGIN
    IF cardinality(ev_id) > 0 THEN
        -- Serialise writers of the log (see ledger/group_commit.py). Every statement after
        -- this one sees every event committed before the lock was granted.
        PERFORM pg_catalog.set_config('lock_timeout', lock_timeout, true);
        LOCK TABLE {events} IN EXCLUSIVE MODE;
        locked_at := pg_catalog.clock_timestamp();
        NOTIFY {channel};
        -- Not live: the log predates write-time chaining and `posledger audit chain` has
        -- yet to chain it (it turns this on under the same lock).
        SELECT h.live, h.digest INTO chain_live, chain_digest FROM {chain_head} h;
    END IF;

    SELECT coalesce(array_agg(r.cmd), '{{}}') INTO known
    FROM unnest(rc_cmd, rc_merchant, rc_request) AS r(cmd, merchant_id, request_id)
    WHERE EXISTS (SELECT FROM {commands} p
                  WHERE p.merchant_id = r.merchant_id AND p.request_id = r.request_id);

    SELECT coalesce(array_agg(DISTINCT x.cmd), '{{}}') INTO clashed FROM (
        SELECT e.cmd FROM unnest(ev_cmd, ev_id, ev_version) AS e(cmd, id, version)
        WHERE EXISTS (SELECT FROM {events} s
                      WHERE s.originator_id = e.id AND s.originator_version = e.version)
        UNION ALL
        SELECT r.cmd FROM unnest(rd_cmd, rd_id, rd_version) AS r(cmd, id, version)
        WHERE EXISTS (SELECT FROM {events} s
                      WHERE s.originator_id = r.id AND s.originator_version > r.version)
    ) AS x;

    -- A command decided on a predecessor's state before it committed (`ch_*`, in command
    -- order) stands only if the predecessor does: in this group, if it is not skipped (so a
    -- chain falls from its first skipped link on); before it, if the aggregate is still
    -- exactly at the version read. Not merely "not newer": never a version without the one
    -- before it, never a decision on state that did not commit.
    FOR i IN 1 .. coalesce(cardinality(ch_cmd), 0) LOOP
        IF ch_cmd[i] <> ALL (known || clashed) AND (
            (ch_on[i] IS NOT NULL AND ch_on[i] = ANY (known || clashed))
            OR (ch_on[i] IS NULL AND coalesce((SELECT max(s.originator_version) FROM {events} s
                                               WHERE s.originator_id = ch_id[i]), 0)
                                     <> ch_version[i]))
        THEN
            clashed := clashed || ch_cmd[i];
        END IF;
    END LOOP;

    -- Positions are drawn here, in the order the commands decided, so that the metadata
    -- rows and the command records carry the position of their event (of the command's
    -- first event): a verification reads them by range beside the events. A command lost
    -- below leaves a gap, as a rolled-back insert would.
    SELECT array_agg(CASE WHEN e.cmd <> ALL (known || clashed)
                          THEN pg_catalog.nextval(position_sequence) END ORDER BY e.ord)
    INTO ev_position
    FROM unnest(ev_cmd) WITH ORDINALITY AS e(cmd, ord);

    -- ON CONFLICT also skips a twin's record committed since the check above.
    WITH recorded AS (
        INSERT INTO {commands} (merchant_id, request_id, command, fingerprint, aggregate_id,
                                aggregate_version, result, position)
        SELECT r.merchant_id, r.request_id, r.command, r.fingerprint, r.aggregate_id,
               r.aggregate_version, r.result::jsonb, f.position
        FROM unnest(rc_cmd, rc_merchant, rc_request, rc_command, rc_fingerprint,
                    rc_aggregate, rc_version, rc_result)
            AS r(cmd, merchant_id, request_id, command, fingerprint, aggregate_id,
                 aggregate_version, result)
        LEFT JOIN (SELECT x.cmd, min(x.position) AS position
                   FROM unnest(ev_cmd, ev_position) AS x(cmd, position) GROUP BY x.cmd) AS f
            ON f.cmd = r.cmd
        WHERE r.cmd <> ALL (known || clashed)
        ON CONFLICT DO NOTHING
        RETURNING {commands}.merchant_id, {commands}.request_id
    )
    SELECT coalesce(array_agg(r.cmd), '{{}}') INTO lost
    FROM unnest(rc_cmd, rc_merchant, rc_request) AS r(cmd, merchant_id, request_id)
    WHERE r.cmd <> ALL (known || clashed)
      AND NOT EXISTS (SELECT FROM recorded x
                      WHERE x.merchant_id = r.merchant_id AND x.request_id = r.request_id);

    -- A lost command takes the commands decided on its state with it: their records go.
    IF cardinality(lost) > 0 THEN
        FOR i IN 1 .. coalesce(cardinality(ch_cmd), 0) LOOP
            IF ch_on[i] = ANY (lost || unrecorded)
               AND ch_cmd[i] <> ALL (known || clashed || lost || unrecorded)
            THEN
                unrecorded := unrecorded || ch_cmd[i];
            END IF;
        END LOOP;
        DELETE FROM {commands} p
        USING unnest(rc_cmd, rc_merchant, rc_request) AS r(cmd, merchant_id, request_id)
        WHERE r.cmd = ANY (unrecorded)
          AND p.merchant_id = r.merchant_id AND p.request_id = r.request_id;
        clashed := clashed || unrecorded;
    END IF;

    skipped := known || clashed || lost;

    INSERT INTO {metadata} (originator_id, originator_version, merchant_id, app_id, key_id,
                            location_id, device_id, request_id, command_recorded, position)
    SELECT m.id, m.version, m.merchant_id, m.app_id, m.key_id, m.location_id, m.device_id,
           m.request_id, m.cmd = ANY (rc_cmd), m.position
    FROM unnest(ev_cmd, ev_id, ev_version, md_merchant, md_app, md_key, md_location,
                md_device, md_request, ev_position)
        AS m(cmd, id, version, merchant_id, app_id, key_id, location_id, device_id,
             request_id, position)
    WHERE m.merchant_id IS NOT NULL AND m.cmd <> ALL (skipped)
    ON CONFLICT DO NOTHING;

    RETURN QUERY SELECT 'known', k, NULL::uuid, NULL::bigint, NULL::bigint
        FROM unnest(known) AS k;
    RETURN QUERY SELECT 'clashed', k, NULL::uuid, NULL::bigint, NULL::bigint
        FROM unnest(clashed) AS k;
    RETURN QUERY SELECT 'lost', k, NULL::uuid, NULL::bigint, NULL::bigint
        FROM unnest(lost) AS k;
    INSERT INTO {events} (notification_id, originator_id, originator_version, topic, state)
    SELECT e.position, e.id, e.version, e.topic, e.state
    FROM unnest(ev_cmd, ev_id, ev_version, ev_topic, ev_state, ev_position)
        AS e(cmd, id, version, topic, state, position)
    WHERE e.cmd <> ALL (skipped);

    -- Each event's hash (version 2, `ledger.audit.chain`) covers what was just inserted:
    -- the writer encoded the event's fields and its metadata row (`ev_fields`,
    -- `ev_records`), and each command record is encoded here once, with its result as
    -- the stored jsonb's text.
    IF chain_live THEN
        SELECT array_agg(c.cmd), array_agg({command_bytes})
        INTO rc_encoded_cmd, rc_encoded
        FROM (SELECT r.cmd, r.command, r.fingerprint, r.aggregate_id, r.aggregate_version,
                     r.result::jsonb AS result
              FROM unnest(rc_cmd, rc_command, rc_fingerprint, rc_aggregate, rc_version,
                          rc_result)
                  AS r(cmd, command, fingerprint, aggregate_id, aggregate_version, result)
              WHERE r.cmd <> ALL (skipped)) AS c;
    END IF;
    SELECT array_agg(e.position ORDER BY e.position),
           array_agg(e.id ORDER BY e.position),
           array_agg(e.version ORDER BY e.position),
           array_agg(CASE WHEN chain_live THEN pg_catalog.sha256(
               {event_domain} || pg_catalog.int8send(e.position) || e.fields
               || coalesce(e.state, ''::bytea) || e.records
               || CASE WHEN e.records = {absent} THEN {absent}
                       ELSE coalesce(r.encoded, {absent}) END) END ORDER BY e.position)
    INTO new_position, new_id, new_version, new_hash
    FROM unnest(ev_cmd, ev_id, ev_version, ev_state, ev_fields, ev_records, ev_position)
        AS e(cmd, id, version, state, fields, records, position)
    LEFT JOIN unnest(rc_encoded_cmd, rc_encoded) AS r(cmd, encoded) ON r.cmd = e.cmd
    WHERE e.cmd <> ALL (skipped);

    -- The chain: one link per event, in position order, from the head's digest.
    IF chain_live AND new_position IS NOT NULL THEN
        new_digest := array_fill(NULL::bytea, ARRAY[cardinality(new_position)]);
        FOR i IN 1 .. cardinality(new_position) LOOP
            chain_digest := pg_catalog.sha256({link_domain} || chain_digest || new_hash[i]);
            new_digest[i] := chain_digest;
        END LOOP;
        INSERT INTO {chain} (position, digest) SELECT * FROM unnest(new_position, new_digest);
        UPDATE {chain_head} SET position = new_position[cardinality(new_position)],
            digest = new_digest[cardinality(new_digest)],
            events = events + cardinality(new_position), extended_at = now();
    END IF;

    RETURN QUERY SELECT 'event'::text, NULL::int, x.id, x.version, x.position
        FROM unnest(new_id, new_version, new_position) AS x(id, version, position);
    -- How long the lock has been held so far, in microseconds (the COMMIT follows).
    RETURN QUERY SELECT 'held', NULL::int, NULL::uuid, NULL::bigint,
        (extract(epoch FROM pg_catalog.clock_timestamp() - locked_at) * 1e6)::bigint
        WHERE locked_at IS NOT NULL;
END;
$body$
"""
    ).format(
        function=Identifier(schema, FUNCTION_NAME),
        events=Identifier(schema, events_table),
        commands=Identifier(schema, "processed_commands"),
        metadata=Identifier(schema, "event_metadata"),
        channel=Identifier(channel),
        schema_name=Literal(schema),
        table_name=Literal(events_table),
        **chain,
    )


def commit_call_sql(schema: str) -> Composed:
    # Parameters in binary (%b): psycopg dumps the arrays about 3x faster than as text.
    return SQL(
        "SELECT * FROM {function}(%b,"
        " %b::int[], %b::uuid[], %b::bigint[], %b::text[], %b::bytea[], %b::bytea[], %b::bytea[],"
        " %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
        " %b::int[], %b::text[], %b::text[], %b::text[], %b::text[], %b::uuid[], %b::bigint[],"
        " %b::text[],"
        " %b::int[], %b::uuid[], %b::bigint[],"
        " %b::int[], %b::int[], %b::uuid[], %b::bigint[])"
    ).format(function=Identifier(schema, FUNCTION_NAME))


def function_arguments(group: Sequence[CommitRequest], lock_timeout: str) -> tuple[Any, ...]:
    """The function's arguments: one array per column, each row tagged with its command.

    A read of a predecessor's state names the predecessor by its place in the group, or
    NULL when it committed in an earlier group.
    """
    ev: list[list[Any]] = [[] for _ in range(13)]
    rc: list[list[Any]] = [[] for _ in range(8)]
    rd: list[list[Any]] = [[] for _ in range(3)]
    ch: list[list[Any]] = [[] for _ in range(4)]
    place = {id(request): n for n, request in enumerate(group)}
    for n, request in enumerate(group):
        m = request.metadata
        recorded = request.command_record is not None
        for e in request.events:
            originator_id = e.originator_id
            if not isinstance(originator_id, UUID):
                originator_id = UUID(str(originator_id))
            row: list[Any] = [n, e.originator_id, e.originator_version, e.topic, e.state]
            row.append(event_fields(originator_id, e.originator_version, e.topic, e.state))
            if m is None:
                row += [ABSENT] + [None] * 6
            else:
                location = m.locations.get(originator_id, "")
                metadata = (m.merchant_id, m.app_id, m.key_id, location, m.device_id, m.request_id)
                row.append(metadata_bytes(MetadataRow(*metadata, command_recorded=recorded)))
                row += metadata
            for column, value in zip(ev, row, strict=True):
                column.append(value)
        r = request.command_record
        if r is not None:
            row = [
                n,
                r.merchant_id,
                r.request_id,
                r.command,
                r.fingerprint,
                r.aggregate_id,
                r.aggregate_version,
                json.dumps(r.result),
            ]
            for column, value in zip(rc, row, strict=True):
                column.append(value)
        for aggregate_id, version in request.reads:
            for column, value in zip(rd, (n, aggregate_id, version), strict=True):
                column.append(value)
        for aggregate_id, version, before in request.after:
            row = [n, place.get(id(before.request)), aggregate_id, version]
            for column, value in zip(ch, row, strict=True):
                column.append(value)
    return (lock_timeout, *ev, *rc, *rd, *ch)
