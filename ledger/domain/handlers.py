"""Applying an event to its aggregate through the aggregate's `when` handlers.

Each aggregate declares `when` as a `functools.singledispatchmethod`, one handler per event
type. Calling `aggregate.when(event)` builds a new bound method on every call (that is how
`singledispatchmethod.__get__` works), which showed in profiles of replays and commands;
this looks the handler up in the dispatcher's cache instead.
"""

from __future__ import annotations

from typing import Any


def apply_when(aggregate: Any, event: Any) -> None:
    """Calls `aggregate.when(event)`: the handler registered for the event's type."""
    dispatcher = type(aggregate).__dict__["when"].dispatcher
    dispatcher.dispatch(type(event))(aggregate, event)
