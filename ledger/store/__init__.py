"""Where the ledger keeps its events, one module per concern:

- `settings`: the `POSLEDGER_*` environment, read and checked once;
- `database`: the URL (or the embedded database), the library's environment, connection
  bounds, the schema lock;
- `pool`: the bounded pool behind the store gate, renewed after an outage;
- `recorder`: our recorder (processed commands, event metadata, group commit) and the
  reads of the events table the library has no call for.

The names others use are imported from here, so callers need not know which module holds
them.
"""

from ledger.store.database import (
    bounded_url,
    connection_bounds,
    database_url,
    embedded_database_url,
    eventsourcing_env,
    schema_lock,
    wait_for_notify,
)
from ledger.store.pool import LedgerPool, StoreGate, StoreUnavailable, bound_pool, renew_pool
from ledger.store.recorder import (
    COMMANDS_TABLE,
    METADATA_TABLE,
    LedgerRecorder,
    is_duplicate_command,
    select_position,
)
from ledger.store.settings import IPNetwork, Settings, SettingsError

__all__ = [
    "COMMANDS_TABLE",
    "METADATA_TABLE",
    "IPNetwork",
    "LedgerPool",
    "LedgerRecorder",
    "Settings",
    "SettingsError",
    "StoreGate",
    "StoreUnavailable",
    "bound_pool",
    "bounded_url",
    "connection_bounds",
    "database_url",
    "embedded_database_url",
    "eventsourcing_env",
    "is_duplicate_command",
    "renew_pool",
    "schema_lock",
    "select_position",
    "wait_for_notify",
]
