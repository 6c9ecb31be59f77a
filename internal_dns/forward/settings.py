"""The forwarder's settings (`forward:`, `cache:`) and how an upstream is written (`upstreams:`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    enabled: bool = True
    timeout: float = 1.5  # one upstream attempt
    deadline: float = 4.0  # the whole question: SERVFAIL by then (glibc waits 5 s per try)
    max_in_flight: int = 1024  # distinct upstream queries; beyond it SERVFAIL at once
    fail_threshold: int = 3  # failed health checks in a row that mark an upstream down
    probe_interval: float = 2.0  # how often an upstream whose health check failed is probed again
    resolv_conf: Path = Path("/etc/resolv.conf")  # upstreams when `upstreams:` is not set


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = True
    max_entries: int = 10000
    max_bytes: int = 16 * 1024 * 1024
    max_ttl: int = 86400
    serve_stale: bool = True  # RFC 8767, while every upstream fails
    stale_ttl: int = 30
    max_stale: float = 86400.0  # how long past expiry an answer may still be served stale


def parse_hostport(text: str, default_port: int = 53) -> tuple[str, int]:
    """`address`, `address:port`, `[v6]:port` or a bare IPv6 address → (address, port); an IPv6
    link-local address keeps its zone index (`fe80::1%eth0`), without which it cannot be reached.

    The host must be an IP address: an upstream given by name would need a resolver to find it.
    Raises ValueError with the reason.
    """
    text = text.strip()
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected [address]:port, not {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)  # an IPv6 zone index (`fe80::1%eth0`) is kept: it is part of the address
    except ValueError:
        raise ValueError(f"not an IP address (host or host:port, the host an address): {text!r}") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be from 1 to 65535, not {port!r}")
    return str(address), int(port)
