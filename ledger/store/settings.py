"""Settings: the `POSLEDGER_*` environment, read and checked once (`Settings.from_env`)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ledger.limits import Limits

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "posledger"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NATS_STREAM = re.compile(r"[A-Za-z0-9_-]{1,64}")
NATS_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,3}")
# A schema name we can use unquoted everywhere, short enough that the view generations
# beside it (`<schema>__<view>_<generation>`) stay within PostgreSQL's 63 characters.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")


class SettingsError(Exception):
    """Bad settings, one line per bad value (`posledger` prints them and exits 2)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class _Number:
    """How one numeric setting is read: its variable, bounds and whether it is whole."""

    variable: str
    minimum: float
    maximum: float
    whole: bool = False
    unit: str = ""

    def parse(self, raw: str, problems: list[str]) -> float | None:
        kind = "a whole number" if self.whole else "a number"
        bounds = f"{self.minimum:g} to {self.maximum:g}{self.unit}"
        try:
            value = int(raw) if self.whole else float(raw)
        except ValueError:
            value = None
        if value is None or not self.minimum <= value <= self.maximum:
            problems.append(f"{self.variable}={raw!r}: must be {kind} from {bounds}")
            return None
        return value


# Field of `Settings` → how its environment variable is read.
_NUMBERS = {
    "pool_size": _Number("POSLEDGER_DB_POOL_SIZE", 1, 1000, whole=True),
    # The library sets it as whole seconds, and 0 would mean "wait for ever".
    "lock_timeout_seconds": _Number("POSLEDGER_DB_LOCK_TIMEOUT", 1, 600, whole=True, unit=" s"),
    "connect_timeout_seconds": _Number("POSLEDGER_DB_CONNECT_TIMEOUT", 2, 600, True, " s"),
    "pool_timeout_seconds": _Number("POSLEDGER_DB_POOL_TIMEOUT", 0.05, 600, unit=" s"),
    "statement_timeout_seconds": _Number("POSLEDGER_DB_STATEMENT_TIMEOUT", 0.1, 3600, unit=" s"),
    "idle_in_transaction_timeout_seconds": _Number(
        "POSLEDGER_DB_IDLE_IN_TRANSACTION_TIMEOUT", 1, 3600, whole=True, unit=" s"
    ),
    # Deliveries (ledger/deliveries): callbacks and webhooks.
    "delivery_timeout_seconds": _Number("POSLEDGER_DELIVERY_TIMEOUT", 0.1, 60, unit=" s"),
    "delivery_retry_for_seconds": _Number("POSLEDGER_DELIVERY_RETRY_FOR", 1, 30 * 86400, unit=" s"),
    "delivery_backoff_first_seconds": _Number(
        "POSLEDGER_DELIVERY_BACKOFF_FIRST", 0.01, 3600, unit=" s"
    ),
    "delivery_backoff_max_seconds": _Number(
        "POSLEDGER_DELIVERY_BACKOFF_MAX", 0.01, 86400, unit=" s"
    ),
    "delivery_concurrency": _Number("POSLEDGER_DELIVERY_CONCURRENCY", 1, 256, whole=True),
    # Payment deadlines (RequestPayment.expires_after).
    "payment_expires_after_seconds": _Number(
        "POSLEDGER_PAYMENT_EXPIRES_AFTER", 1, 30 * 86400, unit=" s"
    ),
    "payment_max_expires_after_seconds": _Number(
        "POSLEDGER_PAYMENT_MAX_EXPIRES_AFTER", 1, 30 * 86400, unit=" s"
    ),
}
# Field of `Limits` → its variable. Each capped call holds a thread: the server's pool is
# the sum of the server-wide caps plus its unary workers, so the caps bound its threads.
_LIMITS = {
    "streams": _Number("POSLEDGER_MAX_STREAMS", 1, 10000, whole=True),
    "streams_per_merchant": _Number("POSLEDGER_MAX_STREAMS_PER_MERCHANT", 1, 10000, True),
    "imports": _Number("POSLEDGER_MAX_IMPORTS", 1, 1000, whole=True),
    "imports_per_merchant": _Number("POSLEDGER_MAX_IMPORTS_PER_MERCHANT", 1, 1000, True),
    "waits": _Number("POSLEDGER_MAX_WAITS", 1, 1000, whole=True),
    "waits_per_merchant": _Number("POSLEDGER_MAX_WAITS_PER_MERCHANT", 1, 1000, True),
    "import_idle_seconds": _Number("POSLEDGER_IMPORT_IDLE_TIMEOUT", 1, 3600, unit=" s"),
}


@dataclass(frozen=True)
class Settings:
    """Database settings and the server's limits, read and checked from the environment by
    `Settings.from_env()`."""

    database_url: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    schema: str = "public"
    pool_size: int = 10
    lock_timeout_seconds: int = 5
    # libpq's connect timeout (it counts whole seconds, at least 2).
    connect_timeout_seconds: int = 2
    # How long a call waits for a pooled connection before the store counts as unavailable.
    pool_timeout_seconds: float = 1.0
    # Any one statement on a pooled connection (reads, table creation, views).
    statement_timeout_seconds: float = 15.0
    # A session left idle inside a transaction is ended by the server after this long.
    idle_in_transaction_timeout_seconds: int = 5
    # One delivery attempt: connect, send, and read the (capped) response.
    delivery_timeout_seconds: float = 10.0
    # A delivery is retried until an attempt at least this long after it was made fails.
    delivery_retry_for_seconds: float = 24 * 3600.0
    # Backoff between attempts: doubling from the first, capped, with jitter.
    delivery_backoff_first_seconds: float = 5.0
    delivery_backoff_max_seconds: float = 3600.0
    delivery_concurrency: int = 8
    # A payment's deadline when its request gives none, and the longest a request may give.
    payment_expires_after_seconds: float = 15 * 60.0
    payment_max_expires_after_seconds: float = 24 * 3600.0
    # Networks deliveries may reach although private, loopback or link-local (none by default:
    # a callback URL must not become a way into the operator's own network).
    delivery_allowed_networks: tuple[IPNetwork, ...] = ()
    # The relay of changes to NATS JetStream: off unless a URL is given.
    nats_url: str = ""
    nats_stream: str = "POSLEDGER"
    nats_subject_prefix: str = "posledger"
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings in `environ`; raises SettingsError naming every bad value."""
        problems: list[str] = []
        values: dict[str, Any] = {}
        url = environ.get("POSLEDGER_DATABASE_URL") or None
        if url is not None:
            try:
                conninfo_to_dict(url)
            except psycopg.ProgrammingError as e:
                problems.append(f"POSLEDGER_DATABASE_URL: not a PostgreSQL URL ({e})")
        schema = environ.get("POSLEDGER_DB_SCHEMA") or "public"
        if not SCHEMA_NAME.fullmatch(schema):
            problems.append(
                f"POSLEDGER_DB_SCHEMA={schema!r}: must be 1 to 40 lower-case letters, digits "
                "or underscores, not starting with a digit"
            )
        for name, number in _NUMBERS.items():
            raw = environ.get(number.variable, "").strip()
            if raw:
                values[name] = number.parse(raw, problems)
        networks = environ.get("POSLEDGER_DELIVERY_ALLOWED_NETWORKS", "").strip()
        if networks:
            values["delivery_allowed_networks"] = _networks(networks, problems)
        nats_url = environ.get("POSLEDGER_NATS_URL", "").strip()
        if nats_url:
            if not nats_url.startswith(("nats://", "tls://")):
                problems.append(f"POSLEDGER_NATS_URL={nats_url!r}: must start nats:// or tls://")
            values["nats_url"] = nats_url
        for name, variable, pattern in (
            ("nats_stream", "POSLEDGER_NATS_STREAM", NATS_STREAM),
            ("nats_subject_prefix", "POSLEDGER_NATS_SUBJECT_PREFIX", NATS_PREFIX),
        ):
            raw = environ.get(variable, "").strip()
            if raw:
                if not pattern.fullmatch(raw):
                    problems.append(f"{variable}={raw!r}: letters, digits, '_' or '-' only")
                values[name] = raw
        first = values.get("delivery_backoff_first_seconds") or cls.delivery_backoff_first_seconds
        most = values.get("delivery_backoff_max_seconds") or cls.delivery_backoff_max_seconds
        if first > most:
            problems.append(
                "POSLEDGER_DELIVERY_BACKOFF_FIRST must not exceed POSLEDGER_DELIVERY_BACKOFF_MAX"
            )
        default = values.get("payment_expires_after_seconds") or cls.payment_expires_after_seconds
        longest = (
            values.get("payment_max_expires_after_seconds") or cls.payment_max_expires_after_seconds
        )
        if default > longest:
            problems.append(
                "POSLEDGER_PAYMENT_EXPIRES_AFTER must not exceed "
                "POSLEDGER_PAYMENT_MAX_EXPIRES_AFTER"
            )
        limits: dict[str, Any] = {}
        for name, number in _LIMITS.items():
            raw = environ.get(number.variable, "").strip()
            if raw:
                limits[name] = number.parse(raw, problems)
        _check_caps(Limits(**{k: v for k, v in limits.items() if v is not None}), problems)
        if problems:
            raise SettingsError(problems)
        return cls(
            database_url=url,
            data_dir=Path(environ.get("POSLEDGER_DATA_DIR") or DEFAULT_DATA_DIR),
            schema=schema,
            limits=Limits(**limits),
            **values,
        )


def _networks(raw: str, problems: list[str]) -> tuple[IPNetwork, ...]:
    result = []
    for part in raw.split(","):
        try:
            result.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            problems.append(
                f"POSLEDGER_DELIVERY_ALLOWED_NETWORKS: {part.strip()!r} is not a network "
                "(write e.g. 127.0.0.0/8 or 10.1.2.3/32, comma-separated)"
            )
    return tuple(result)


def _check_caps(limits: Limits, problems: list[str]) -> None:
    """A cap per merchant above the server's would never apply: say so."""
    for kind in ("streams", "imports", "waits"):
        per_merchant = getattr(limits, f"{kind}_per_merchant")
        total = getattr(limits, kind)
        if per_merchant > total:
            problems.append(
                f"{_LIMITS[kind + '_per_merchant'].variable}={per_merchant}: must not exceed "
                f"{_LIMITS[kind].variable} ({total})"
            )
