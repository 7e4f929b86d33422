"""Sending deliveries: one signed POST per attempt, and what the answer means for the next.

2xx delivers. 410 Gone ends the delivery (and a webhook subscription with it). Anything
else, a timeout or a lost connection is retried with exponential backoff and jitter (or
after the receiver's Retry-After, if longer) until an attempt made `retry_for` after the
delivery was created fails too. Redirects are not followed (a 3xx is a failed attempt):
a redirect could lead anywhere, past the address checks.
"""

from __future__ import annotations

import random
import ssl
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from ledger.deliveries import signing, targets
from ledger.deliveries.store import (
    DELIVERED,
    FAILED,
    GONE,
    PENDING,
    REFUSED,
    RESPONSE_EXCERPT,
    Delivery,
    Outcome,
)
from ledger.store import Settings

USER_AGENT = "posledger-deliveries/1"


class Sender:
    def __init__(
        self,
        settings: Settings,
        resolver: targets.Resolver = targets.resolve,
        rng: random.Random | None = None,
        verify: ssl.SSLContext | bool = True,  # the system's CAs; a context with others
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self.client = httpx.Client(
            timeout=settings.delivery_timeout_seconds,
            follow_redirects=False,
            trust_env=False,  # no proxies from the environment: we check where we connect
            verify=verify,
            # No kept connections: one to an address, authenticated as one name, must not
            # carry a delivery for another name that resolves to the same address.
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        self.client.close()

    def send(self, delivery: Delivery, secret: str | None) -> Outcome:
        started = time.monotonic()

        def outcome(status: str, code: int | None, error: str, response: str = "") -> Outcome:
            retry_in = 0.0
            if status == PENDING:
                status, retry_in = self._next(delivery, response_retry_after)
            elapsed = int((time.monotonic() - started) * 1000)
            return Outcome(status, code, error, response, elapsed, retry_in)

        response_retry_after: float | None = None
        if secret is None:
            return outcome(PENDING, None, "no signing secret for this app yet")
        try:
            target = targets.check(
                delivery.url, self.settings.delivery_allowed_networks, self.resolver
            )
        except targets.Refused as e:
            return outcome(REFUSED, None, str(e))
        except targets.Unresolved as e:
            return outcome(PENDING, None, str(e))
        body = delivery.body.encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Host": _host_header(target),
            signing.SIGNATURE_HEADER: signing.signature(secret, timestamp, body),
            signing.TIMESTAMP_HEADER: str(timestamp),
            signing.DELIVERY_ID_HEADER: str(delivery.delivery_id),
            signing.KIND_HEADER: delivery.kind,
        }
        # Connect to the address that was checked, not to whatever the name resolves to next.
        url = httpx.URL(delivery.url).copy_with(host=str(target.address))
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            with self.client.stream(
                "POST", url, content=body, headers=headers, extensions=extensions
            ) as response:
                excerpt = _excerpt(response)
                code = response.status_code
                response_retry_after = _retry_after(response.headers.get("Retry-After"))
        except httpx.TimeoutException:
            return outcome(PENDING, None, "timed out")
        except httpx.HTTPError as e:
            return outcome(PENDING, None, f"{type(e).__name__}: {e}")
        if 200 <= code < 300:
            return outcome(DELIVERED, code, "", excerpt)
        if code == 410:
            return outcome(GONE, code, "the receiver answered 410 Gone", excerpt)
        return outcome(PENDING, code, f"answered {code}", excerpt)

    def _next(self, delivery: Delivery, retry_after: float | None) -> tuple[str, float]:
        """Retry (and in how long), or give up once the retry window is over."""
        age = (datetime.now(UTC) - delivery.retry_from).total_seconds()
        if age >= self.settings.delivery_retry_for_seconds:
            return FAILED, 0.0
        s = self.settings
        ceiling = min(
            s.delivery_backoff_first_seconds * 2**delivery.attempts, s.delivery_backoff_max_seconds
        )
        delay = self.rng.uniform(ceiling / 2, ceiling)  # jitter: retries of many spread out
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.delivery_retry_for_seconds))
        return PENDING, delay


def _host_header(target: targets.Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _excerpt(response: httpx.Response) -> str:
    """The start of the answer only: bodies are not kept, nor read past a few KiB."""
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= 4 * RESPONSE_EXCERPT:
            break
    return data.decode("utf-8", "replace")[:RESPONSE_EXCERPT]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
