"""Where a delivery may go: https (http only to loopback), and never into a private network.

A callback URL is the caller's to choose, so a careless check would let any API key make
the server POST into the operator's own network (SSRF). The host is therefore resolved
here, every address it resolves to is checked, and the sender connects to the checked
address itself (the name is kept for the Host header and TLS), so a name that resolves
differently a moment later (DNS rebinding) cannot slip past.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ledger.store import IPNetwork

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class Refused(Exception):
    """The target is not allowed: delivering to it is never tried (no retry)."""


class Unresolved(Exception):
    """The name did not resolve now; it may later (the delivery is retried)."""


@dataclass(frozen=True)
class Target:
    url: str  # as given
    scheme: str
    host: str  # the name, for the Host header and TLS
    port: int
    address: Address  # the checked address the sender connects to


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise Unresolved(f"{host} does not resolve ({e.strerror})") from None
    return [str(info[4][0]) for info in infos]


def check(url: str, allowed: Sequence[IPNetwork] = (), resolver: Resolver = resolve) -> Target:
    """The address to deliver `url` to; raises Refused or Unresolved."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        raise Refused("not a valid URL") from None
    if not host or parts.scheme not in ("http", "https"):
        raise Refused("only http(s) URLs with a host are delivered to")
    if parts.username or parts.password:
        raise Refused("URLs with credentials are not delivered to")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    if not addresses:
        raise Unresolved(f"{host} has no address")
    for address in addresses:
        if parts.scheme == "http" and not address.is_loopback:
            raise Refused("http is delivered to only on loopback; use https")
        if _internal(address) and not any(address in net for net in allowed):
            raise Refused(
                f"{host} resolves to {address}, a private, loopback or link-local address "
                "(allow it with POSLEDGER_DELIVERY_ALLOWED_NETWORKS)"
            )
    return Target(url=url, scheme=parts.scheme, host=host, port=port, address=addresses[0])


def _internal(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _internal(address.ipv4_mapped)
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )
