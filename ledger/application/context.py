"""What a command is given (who asks, the request's envelope) and what it gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.group_commit import EventMetadata


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
