"""Settings are checked at start: every bad value is named on a line of its own."""

from __future__ import annotations

import pytest

from ledger.store import Settings, SettingsError


def problems(**environ: str) -> list[str]:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(environ)
    return info.value.problems


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.pool_timeout_seconds <= 2
    assert settings.connect_timeout_seconds <= 2


def test_good_values_are_read() -> None:
    settings = Settings.from_env(
        {
            "POSLEDGER_DATABASE_URL": "postgresql://u@db:5433/ledger",
            "POSLEDGER_DB_SCHEMA": "shop_1",
            "POSLEDGER_DB_POOL_SIZE": "20",
            "POSLEDGER_DB_LOCK_TIMEOUT": "3",
            "POSLEDGER_DB_POOL_TIMEOUT": "0.5",
            "POSLEDGER_DB_STATEMENT_TIMEOUT": "30",
            "POSLEDGER_DB_CONNECT_TIMEOUT": "4",
            "POSLEDGER_DB_IDLE_IN_TRANSACTION_TIMEOUT": "10",
        }
    )

    assert settings.schema == "shop_1"
    assert settings.pool_size == 20
    assert settings.lock_timeout_seconds == 3
    assert settings.pool_timeout_seconds == 0.5
    assert settings.statement_timeout_seconds == 30
    assert settings.connect_timeout_seconds == 4
    assert settings.idle_in_transaction_timeout_seconds == 10


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POSLEDGER_DB_LOCK_TIMEOUT", "-1"),
        ("POSLEDGER_DB_LOCK_TIMEOUT", "0"),
        ("POSLEDGER_DB_LOCK_TIMEOUT", "0.5"),
        ("POSLEDGER_DB_POOL_SIZE", "abc"),
        ("POSLEDGER_DB_POOL_SIZE", "0"),
        ("POSLEDGER_DB_POOL_TIMEOUT", "nan"),
        ("POSLEDGER_DB_STATEMENT_TIMEOUT", "-3"),
        ("POSLEDGER_DB_CONNECT_TIMEOUT", "1"),
        ("POSLEDGER_DB_IDLE_IN_TRANSACTION_TIMEOUT", "forever"),
        ("POSLEDGER_DB_SCHEMA", "my-schema"),
        ("POSLEDGER_DB_SCHEMA", "Upper"),
        ("POSLEDGER_DB_SCHEMA", "x" * 41),
        ("POSLEDGER_DATABASE_URL", "postgresql://h/db?nosuchparameter=1"),
    ],
)
def test_a_bad_value_is_named_with_what_it_must_be(variable: str, value: str) -> None:
    [problem] = problems(**{variable: value})

    assert problem.startswith(variable)
    assert "must" in problem or "not a PostgreSQL URL" in problem


def test_every_bad_value_is_reported_at_once() -> None:
    found = problems(
        POSLEDGER_DB_LOCK_TIMEOUT="-1",
        POSLEDGER_DB_POOL_SIZE="abc",
        POSLEDGER_DB_SCHEMA="a-b",
    )

    assert [p.split("=")[0] for p in found] == [
        "POSLEDGER_DB_SCHEMA",
        "POSLEDGER_DB_POOL_SIZE",
        "POSLEDGER_DB_LOCK_TIMEOUT",
    ]


def test_caps_are_read_and_size_the_long_lived_calls() -> None:
    limits = Settings.from_env(
        {
            "POSLEDGER_MAX_STREAMS": "600",
            "POSLEDGER_MAX_STREAMS_PER_MERCHANT": "500",
            "POSLEDGER_MAX_IMPORTS": "64",
            "POSLEDGER_MAX_IMPORTS_PER_MERCHANT": "8",
            "POSLEDGER_MAX_WAITS": "70",
            "POSLEDGER_MAX_WAITS_PER_MERCHANT": "64",
            "POSLEDGER_IMPORT_IDLE_TIMEOUT": "2.5",
        }
    ).limits

    assert (limits.streams, limits.streams_per_merchant) == (600, 500)
    assert (limits.imports, limits.imports_per_merchant) == (64, 8)
    assert (limits.waits, limits.waits_per_merchant) == (70, 64)
    assert limits.import_idle_seconds == 2.5
    assert limits.long_lived == 600 + 64 + 70


def test_default_caps_let_500_feeds_of_one_merchant_open() -> None:
    limits = Settings().limits

    assert limits.streams_per_merchant >= 500
    assert limits.imports_per_merchant >= 64
    assert limits.waits_per_merchant >= 64


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POSLEDGER_MAX_STREAMS", "0"),
        ("POSLEDGER_MAX_STREAMS", "many"),
        ("POSLEDGER_MAX_IMPORTS_PER_MERCHANT", "1.5"),
        ("POSLEDGER_MAX_WAITS", "100000"),
        ("POSLEDGER_IMPORT_IDLE_TIMEOUT", "0"),
    ],
)
def test_a_bad_cap_is_named(variable: str, value: str) -> None:
    [problem] = problems(**{variable: value})

    assert problem.startswith(f"{variable}={value!r}: must be")


def test_a_cap_per_merchant_above_the_servers_is_refused() -> None:
    [problem] = problems(POSLEDGER_MAX_WAITS="10", POSLEDGER_MAX_WAITS_PER_MERCHANT="20")

    assert problem == (
        "POSLEDGER_MAX_WAITS_PER_MERCHANT=20: must not exceed POSLEDGER_MAX_WAITS (10)"
    )


def test_payment_deadlines_are_read() -> None:
    assert (
        Settings().payment_expires_after_seconds,
        Settings().payment_max_expires_after_seconds,
    ) == (
        900,
        86400,
    )
    settings = Settings.from_env(
        {"POSLEDGER_PAYMENT_EXPIRES_AFTER": "120", "POSLEDGER_PAYMENT_MAX_EXPIRES_AFTER": "3600"}
    )
    assert (settings.payment_expires_after_seconds, settings.payment_max_expires_after_seconds) == (
        120,
        3600,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POSLEDGER_PAYMENT_EXPIRES_AFTER", "0"),
        ("POSLEDGER_PAYMENT_EXPIRES_AFTER", "15m"),
        ("POSLEDGER_PAYMENT_MAX_EXPIRES_AFTER", "-1"),
    ],
)
def test_a_bad_payment_deadline_is_named(variable: str, value: str) -> None:
    (problem,) = problems(**{variable: value})
    assert problem.startswith(f"{variable}={value!r}: must be a number from 1 to")


def test_a_default_deadline_above_the_maximum_is_refused() -> None:
    (problem,) = problems(
        POSLEDGER_PAYMENT_EXPIRES_AFTER="7200", POSLEDGER_PAYMENT_MAX_EXPIRES_AFTER="3600"
    )
    assert "POSLEDGER_PAYMENT_EXPIRES_AFTER must not exceed" in problem
