"""Where deliveries may go (no SSRF), how retries are spaced, and the signing recipe."""

from __future__ import annotations

import ipaddress
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ledger.deliveries import signing, targets
from ledger.deliveries.sender import Sender, _retry_after
from ledger.deliveries.store import FAILED, PENDING, Delivery
from ledger.store import Settings, SettingsError


def resolver(*addresses: str) -> targets.Resolver:
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("https://shop.example/cb", ["10.1.2.3"]),
        ("https://shop.example/cb", ["192.168.0.10"]),
        ("https://shop.example/cb", ["172.16.5.5"]),
        ("https://metadata.example/cb", ["169.254.169.254"]),  # cloud metadata
        ("https://shop.example/cb", ["127.0.0.1"]),
        ("https://shop.example/cb", ["::1"]),
        ("https://shop.example/cb", ["fe80::1"]),
        ("https://shop.example/cb", ["fd00::5"]),
        ("https://shop.example/cb", ["::ffff:10.0.0.1"]),  # IPv4 inside IPv6
        ("https://shop.example/cb", ["0.0.0.0"]),
        ("https://shop.example/cb", ["100.64.0.1"]),  # carrier-grade NAT
        ("https://shop.example/cb", ["93.184.216.34", "10.0.0.1"]),  # one bad answer is enough
        ("http://shop.example/cb", ["93.184.216.34"]),  # plain http off loopback
        ("https://user:pw@shop.example/cb", ["93.184.216.34"]),
        ("ftp://shop.example/cb", ["93.184.216.34"]),
    ],
)
def test_internal_addresses_plain_http_and_credentials_are_refused(
    url: str, addresses: list[str]
) -> None:
    with pytest.raises(targets.Refused):
        targets.check(url, (), resolver(*addresses))


def test_a_public_https_target_is_delivered_to_at_the_address_that_was_checked() -> None:
    target = targets.check("https://shop.example:8443/cb?x=1", (), resolver("93.184.216.34"))
    assert target.address == ipaddress.ip_address("93.184.216.34")
    assert (target.host, target.port, target.scheme) == ("shop.example", 8443, "https")


def test_allowed_networks_open_only_themselves_and_http_only_on_loopback() -> None:
    allowed = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.9.0.0/16"))
    assert targets.check("http://127.0.0.1:9/cb", allowed, resolver("127.0.0.1")).port == 9
    assert targets.check("https://erp.internal/cb", allowed, resolver("10.9.1.1")).port == 443
    with pytest.raises(targets.Refused):
        targets.check("https://erp.internal/cb", allowed, resolver("10.8.1.1"))
    with pytest.raises(targets.Refused):
        targets.check("http://erp.internal/cb", allowed, resolver("10.9.1.1"))


def test_a_name_that_does_not_resolve_is_retried_not_refused() -> None:
    with pytest.raises(targets.Unresolved):
        targets.check("https://nowhere.invalid/cb", (), targets.resolve)


def delivery(attempts: int, age: float) -> Delivery:
    return Delivery(
        delivery_id=uuid.uuid4(),
        merchant_id="m",
        kind="payment.resolved",
        url="https://shop.example/cb",
        app_id="a",
        subscription_id=None,
        body="{}",
        attempts=attempts,
        retry_from=datetime.now(UTC) - timedelta(seconds=age),
        lease_token=uuid.uuid4(),
    )


def test_backoff_doubles_with_jitter_up_to_the_cap_and_gives_up_after_the_window() -> None:
    settings = Settings(delivery_backoff_first_seconds=5, delivery_backoff_max_seconds=3600)
    sender = Sender(settings, rng=random.Random(1))
    try:
        for attempts in range(12):
            status, delay = sender._next(delivery(attempts, 60), None)
            ceiling = min(5 * 2**attempts, 3600)
            assert status == PENDING
            assert ceiling / 2 <= delay <= ceiling
        # An attempt made 24 h after the delivery failed: the last one.
        assert sender._next(delivery(30, 24 * 3600 + 1), None) == (FAILED, 0.0)
        # Just inside the window another attempt is due, even if it lands past the window.
        assert sender._next(delivery(30, 24 * 3600 - 1), None)[0] == PENDING
        # A receiver's longer Retry-After wins over the backoff.
        assert sender._next(delivery(0, 1), 120.0)[1] == 120.0
    finally:
        sender.close()


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _retry_after("30") == 30.0
    later = (datetime.now(UTC) + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = _retry_after(later)
    assert seconds is not None
    assert 80 <= seconds <= 91
    assert _retry_after("soon") is None
    assert _retry_after(None) is None


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"kind":"payment.resolved"}'
    expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signing.signature("whsec_k", 1_700_000_000, body) == "v1=" + expected
    header = "v1=" + expected
    assert signing.verify("whsec_k", 1_700_000_000, body, header, now=1_700_000_100)
    assert not signing.verify("whsec_k", 1_700_000_000, body + b" ", header, now=1_700_000_100)
    assert not signing.verify("whsec_k", 1_700_000_000, body, header, now=1_700_001_000)  # stale


def test_delivery_settings_are_checked() -> None:
    settings = Settings.from_env({"POSLEDGER_DELIVERY_ALLOWED_NETWORKS": "127.0.0.0/8, 10.0.0.0/8"})
    assert settings.delivery_allowed_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {
                "POSLEDGER_DELIVERY_ALLOWED_NETWORKS": "10.0.0.1/8x",
                "POSLEDGER_DELIVERY_TIMEOUT": "0",
                "POSLEDGER_DELIVERY_BACKOFF_FIRST": "100",
                "POSLEDGER_DELIVERY_BACKOFF_MAX": "10",
            }
        )
    problems = "\n".join(raised.value.problems)
    with pytest.raises(SettingsError) as nats:
        Settings.from_env({"POSLEDGER_NATS_URL": "http://x", "POSLEDGER_NATS_STREAM": "a.b"})
    assert len(nats.value.problems) == 2
    assert Settings.from_env({"POSLEDGER_NATS_URL": "nats://127.0.0.1:4222"}).nats_url
    assert "POSLEDGER_DELIVERY_ALLOWED_NETWORKS" in problems
    assert "POSLEDGER_DELIVERY_TIMEOUT" in problems
    assert "must not exceed" in problems
