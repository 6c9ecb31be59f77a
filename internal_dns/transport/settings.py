"""The transports' settings: each listener (`listen:`), TCP's limits (`tcp:`) and UDP's per-source
rate limits (`rate_limit:`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ListenConfig:
    address: str
    port: int
    network: str | None = None  # the view of queries no prefix or `views:` entry claims
    region: str | None = None

    @property
    def wildcard(self) -> bool:
        """`::` or `0.0.0.0`: every address of the host, each query answered from the one it asked."""
        return ipaddress.ip_address(self.address).is_unspecified


def unmapped(address: str) -> str:
    """An IPv4 peer of a dual-stack socket appears as ::ffff:a.b.c.d: the IPv4 address."""
    return address[7:] if address.startswith("::ffff:") and "." in address else address


@dataclass(frozen=True, slots=True)
class TcpConfig:
    idle_timeout: float = 10.0  # seconds without a whole query or a reply before a connection is closed
    max_connections: int = 256  # in all; past it the longest idle connection gives way to a new one
    max_per_source: int = 32  # connections from one address
    message_timeout: float = 3.0  # seconds a started query may take to arrive whole
    max_unsent: int = 65536  # bytes of replies a client has not read before reading from it stops
    max_pipelined: int = 100  # queries of one connection waiting on an upstream before reading stops


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    qps: float = 2000.0  # tokens a second per source; 0: no limit
    burst: float = 4000.0  # tokens a source may save up
    slip: int = 2  # every slip-th limited datagram gets a TC reply (1: all of them, 0: none)
    max_sources: int = 100_000  # sources remembered at once

    @property
    def enabled(self) -> bool:
        return self.qps > 0
