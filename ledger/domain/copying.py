"""Cheap deep copies of aggregates.

Commands take a copy of the cached aggregate they change (a failed command must leave the
cache untouched), so copying is on the hot path. `copy.deepcopy` copies every attribute,
even the immutable ones; this copies only the containers. Value objects that cannot change
(frozen line items, refunds) return themselves from their own `__deepcopy__`.
"""

from __future__ import annotations

import copy
from datetime import date, datetime
from enum import Enum
from typing import Any
from uuid import UUID

_IMMUTABLE = (str, int, float, bool, bytes, type(None), UUID, datetime, date, Enum)


class CheapCopy:
    """Mixin: `copy.deepcopy` shares immutable attributes and deep-copies the rest."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(
            {
                name: value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value, memo)
                for name, value in self.__dict__.items()
            }
        )
        return clone
