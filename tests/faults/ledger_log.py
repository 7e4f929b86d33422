"""What the fault tests check in the log itself, read straight from the tables."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier


def assert_one_set_of_events_per_request(url: str, schema: str, request_ids: Iterable[str]) -> int:
    """Each request has one command record, and its events are exactly the ones that record
    names: on the aggregates it lists, up to the versions it lists, none beyond (a second
    run of the command would have added events past them, or a second aggregate).

    Returns how many events the requests wrote.
    """
    with psycopg.connect(url) as conn:
        records = conn.execute(
            SQL("SELECT request_id, result FROM {}").format(
                Identifier(schema, "processed_commands")
            )
        ).fetchall()
        tagged = conn.execute(
            SQL(
                "SELECT m.request_id, m.originator_id::text, max(m.originator_version), count(*)"
                " FROM {metadata} m JOIN {events} e USING (originator_id, originator_version)"
                " GROUP BY m.request_id, m.originator_id"
            ).format(
                metadata=Identifier(schema, "event_metadata"),
                events=Identifier(schema, "ledger_events"),
            )
        ).fetchall()
    recorded: dict[str, Any] = dict(records)
    written: dict[str, dict[str, int]] = defaultdict(dict)
    counts: dict[str, int] = defaultdict(int)
    for request_id, aggregate_id, version, count in tagged:
        written[request_id][aggregate_id] = version
        counts[request_id] += count
    events = 0
    for request_id in request_ids:
        assert request_id in recorded, f"acknowledged request {request_id} has no record"
        expected = {str(a): version for a, version in recorded[request_id]["aggregates"]}
        assert written[request_id] == expected, (
            f"request {request_id} recorded {expected} but wrote {written[request_id]}"
        )
        events += counts[request_id]
    return events
