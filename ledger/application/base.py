"""The shape every command shares: validate → (replay) → load → decide → save, retried.

Around every command it provides what DESIGN.md promises everywhere:
- idempotency: the command's record commits in the same transaction as its events; a retry
  with the same request id is answered from that record and writes nothing;
- tenancy: an aggregate of another merchant answers exactly like a missing one;
- optimistic concurrency: `expected_version` is checked against the command's main
  aggregate, and a command that lost a race to another writer is re-run on fresh state a
  bounded number of times; re-run, it checks `expected_version` again, so a caller that gave
  one gets a VersionConflict only if the main aggregate itself moved on.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from functools import cached_property
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from ledger.domain import commands as c
from ledger.domain.errors import DomainError, NotFound, RequestIdReused, VersionConflict
from ledger.domain.validation import Checks
from ledger.keys import ApiKeys
from ledger.store import (
    CommandRecord,
    EventMetadata,
    LedgerRecorder,
    Settings,
    StoreGate,
    bound_pool,
    bounded_url,
    database_url,
    eventsourcing_env,
    is_duplicate_command,
    schema_lock,
    select_position,
)

# Sales of one product at one location all write its stock item, so a busy item sees many
# writers at once; each lost race means another writer got in, and 5 attempts lost about 1
# in 7 of 16 simultaneous completions. Backoff is capped so 10 attempts stay well under 0.5 s.
MAX_ATTEMPTS = 10
MAX_BACKOFF_SECONDS = 0.05
A = TypeVar("A", bound=Aggregate)


@dataclass(frozen=True)
class Context:
    """Who asks, and the envelope of a mutating request."""

    merchant_id: str
    request_id: str = ""
    expected_version: int | None = None
    app_id: str = ""
    key_id: str = ""
    device_id: str = ""  # from the caller's `x-device-id` metadata, when it sends one

    def event_metadata(self, aggregates: list[Any]) -> EventMetadata:
        return EventMetadata(
            merchant_id=self.merchant_id,
            app_id=self.app_id,
            key_id=self.key_id,
            device_id=self.device_id,
            request_id=self.request_id,
            locations={a.id: a.location_id for a in aggregates if hasattr(a, "location_id")},
        )


@dataclass(frozen=True)
class Outcome:
    """The aggregates a command saved, as it left them, and the ids it created."""

    aggregates: tuple[Any, ...]
    ids: dict[str, str] = field(default_factory=dict)
    replayed: bool = False
    # Log position of the latest event of these aggregates: a query that passes it as
    # `min_position` sees this command's effects.
    position: int = 0

    @property
    def aggregate(self) -> Any:
        """The command's main aggregate (the sale, product, customer or stock item)."""
        return self.aggregates[0]


# What a command decides: the aggregates to save (main one first) and the ids it created.
Decision = tuple[list[Any], dict[str, str]]


class LedgerBase(Application[UUID]):
    """Opens the store and runs commands. The command methods live in the mixins."""

    database_url: str = ""  # set by `open`; projections open connections of their own
    store_gate: StoreGate  # set by `open`; closed while the database is unreachable
    settings: Settings  # set by `open`

    @classmethod
    def open(cls, settings: Settings | None = None) -> Any:
        """Connects to the configured database and creates missing tables safely."""
        settings = settings or Settings.from_env()
        url = database_url(settings)
        ledger = cls(env=eventsourcing_env(url, settings))
        ledger.database_url = bounded_url(url, settings)
        ledger.store_gate = bound_pool(ledger.ledger_recorder.datastore, settings)
        ledger.settings = settings
        with schema_lock(url, settings.schema):
            ledger.ledger_recorder.create_table()
            if ledger.snapshots is not None:
                ledger.snapshots.recorder.create_table()  # type: ignore[attr-defined]
            ledger.api_keys.create_table()
        return ledger

    @property
    def ledger_recorder(self) -> LedgerRecorder:
        assert isinstance(self.recorder, LedgerRecorder)
        return self.recorder

    @cached_property
    def api_keys(self) -> ApiKeys:
        return ApiKeys(self.ledger_recorder.datastore)

    # ---- loading, with tenancy ------------------------------------------------------------

    def _find(
        self, cls: type[A], merchant_id: str, aggregate_id: UUID, version: int | None = None
    ) -> A | None:
        """The merchant's aggregate of type `cls`, or None. Foreign ones look missing."""
        found: object
        try:
            found = self.repository.get(aggregate_id, version=version)
        except AggregateNotFoundError:
            return None
        if not isinstance(found, cls) or getattr(found, "merchant_id", None) != merchant_id:
            return None
        return found

    def _load(
        self,
        cls: type[A],
        merchant_id: str,
        aggregate_id: str | UUID,
        reason: str,
        version: int | None = None,
    ) -> A:
        try:
            key = aggregate_id if isinstance(aggregate_id, UUID) else UUID(aggregate_id)
        except ValueError:
            key = None
        found = None if key is None else self._find(cls, merchant_id, key, version)
        if found is None:
            noun = reason.removesuffix("_NOT_FOUND").lower().replace("_", " ")
            raise NotFound(f"{noun} {aggregate_id} not found", reason=reason)
        return found

    def owned_aggregate_id(self, merchant_id: str, aggregate_id: str) -> UUID:
        """The id of any aggregate of the merchant (sale, product, customer, stock item)."""
        checks = Checks()
        checks.uuid("aggregate_id", aggregate_id)
        checks.raise_if_any()
        return self._load(Aggregate, merchant_id, aggregate_id, "AGGREGATE_NOT_FOUND").id

    @staticmethod
    def _check_version(ctx: Context, aggregate: Aggregate) -> None:
        """Refuses to act on an aggregate that moved on since the caller read it."""
        if ctx.expected_version is not None and aggregate.version != ctx.expected_version:
            raise VersionConflict(
                f"{type(aggregate).__name__.lower()} {aggregate.id} is at version "
                f"{aggregate.version}, not the expected {ctx.expected_version}"
            )

    # ---- running a command ----------------------------------------------------------------

    def _execute(self, ctx: Context, cmd: Any, decide: Callable[[], Decision]) -> Outcome:
        """Runs a validated command: replays a known request, else decides and saves."""
        c.check_request_id(ctx.request_id)
        c.check_expected_version(ctx.expected_version)
        fingerprint = _fingerprint(cmd, ctx.expected_version)
        replayed = self._replay(ctx, fingerprint)
        if replayed is not None:
            return replayed

        for attempt in range(MAX_ATTEMPTS):
            try:
                aggregates, ids = decide()
            except DomainError:
                # A twin of this request may have committed since the check above, and
                # changed the state so that this copy fails: answer as the twin was answered.
                replayed = self._replay(ctx, fingerprint)
                if replayed is not None:
                    return replayed
                raise
            main = aggregates[0]
            record = CommandRecord(
                merchant_id=ctx.merchant_id,
                request_id=ctx.request_id,
                command=type(cmd).__name__,
                fingerprint=fingerprint,
                aggregate_id=main.id,
                aggregate_version=main.version,
                result={"ids": ids, "aggregates": [[str(a.id), a.version] for a in aggregates]},
            )
            try:
                recordings = self.save(
                    *aggregates,
                    command_record=record,
                    event_metadata=ctx.event_metadata(aggregates),
                )
            except IntegrityError as e:
                if is_duplicate_command(e):
                    # A twin of this request committed first: answer as it was answered.
                    replayed = self._replay(ctx, fingerprint)
                    assert replayed is not None
                    return replayed
                # Decided again on fresh state, which checks `expected_version` again: a
                # conflict on the main aggregate is then a VersionConflict, while one on
                # another aggregate it moves (a sale's stock items) is simply retried.
                backoff = min(MAX_BACKOFF_SECONDS, 0.005 * 2**attempt)
                time.sleep(random.uniform(0, backoff))  # noqa: S311
                continue
            position = max((r.notification.id for r in recordings), default=0)
            return Outcome(
                aggregates=tuple(aggregates),
                ids=ids,
                position=position or self._position(aggregates),
            )
        raise VersionConflict(
            f"gave up after {MAX_ATTEMPTS} attempts: the data is changing too fast",
            reason="CONCURRENT_MODIFICATION",
        )

    def _replay(self, ctx: Context, fingerprint: str) -> Outcome | None:
        record = self.ledger_recorder.select_command_record(ctx.merchant_id, ctx.request_id)
        if record is None:
            return None
        if record.fingerprint != fingerprint:
            raise RequestIdReused(
                f"request_id {ctx.request_id!r} was already used for a different request "
                f"({record.command})"
            )
        aggregates = []
        for aggregate_id, version in record.result["aggregates"]:
            found = self._find(Aggregate, ctx.merchant_id, UUID(aggregate_id), version)
            assert found is not None, "a recorded command's aggregates exist"
            aggregates.append(found)
        return Outcome(
            aggregates=tuple(aggregates),
            ids=record.result["ids"],
            replayed=True,
            position=self._position(aggregates),
        )

    def _position(self, aggregates: list[Any]) -> int:
        """Where the aggregates' current versions stand in the log (for no-ops and replays)."""
        return select_position(self.ledger_recorder, [(a.id, a.version) for a in aggregates])


def _fingerprint(cmd: Any, expected_version: int | None) -> str:
    """A digest of what a request asks for, to tell a retry from a reuse of its id."""
    assert is_dataclass(cmd)
    assert not isinstance(cmd, type)
    body = {"command": type(cmd).__name__, "args": asdict(cmd), "expected": expected_version}
    canonical = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
